"""Tests for encdec.metrics against hand-computed values."""

import math

import numpy as np
import pytest
import sacrebleu

from encdec.errors import DataError
from encdec.metrics import (
    METRIC_FAMILIES,
    compute,
    exact_match_metrics,
    symbol_accuracy,
    g2p_metrics,
    perplexity,
    text_metrics,
)

# ---------------------------------------------------------------------------
# g2p
# ---------------------------------------------------------------------------


def test_g2p_single_deletion_per_is_one_third():
    out = g2p_metrics(["AH B"], [["AH B C"]])
    assert out["per"] == pytest.approx(100 / 3)
    assert out["wer"] == 100.0
    assert out["exact_match"] == 0.0
    assert out["num_examples"] == 1
    assert set(out) == {"wer", "per", "exact_match", "num_examples"}


def test_g2p_perfect():
    out = g2p_metrics(["HH AH0 L OW1", "W ER1 L D"], [["HH AH0 L OW1"], ["W ER1 L D"]])
    assert out == {"wer": 0.0, "per": 0.0, "exact_match": 100.0, "num_examples": 2}


def test_g2p_per_is_micro_averaged_over_corpus():
    # word 1: 1 error / 3 phonemes, word 2: 0 / 3 -> 1/6 overall (not mean of 1/3 and 0
    # weighted differently); 1 of 2 words wrong.
    out = g2p_metrics(["AH B", "K AE T"], [["AH B C"], ["K AE T"]])
    assert out["per"] == pytest.approx(100 / 6)
    assert out["wer"] == pytest.approx(50.0)
    assert out["exact_match"] == pytest.approx(50.0)


def test_g2p_per_uses_closest_reference_and_its_length():
    # distances: 2 to "K AA T AH" (sub + ins), 1 to "K AE T S" (ins) -> 1/4.
    out = g2p_metrics(["K AE T"], [["K AA T AH", "K AE T S"]])
    assert out["per"] == pytest.approx(25.0)
    # Closest ref is the short one: distance 1 over ITS length 2 -> 50%
    # (not 1/6 from the longer ref's length, nor 4/6 from the first ref).
    out = g2p_metrics(["A B"], [["A B C D E F", "A X"]])
    assert out["per"] == pytest.approx(50.0)


def test_g2p_per_tie_broken_by_first_reference():
    # Distance 1 to both; the first listed reference's length is the denominator.
    assert g2p_metrics(["A B"], [["A", "A B C"]])["per"] == pytest.approx(100.0)
    assert g2p_metrics(["A B"], [["A B C", "A"]])["per"] == pytest.approx(100 / 3)


def test_g2p_word_correct_if_matches_any_reference():
    out = g2p_metrics(
        ["T AH M EY T OW", "T AH M EY T OW"],
        [["T AH M AA T OW", "T AH M EY T OW"], ["T AH M AA T OW"]],
    )
    assert out["wer"] == pytest.approx(50.0)
    assert out["exact_match"] == pytest.approx(50.0)
    # 0 errors for word 1 (len 6) + 1 substitution for word 2 (len 6).
    assert out["per"] == pytest.approx(100 / 12)


def test_g2p_whitespace_insignificant():
    out = g2p_metrics(["  AH   B "], [["AH B"]])
    assert out["wer"] == 0.0 and out["per"] == 0.0


def test_g2p_per_can_exceed_100_and_empty_prediction():
    assert g2p_metrics(["A B C D"], [["A"]])["per"] == pytest.approx(300.0)
    out = g2p_metrics([""], [["A B"]])
    assert out["per"] == pytest.approx(100.0)
    assert out["wer"] == 100.0


def test_g2p_empty_reference_pronunciation_rejected():
    with pytest.raises(DataError, match="empty reference pronunciation"):
        g2p_metrics(["A"], [["A", "  "]])


def test_g2p_returns_python_scalars():
    out = g2p_metrics(["A"], [["A"]])
    assert type(out["wer"]) is float and type(out["per"]) is float
    assert type(out["num_examples"]) is int


# ---------------------------------------------------------------------------
# text (sacrebleu)
# ---------------------------------------------------------------------------


def test_text_identical_corpus_is_100():
    corpus = ["the cat sat on the mat .", "hello there , general kenobi"]
    out = text_metrics(corpus, [[s] for s in corpus])
    assert out["bleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    assert out["num_examples"] == 2
    assert isinstance(out["bleu_signature"], str) and isinstance(out["chrf_signature"], str)
    assert "nrefs:1" in out["bleu_signature"]
    assert "tok:13a" in out["bleu_signature"]
    assert f"version:{sacrebleu.__version__}" in out["bleu_signature"]
    assert "nc:6" in out["chrf_signature"] and "nw:0" in out["chrf_signature"]


def test_text_bleu_hand_computed():
    # Unigram..4-gram precisions 3/4, 2/3, 1/2, 0/1; sacrebleu's default 'exp'
    # smoothing turns the zero 4-gram precision into 1/(2*1). BP = 1.
    out = text_metrics(["a b c d"], [["a b c e"]])
    expected = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    assert out["bleu"] == pytest.approx(expected)


def test_text_chrf_disjoint_is_zero():
    out = text_metrics(["xyz"], [["abc"]])
    assert out["chrf"] == pytest.approx(0.0)
    assert out["bleu"] == pytest.approx(0.0)


def test_text_multi_reference_variable_count():
    preds = ["the cat sat on the mat", "hello there world friend"]
    refs = [["a dog barked", "the cat sat on the mat"], ["hello there world friend"]]
    out = text_metrics(preds, refs)
    # Every hypothesis matches one of its references exactly.
    assert out["bleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    assert "nrefs:var" in out["bleu_signature"]
    assert "nrefs:var" in out["chrf_signature"]


def test_text_multi_reference_matches_sacrebleu_streams():
    preds = ["the small cat sat", "a quick brown fox jumps", "one two three"]
    refs = [
        ["the cat sat", "a small cat sat down"],
        ["the quick brown fox jumped"],
        ["one two three four", "one 2 three", "uno dos tres"],
    ]
    streams = [
        ["the cat sat", "the quick brown fox jumped", "one two three four"],
        ["a small cat sat down", None, "one 2 three"],
        [None, None, "uno dos tres"],
    ]
    out = text_metrics(preds, refs)
    assert out["bleu"] == pytest.approx(sacrebleu.BLEU().corpus_score(preds, streams).score)
    assert out["chrf"] == pytest.approx(sacrebleu.CHRF().corpus_score(preds, streams).score)
    # Reference order within an example does not matter.
    shuffled = [list(reversed(r)) for r in refs]
    out2 = text_metrics(preds, shuffled)
    assert out2["bleu"] == pytest.approx(out["bleu"])
    assert out2["chrf"] == pytest.approx(out["chrf"])


def test_text_multi_reference_chrf_uses_best_reference():
    best = text_metrics(["the cat"], [["the cat sat"]])["chrf"]
    both = text_metrics(["the cat"], [["zzz qqq", "the cat sat"]])["chrf"]
    assert both == pytest.approx(best)
    assert 0.0 < both < 100.0


def test_text_tokenize_forwarded():
    out = text_metrics(["a b"], [["a b"]], tokenize="none")
    assert "tok:none" in out["bleu_signature"]


# ---------------------------------------------------------------------------
# exact match
# ---------------------------------------------------------------------------


def test_exact_match():
    out = exact_match_metrics(["a", "b", "c", "D"], [["a"], ["x", "b"], ["y"], ["d"]])
    assert out == {"exact_match": 50.0, "symbol_accuracy": 50.0, "num_examples": 4}


def test_symbol_accuracy_counts_symbols_in_place_over_the_longer_string():
    assert symbol_accuracy("abcd", "abxd") == 0.75
    assert symbol_accuracy("ab", "abcd") == symbol_accuracy("abcd", "ab") == 0.5
    assert symbol_accuracy("", "") == 1.0 and symbol_accuracy("", "a") == 0.0
    out = exact_match_metrics(["abcd", "ba"], [["abxd", "abcx"], ["ab"]])   # best reference
    assert out["symbol_accuracy"] == 37.5 and out["exact_match"] == 0.0


def test_exact_match_is_strict():
    assert exact_match_metrics(["a "], [["a"]])["exact_match"] == 0.0


# ---------------------------------------------------------------------------
# registry / compute
# ---------------------------------------------------------------------------


def test_compute_dispatches():
    assert compute("g2p", ["AH B"], [["AH B C"]]) == g2p_metrics(["AH B"], [["AH B C"]])
    assert compute("exact", ["a"], [["a"]])["exact_match"] == 100.0
    assert "tok:none" in compute("text", ["a b"], [["a b"]], tokenize="none")["bleu_signature"]


def test_compute_unknown_family_lists_valid():
    with pytest.raises(ValueError) as excinfo:
        compute("rouge", ["a"], [["a"]])
    msg = str(excinfo.value)
    assert "rouge" in msg
    for name in METRIC_FAMILIES:
        assert name in msg


# ---------------------------------------------------------------------------
# input validation (all families)
# ---------------------------------------------------------------------------

ALL_FNS = [g2p_metrics, text_metrics, exact_match_metrics]


@pytest.mark.parametrize("fn", ALL_FNS)
def test_mismatched_lengths(fn):
    with pytest.raises(ValueError, match="same length"):
        fn(["a", "b"], [["a"]])


@pytest.mark.parametrize("fn", ALL_FNS)
def test_example_without_references(fn):
    with pytest.raises(DataError, match="no references"):
        fn(["a", "b"], [["a"], []])


@pytest.mark.parametrize("fn", ALL_FNS)
def test_zero_examples(fn):
    with pytest.raises(DataError, match="zero examples"):
        fn([], [])


@pytest.mark.parametrize("fn", ALL_FNS)
def test_bare_string_reference_rejected(fn):
    # ["abc"] as references[i] is required; "abc" would otherwise be read as 3 refs.
    with pytest.raises(TypeError, match="sequence of reference strings"):
        fn(["abc"], ["abc"])


@pytest.mark.parametrize("fn", ALL_FNS)
def test_non_string_prediction_rejected(fn):
    with pytest.raises(TypeError):
        fn([1], [["a"]])


# ---------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(10.0)) == pytest.approx(10.0)
    assert perplexity(np.float32(math.log(50.0))) == pytest.approx(50.0, rel=1e-6)
    assert type(perplexity(np.float32(1.0))) is float


def test_perplexity_overflow_safe():
    assert perplexity(1e4) == math.inf
    assert perplexity(float("inf")) == math.inf
    assert math.isnan(perplexity(float("nan")))


def test_no_module_level_mutable_state():
    # Calls do not influence each other (fresh sacrebleu objects per call).
    a = text_metrics(["a b c d"], [["a b c d"]])
    text_metrics(["x"], [["y", "z"]])
    assert text_metrics(["a b c d"], [["a b c d"]]) == a
    assert "nrefs:1" in a["bleu_signature"]
