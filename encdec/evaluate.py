"""Decode a split and score it with the task's metrics."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from encdec import decoding, metrics, predictions_tsv
from encdec.data import pipeline
from encdec.train import progress
from encdec.train import step as step_lib


@dataclasses.dataclass
class Prediction:
  src: str
  refs: tuple[str, ...]
  prediction: str
  # With score_references: the references under teacher forcing, their NLL in nats summed over
  # every reference's tokens, and how many tokens that is.
  reference_nll: float | None = None
  reference_tokens: int | None = None


def decode_split(module: nn.Module, params: Any, task, task_cfg, split: str, *, batch_size: int,
                 max_len_for: Callable[[int], int], max_examples: int = 0, beam_size: int = 1,
                 alpha: float = 0.6, score_references: bool = False,
                 show_progress: bool = False) -> list[Prediction]:
  """Decode the first `max_examples` (0: all) examples of `split` (greedy or beam search);
  `max_len_for(S)`: the output length limit for the split's source width S. With
  `score_references`, each prediction also carries its references' NLL (teacher forcing)."""
  search = lambda src, max_len: decoding.search(module, {"params": params}, src, max_len,
                                                beam_size=beam_size, alpha=alpha)[None]
  row_nll = jax.jit(functools.partial(step_lib.row_nll, module))
  nll_of = (lambda batch: row_nll(params, batch)[None]) if score_references else None
  return _decode(search, nll_of, 1, task, task_cfg, split, batch_size=batch_size,
                 max_len_for=max_len_for, max_examples=max_examples,
                 show_progress=show_progress)[0]


def decode_split_members(module: nn.Module, stacked_params: Any, task, task_cfg, split: str, *,
                         batch_size: int, max_len_for: Callable[[int], int],
                         max_examples: int = 0, beam_size: int = 1, alpha: float = 0.6,
                         score_references: bool = False) -> list[list[Prediction]]:
  """decode_split for N runs of one architecture, params stacked on a leading axis, decoded
  together (decoding.search_members); one list of predictions per member."""
  search = lambda src, max_len: decoding.search_members(module, stacked_params, src, max_len,
                                                        beam_size=beam_size, alpha=alpha)
  row_nll = jax.jit(jax.vmap(functools.partial(step_lib.row_nll, module), in_axes=(0, None)))
  nll_of = (lambda batch: row_nll(stacked_params, batch)) if score_references else None
  members = len(jax.tree_util.tree_leaves(stacked_params)[0])
  return _decode(search, nll_of, members, task, task_cfg, split, batch_size=batch_size,
                 max_len_for=max_len_for, max_examples=max_examples)


def _decode(search: Callable[[np.ndarray, int], Any],
            nll_of: Callable[[dict[str, np.ndarray]], Any] | None, members: int, task, task_cfg,
            split: str, *, batch_size: int, max_len_for: Callable[[int], int],
            max_examples: int, show_progress: bool = False) -> list[list[Prediction]]:
  """The split's predictions by `search(src [B, S], max_len) -> tokens [N, B, L]`, per member,
  with their references' NLL where `nll_of(batch) -> [N, B, 2]` (step.row_nll) is given."""
  out = _search_split(search, members, task, task_cfg, split, batch_size=batch_size,
                      max_len_for=max_len_for, max_examples=max_examples,
                      show_progress=show_progress)
  if nll_of is None:
    return out
  nll = reference_nll(nll_of, members, task, task_cfg, split, batch_size=batch_size,
                      max_examples=max_examples)                           # [N, examples, 2]
  return [[dataclasses.replace(p, reference_nll=float(row[0]), reference_tokens=int(row[1]))
           for p, row in zip(predictions, rows)] for predictions, rows in zip(out, nll)]


def reference_nll(nll_of: Callable[[dict[str, np.ndarray]], Any], members: int, task, task_cfg,
                  split: str, *, batch_size: int, max_examples: int = 0) -> np.ndarray:
  """[members, examples, 2]: per example of `split` (the first `max_examples`; 0: all), the
  NLL in nats of all its references given its source (teacher forcing), summed, and their
  token count; `nll_of(batch) -> [members, B, 2]` as step.row_nll."""
  total = len(task.eval_examples(split))
  out = np.zeros((members, min(total, max_examples) if max_examples else total, 2))
  for batch, owner in pipeline.reference_batches(task, task_cfg, split, batch_size=batch_size,
                                                 max_examples=max_examples):
    rows = np.asarray(nll_of(batch), np.float64)                           # [members, B, 2]
    real = owner >= 0
    for member in range(members):
      np.add.at(out[member], owner[real], rows[member, real])
  return out


def _search_split(search: Callable[[np.ndarray, int], Any], members: int, task, task_cfg,
                  split: str, *, batch_size: int, max_len_for: Callable[[int], int],
                  max_examples: int, show_progress: bool) -> list[list[Prediction]]:
  """_decode's predictions without the references' NLL."""
  total = len(task.eval_examples(split))
  total = min(total, max_examples) if max_examples else total
  meter = progress.Progress(0, total)
  out: list[list[Prediction]] = [[] for _ in range(members)]
  for src, examples in pipeline.eval_batches(task, task_cfg, split, batch_size=batch_size):
    tokens = np.asarray(search(src, max_len_for(src.shape[1])))           # [N, B, L]
    for predictions, rows in zip(out, tokens):
      predictions.extend(Prediction(example.src, tuple(example.refs),
                                    task.tgt_tokenizer.decode(row))
                         for example, row in zip(examples, rows))
    done = min(len(out[0]), total)
    if show_progress:
      rate = meter.report(done)
      logging.info("decoded %d/%d %s examples (%.1f/s, ETA %s)", done, total, split,
                   rate["steps_per_s"], progress.format_duration(rate["eta_s"]))
      meter.restart(done)
    if max_examples and done >= max_examples:
      return [predictions[:max_examples] for predictions in out]
  return out


def score(task, predictions: list[Prediction]) -> dict[str, Any]:
  """The task's metric family (WER/PER, BLEU/chrF or exact match) over `predictions`, and
  where they carry their references' NLL, its mean per reference token (`nll`, nats) and
  `perplexity`."""
  scores = metrics.compute(task.metric_family, [p.prediction for p in predictions],
                           [list(p.refs) for p in predictions])
  if predictions and predictions[0].reference_nll is not None:
    tokens = sum(p.reference_tokens for p in predictions)
    nll = sum(p.reference_nll for p in predictions) / max(tokens, 1)
    scores.update(nll=nll, perplexity=math.exp(nll))
  return scores


def format_samples(predictions: list[Prediction], n: int) -> str:
  """A few lines 'source -> prediction (reference)' marking errors with '✗'."""
  lines = []
  for p in itertools.islice(predictions, n):
    mark = "✓" if p.prediction in p.refs else "✗"
    lines.append(f"  {mark} {p.src!r} -> {p.prediction!r}   (ref: {' | '.join(p.refs)})")
  return "\n".join(lines)


def write_outputs(directory, split: str, step: int, scores: dict[str, Any],
                  predictions: list[Prediction]) -> None:
  """<dir>/<split>-<step>.json (scores) and <split>-<step>-predictions.tsv (predictions_tsv)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / f"{split}-{step}.json").write_text(json.dumps(scores, indent=2) + "\n")
  predictions_tsv.write(directory / f"{split}-{step}-predictions.tsv",
                        ((p.src, p.refs, p.prediction, p.reference_nll, p.reference_tokens)
                         for p in predictions))
