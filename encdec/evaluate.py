"""Decode a split and score it with the task's metrics."""
from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
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
  total = len(task.eval_examples(split))
  total = min(total, max_examples) if max_examples else total
  meter = progress.Progress(0, total)
  out = []
  for src, examples in pipeline.eval_batches(task, task_cfg, split, batch_size=batch_size):
    max_len = max_len_for(src.shape[1])                                    # src: [B, S]
    tokens = np.asarray(decoding.search(module, {"params": params}, src, max_len,
                                        beam_size=beam_size, alpha=alpha))    # [B, L]
    for example, row in zip(examples, tokens):
      out.append(Prediction(example.src, tuple(example.refs), task.tgt_tokenizer.decode(row)))
    if show_progress:
      rate = meter.report(len(out))
      logging.info("decoded %d/%d %s examples (%.1f/s, ETA %s)", len(out), total, split,
                   rate["steps_per_s"], progress.format_duration(rate["eta_s"]))
      meter.restart(len(out))
    if max_examples and len(out) >= max_examples:
      return out[:max_examples]
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
