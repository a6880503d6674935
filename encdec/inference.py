"""`encdec eval` and `encdec decode`: use a trained run on a split or on new inputs."""
from __future__ import annotations

import functools
import pathlib
from typing import Iterable, Iterator

import numpy as np
from absl import logging

from encdec import assembly, attention_maps, decoding, evaluate, run as run_lib
from encdec.data import tokenizers


def _search_options(run, beam_size, alpha, batch_size):
  return (beam_size or run.cfg.decode.beam_size,
          run.cfg.decode.alpha if alpha is None else alpha,
          batch_size or run.cfg.eval.batch_size)


def evaluate_run(workdir: str | pathlib.Path, *, split: str | None = None, step: int | None = None,
                 beam_size: int | None = None, alpha: float | None = None,
                 batch_size: int | None = None, max_examples: int = 0,
                 plot_attention: int = 0) -> dict:
  """Decode `split` with a checkpoint; write WORKDIR/eval/<split>-<step>[-beamN].json + .tsv."""
  run = run_lib.load(workdir, step)
  split = split or run.cfg.eval.final_split
  if split not in run.task.splits:
    raise ValueError(f"unknown split {split!r} for task {run.task.name}; valid: "
                     f"{', '.join(run.task.splits)}")
  beam_size, alpha, batch_size = _search_options(run, beam_size, alpha, batch_size)
  predictions = evaluate.decode_split(
      run.module, run.params, run.task, run.cfg.task, split, batch_size=batch_size,
      max_len_for=functools.partial(assembly.decode_max_len, run.cfg), max_examples=max_examples,
      beam_size=beam_size, alpha=alpha, show_progress=True)
  scores = {**evaluate.score(run.task, predictions), "beam_size": beam_size, "step": run.step}
  name = split if beam_size == 1 else f"{split}-beam{beam_size}"
  out_dir = pathlib.Path(workdir) / "eval"
  evaluate.write_outputs(out_dir, name, run.step, scores, predictions)
  logging.info("%s @ step %d (beam %d): %s -> %s", split, run.step, beam_size,
               {k: v for k, v in scores.items() if "signature" not in k}, out_dir)
  for key in ("bleu_signature", "chrf_signature"):
    if key in scores:
      logging.info("%s: %s", key, scores[key])
  if plot_attention:
    plot_attention_maps(run, predictions[:plot_attention], out_dir / f"attention-{split}")
  return scores


def plot_attention_maps(run, predictions, directory: pathlib.Path) -> list[pathlib.Path]:
  """Cross-attention heatmaps (teacher-forced on the model's own output), one PNG each."""
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  src_tok, tgt_tok = run.task.src_tokenizer, run.task.tgt_tokenizer
  for i, p in enumerate(predictions):
    src_ids = src_tok.encode(p.src) + [tokenizers.EOS]
    out_ids = tgt_tok.encode(p.prediction) + [tokenizers.EOS]
    tgt_in = np.array([[tokenizers.BOS] + out_ids[:-1]], np.int32)           # [1, T]
    weights = attention_maps.cross_attention_weights(
        run.module, {"params": run.params}, np.array([src_ids], np.int32), tgt_in)
    path = directory / f"{i:03d}.png"
    attention_maps.plot_example(weights[:, 0], src_tok.pieces(src_ids), tgt_tok.pieces(out_ids),
                                path, title=f"{p.src} -> {p.prediction}")
    paths.append(path)
  logging.info("wrote %d attention maps to %s", len(paths), directory)
  return paths


def _pad_batch(rows: list[list[int]], bucket: int = 16) -> np.ndarray:
  """Rows of ids --> [B, S] int32, S rounded up to a multiple of `bucket` (few recompiles)."""
  length = -(-max(len(r) for r in rows) // bucket) * bucket
  return np.array([r + [tokenizers.PAD] * (length - len(r)) for r in rows], np.int32)


def decode_lines(workdir: str | pathlib.Path, lines: Iterable[str], *, step: int | None = None,
                 beam_size: int | None = None, alpha: float | None = None,
                 batch_size: int | None = None) -> Iterator[tuple[str, str]]:
  """(source, output) for each input line, decoded in batches."""
  run = run_lib.load(workdir, step)
  beam_size, alpha, batch_size = _search_options(run, beam_size, alpha, batch_size)
  batch: list[str] = []
  for line in list(lines) + [None]:
    if line is not None and line.strip():
      batch.append(line.strip())
    if batch and (line is None or len(batch) == batch_size):
      yield from zip(batch, _decode_batch(run, batch, beam_size, alpha))
      batch = []


def _decode_batch(run, sources: list[str], beam_size: int, alpha: float) -> list[str]:
  src_tok = run.task.src_tokenizer
  rows = []
  for text in sources:
    text = run.task.normalize_source(text)
    ids = src_tok.encode(text)
    if tokenizers.UNK in ids:
      logging.warning("unknown symbols in %r were mapped to UNK", text)
    rows.append(ids + [tokenizers.EOS])
  src = _pad_batch(rows)                                                  # [B, S]
  out = decoding.search(run.module, {"params": run.params}, src,
                        assembly.decode_max_len(run.cfg, src.shape[1]), beam_size=beam_size,
                        alpha=alpha)
  return [run.task.tgt_tokenizer.decode(row) for row in np.asarray(out)]
