"""Decode a split and score it with the task's metrics."""
from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from encdec import decoding, metrics
from encdec.data import pipeline
from encdec.train import progress


@dataclasses.dataclass
class Prediction:
  src: str
  refs: tuple[str, ...]
  prediction: str


def decode_split(module: nn.Module, params: Any, task, task_cfg, split: str, *, batch_size: int,
                 max_len_for: Callable[[int], int], max_examples: int = 0, beam_size: int = 1,
                 alpha: float = 0.6, show_progress: bool = False) -> list[Prediction]:
  """Decode the first `max_examples` (0: all) examples of `split` (greedy or beam search);
  `max_len_for(S)`: the output length limit for the split's source width S."""
  search = lambda src, max_len: decoding.search(module, {"params": params}, src, max_len,
                                                beam_size=beam_size, alpha=alpha)[None]
  return _decode(search, 1, task, task_cfg, split, batch_size=batch_size,
                 max_len_for=max_len_for, max_examples=max_examples,
                 show_progress=show_progress)[0]


def decode_split_members(module: nn.Module, stacked_params: Any, task, task_cfg, split: str, *,
                         batch_size: int, max_len_for: Callable[[int], int],
                         max_examples: int = 0, beam_size: int = 1,
                         alpha: float = 0.6) -> list[list[Prediction]]:
  """decode_split for N runs of one architecture, params stacked on a leading axis, decoded
  together (decoding.search_members); one list of predictions per member."""
  search = lambda src, max_len: decoding.search_members(module, stacked_params, src, max_len,
                                                        beam_size=beam_size, alpha=alpha)
  members = len(jax.tree_util.tree_leaves(stacked_params)[0])
  return _decode(search, members, task, task_cfg, split, batch_size=batch_size,
                 max_len_for=max_len_for, max_examples=max_examples)


def _decode(search: Callable[[np.ndarray, int], Any], members: int, task, task_cfg, split: str, *,
            batch_size: int, max_len_for: Callable[[int], int], max_examples: int,
            show_progress: bool = False) -> list[list[Prediction]]:
  """The split's predictions by `search(src [B, S], max_len) -> tokens [N, B, L]`, per member."""
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
    done = len(out[0])
    if show_progress:
      rate = meter.report(done)
      logging.info("decoded %d/%d %s examples (%.1f/s, ETA %s)", done, total, split,
                   rate["steps_per_s"], progress.format_duration(rate["eta_s"]))
      meter.restart(done)
    if max_examples and done >= max_examples:
      return [predictions[:max_examples] for predictions in out]
  return out


def score(task, predictions: list[Prediction]) -> dict[str, Any]:
  """The task's metric family (WER/PER, BLEU/chrF or exact match) over `predictions`."""
  return metrics.compute(task.metric_family, [p.prediction for p in predictions],
                         [list(p.refs) for p in predictions])


def format_samples(predictions: list[Prediction], n: int) -> str:
  """A few lines 'source -> prediction (reference)' marking errors with '✗'."""
  lines = []
  for p in itertools.islice(predictions, n):
    mark = "✓" if p.prediction in p.refs else "✗"
    lines.append(f"  {mark} {p.src!r} -> {p.prediction!r}   (ref: {' | '.join(p.refs)})")
  return "\n".join(lines)


def write_outputs(directory, split: str, step: int, scores: dict[str, Any],
                  predictions: list[Prediction]) -> None:
  """<dir>/<split>-<step>.json (scores) and <split>-<step>-predictions.tsv."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / f"{split}-{step}.json").write_text(json.dumps(scores, indent=2) + "\n")
  with (directory / f"{split}-{step}-predictions.tsv").open("w") as f:
    f.write("source\treferences\tprediction\n")
    for p in predictions:
      f.write(f"{p.src}\t{' | '.join(p.refs)}\t{p.prediction}\n")
