"""Evaluation metrics for encoder-decoder tasks.

Every public function here is pure: it takes decoded predictions and
references, and returns a plain ``dict`` of Python scalars (and, for
sacrebleu metrics, the metric signature strings). Nothing is cached between
calls.

References are always given *per example*: ``references[i]`` is a non-empty
sequence of acceptable target strings for ``predictions[i]``. A bare string is
rejected (rather than silently treated as a sequence of characters).

Families (see :data:`METRIC_FAMILIES` and :func:`compute`):

* ``"g2p"``   -- grapheme-to-phoneme: word error rate and phoneme error rate.
* ``"text"``  -- sacrebleu corpus BLEU and chrF with multiple references.
* ``"exact"`` -- exact-match accuracy, and symbol accuracy (partial credit per position).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import sacrebleu
from rapidfuzz.distance import Levenshtein

from encdec.errors import DataError

__all__ = [
    "METRIC_FAMILIES",
    "compute",
    "exact_match_metrics",
    "g2p_metrics",
    "perplexity",
    "symbol_accuracy",
    "text_metrics",
]


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _validate(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """Check inputs and return them as lists.

    Raises:
        ValueError: lengths differ, there are no examples, or an example has no
            references.
        TypeError: a prediction or reference is not a string, or an example's
            references are a bare string instead of a sequence of strings.
    """
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of strings, not a single string")
    if isinstance(references, str):
        raise TypeError("references must be a sequence of per-example reference lists, not a string")
    preds = list(predictions)
    refs_in = list(references)
    if len(preds) != len(refs_in):
        raise ValueError(
            f"predictions and references must have the same length; got "
            f"{len(preds)} predictions and {len(refs_in)} reference lists"
        )
    if not preds:
        raise DataError("cannot compute metrics on zero examples")
    refs: list[list[str]] = []
    for i, (pred, example_refs) in enumerate(zip(preds, refs_in)):
        if not isinstance(pred, str):
            raise TypeError(f"prediction {i} must be a str, got {type(pred).__name__}")
        if isinstance(example_refs, str):
            raise TypeError(
                f"references[{i}] is a str; pass a sequence of reference strings "
                f"per example, e.g. [{example_refs!r}]"
            )
        example_refs = list(example_refs)
        if not example_refs:
            raise DataError(f"example {i} has no references; every example needs at least one")
        for j, ref in enumerate(example_refs):
            if not isinstance(ref, str):
                raise TypeError(f"references[{i}][{j}] must be a str, got {type(ref).__name__}")
        refs.append(example_refs)
    return preds, refs


def _percent(numerator: float, denominator: float) -> float:
    """``100 * numerator / denominator`` as a Python float."""
    return 100.0 * float(numerator) / float(denominator)


# ---------------------------------------------------------------------------
# G2P
# ---------------------------------------------------------------------------


def _closest_reference(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[int, int]:
    """Return ``(edit_distance, reference_length)`` for the closest reference.

    Distance is token-level Levenshtein (unit cost insert/delete/substitute).
    Ties on distance are broken by the first reference in the given order.
    """
    best: tuple[int, int] | None = None
    for ref in refs:
        dist = Levenshtein.distance(hyp, ref)
        if best is None or dist < best[0]:
            best = (dist, len(ref))
    assert best is not None  # refs is non-empty after validation
    return best


def g2p_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float | int]:
    """Word and phoneme error rates for grapheme-to-phoneme conversion.

    Each prediction and reference is a pronunciation written as
    whitespace-separated phoneme tokens (e.g. ``"HH AH0 L OW1"``); runs of
    whitespace are insignificant. A word may have several valid reference
    pronunciations.

    Conventions (the usual G2P ones, as in g2p-seq2seq / Phonetisaurus
    evaluation):

    * **WER** -- percentage of words whose predicted phoneme sequence equals
      *none* of that word's references.
    * **PER** -- for each word pick the reference with the smallest
      token-level Levenshtein distance to the prediction (ties: the first such
      reference in the given order). PER is the sum of those distances
      divided by the sum of the *chosen* references' lengths, in percent.
      It is a corpus-level (micro-averaged) rate, not a mean of per-word
      rates, and can exceed 100 when predictions are much longer than the
      references.

    Args:
        predictions: one predicted pronunciation per word.
        references: per word, a non-empty sequence of reference pronunciations.

    Returns:
        ``{"wer", "per", "exact_match", "num_examples"}``; rates are in
        percent and ``exact_match == 100 - wer``.

    Raises:
        ValueError: mismatched lengths, no examples, a word without
            references, or an empty reference pronunciation.
        TypeError: non-string inputs.
    """
    preds, refs = _validate(predictions, references)
    word_errors = 0
    phoneme_errors = 0
    reference_phonemes = 0
    for i, (pred, example_refs) in enumerate(zip(preds, refs)):
        hyp = pred.split()
        ref_tokens = [r.split() for r in example_refs]
        if any(len(r) == 0 for r in ref_tokens):
            raise DataError(f"example {i} has an empty reference pronunciation")
        if hyp not in ref_tokens:
            word_errors += 1
        dist, ref_len = _closest_reference(hyp, ref_tokens)
        phoneme_errors += dist
        reference_phonemes += ref_len
    n = len(preds)
    wer = _percent(word_errors, n)
    return {
        "wer": wer,
        "per": _percent(phoneme_errors, reference_phonemes),
        "exact_match": 100.0 - wer,
        "num_examples": n,
    }


# ---------------------------------------------------------------------------
# Text (sacrebleu)
# ---------------------------------------------------------------------------


def _reference_streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Transpose per-example references into sacrebleu's per-stream layout.

    sacrebleu wants ``streams[k][i]`` = k-th reference of example ``i``.
    Examples with fewer references are padded with ``None``, which sacrebleu
    drops per segment (and reports as ``nrefs:var`` in the signature).
    Stream 0 is never padded because every example has a reference.
    """
    max_refs = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(max_refs)]


def text_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    tokenize: str | None = None,
) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacrebleu defaults) with multiple references.

    Args:
        predictions: detokenized system outputs, one per example.
        references: per example, a non-empty sequence of detokenized
            references; the number may vary between examples.
        tokenize: sacrebleu BLEU tokenizer (``"13a"``, ``"intl"``, ``"zh"``,
            ``"ja-mecab"``, ...). ``None`` uses sacrebleu's default (13a).

    Returns:
        ``{"bleu", "chrf", "bleu_signature", "chrf_signature",
        "num_examples"}``. Scores are on sacrebleu's 0-100 scale; the
        signatures are sacrebleu's reproducibility strings
        (e.g. ``"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"``).

    Raises:
        ValueError: mismatched lengths, no examples, or an example without
            references.
        TypeError: non-string inputs.
    """
    preds, refs = _validate(predictions, references)
    streams = _reference_streams(refs)
    bleu = sacrebleu.BLEU(tokenize=tokenize)
    chrf = sacrebleu.CHRF()
    bleu_score = bleu.corpus_score(preds, streams)
    chrf_score = chrf.corpus_score(preds, streams)
    return {
        "bleu": float(bleu_score.score),
        "chrf": float(chrf_score.score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "num_examples": len(preds),
    }


# ---------------------------------------------------------------------------
# Exact match
# ---------------------------------------------------------------------------


def symbol_accuracy(prediction: str, reference: str) -> float:
    """Share of positions where ``prediction`` has ``reference``'s symbol (character), over
    the longer of the two (1 for two empty strings): partial credit that shows where an output
    goes wrong, where exact match is all or nothing (e.g. on inputs longer than any seen in
    training)."""
    longest = max(len(prediction), len(reference))
    if longest == 0:
        return 1.0
    return sum(a == b for a, b in zip(prediction, reference)) / longest


def exact_match_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float | int]:
    """Percentage of predictions equal to at least one of their references, and the mean
    symbol accuracy (each prediction against its best reference), in percent.

    Comparison is exact string equality (no normalization, so case and
    whitespace matter).

    Returns:
        ``{"exact_match", "symbol_accuracy", "num_examples"}``, the first two in percent.

    Raises:
        ValueError: mismatched lengths, no examples, or an example without
            references.
        TypeError: non-string inputs.
    """
    preds, refs = _validate(predictions, references)
    hits = sum(pred in example_refs for pred, example_refs in zip(preds, refs))
    symbols = sum(max(symbol_accuracy(pred, r) for r in example_refs)
                  for pred, example_refs in zip(preds, refs))
    return {"exact_match": _percent(hits, len(preds)),
            "symbol_accuracy": _percent(symbols, len(preds)), "num_examples": len(preds)}


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


METRIC_FAMILIES: Mapping[str, Callable[..., dict[str, Any]]] = {
    "g2p": g2p_metrics,
    "text": text_metrics,
    "exact": exact_match_metrics,
}


def compute(
    family: str,
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    **kwargs: Any,
) -> dict[str, Any]:
    """Compute the metrics of ``family`` (a key of :data:`METRIC_FAMILIES`).

    Extra keyword arguments are forwarded to the family's function (e.g.
    ``tokenize=`` for ``"text"``).

    Raises:
        ValueError: unknown family (the message lists the valid ones), or any
            error raised by the family's function.
    """
    try:
        fn = METRIC_FAMILIES[family]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(METRIC_FAMILIES))
        raise ValueError(f"unknown metric family {family!r}; valid families: {valid}") from None
    return fn(predictions, references, **kwargs)


# ---------------------------------------------------------------------------
# Token-level helpers for training logs
# ---------------------------------------------------------------------------


def perplexity(loss: float) -> float:
    """``exp(loss)`` for a mean per-token cross-entropy in nats.

    Overflow-safe: returns ``inf`` instead of raising when ``loss`` is too
    large. NaN propagates. Accepts Python, NumPy or JAX scalars.
    """
    loss = float(loss)
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
