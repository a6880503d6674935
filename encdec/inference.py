"""`encdec eval` and `encdec decode`: use a trained run on a split or on new inputs."""
from __future__ import annotations

import functools
import itertools
import os
import pathlib
import select
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from absl import logging

from encdec import assembly, attention_maps, decoding, evaluate, run as run_lib
from encdec.errors import ConfigError


def _search_options(run, beam_size, alpha, batch_size):
  return (beam_size or run.cfg.decode.beam_size,
          run.cfg.decode.alpha if alpha is None else alpha,
          batch_size or run.cfg.eval.batch_size)


def evaluate_run(workdir: str | pathlib.Path, *, split: str | None = None, step: int | None = None,
                 beam_size: int | None = None, alpha: float | None = None,
                 batch_size: int | None = None, max_examples: int = 0,
                 plot_attention: int = 0, mesh_overrides: Mapping[str, Any] | None = None,
                 average: int = 1) -> dict:
  """Decode `split` with a checkpoint; write WORKDIR/eval/<split>[-avgN][-beamN]-<step>.json
  + .tsv, and with `plot_attention` K the cross-attention maps of the first K examples.

  The parameters are loaded onto the mesh of `mesh_overrides`; `average` N > 1 averages the
  N newest checkpoints up to `step` (see run.load)."""
  run = run_lib.load(workdir, step, mesh_overrides, average)
  split = split or run.cfg.eval.final_split
  if split not in run.task.splits:
    raise ConfigError(f"unknown split {split!r} for task {run.task.name}; valid: "
                      f"{', '.join(run.task.splits)}")
  if plot_attention:
    attention_maps.check_available(run.module.config)    # before decoding, not after
  beam_size, alpha, batch_size = _search_options(run, beam_size, alpha, batch_size)
  predictions = evaluate.decode_split(
      run.module, run.params, run.task, run.cfg.task, split, batch_size=batch_size,
      max_len_for=functools.partial(assembly.decode_max_len, run.cfg), max_examples=max_examples,
      beam_size=beam_size, alpha=alpha, score_references=True, show_progress=True)
  scores = {**evaluate.score(run.task, predictions), "beam_size": beam_size, "step": run.step}
  if run.averaged_steps:
    scores["averaged_steps"] = list(run.averaged_steps)
  name = split + (f"-avg{average}" if average > 1 else "") + (
      f"-beam{beam_size}" if beam_size > 1 else "")
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
  """Cross-attention heatmaps (teacher-forced on the model's own output), one PNG each, with a
  row for each decoder layer that has cross-attention."""
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  src_tok, tgt_tok, cfg = run.task.src_tokenizer, run.task.tgt_tokenizer, run.module.config
  for i, p in enumerate(predictions):
    src_ids = src_tok.encode(p.src) + [src_tok.special.eos]
    out_ids = tgt_tok.encode(p.prediction) + [cfg.eos_id]
    tgt_in = np.array([[cfg.bos_id] + out_ids[:-1]], np.int32)               # [1, T]
    maps = attention_maps.cross_attention_weights(
        run.module, {"params": run.params}, np.array([src_ids], np.int32), tgt_in)
    path = directory / f"{i:03d}.png"
    attention_maps.plot_example(
        maps.weights[:, 0], attention_maps.key_labels(maps, src_tok.pieces(src_ids)),
        tgt_tok.pieces(out_ids), path, title=f"{p.src} -> {p.prediction}", layers=maps.layers)
    paths.append(path)
  logging.info("wrote %d attention maps to %s", len(paths), directory)
  return paths


def _pad_batch(rows: list[list[int]], pad_id: int, bucket: int = 16) -> np.ndarray:
  """Rows of ids --> [B, S] int32, S rounded up to a multiple of `bucket` (few recompiles)."""
  length = -(-max(len(r) for r in rows) // bucket) * bucket
  return np.array([r + [pad_id] * (length - len(r)) for r in rows], np.int32)


def decode_lines(workdir: str | pathlib.Path, lines: Iterable[str | None], *,
                 step: int | None = None, beam_size: int | None = None,
                 alpha: float | None = None, batch_size: int | None = None,
                 mesh_overrides: Mapping[str, Any] | None = None,
                 average: int = 1) -> Iterator[tuple[str, str]]:
  """(source, output) for each non-blank line, in input order, decoded in batches as the lines
  arrive (see `batches`): each batch's results are yielded before another line is read, so
  this works as a filter on an unbounded stream. `average`: see run.load."""
  run = run_lib.load(workdir, step, mesh_overrides, average)
  beam_size, alpha, batch_size = _search_options(run, beam_size, alpha, batch_size)
  for batch in batches(lines, batch_size):
    yield from zip(batch, _decode_batch(run, batch, beam_size, alpha))


def batches(lines: Iterable[str | None], size: int) -> Iterator[list[str]]:
  """The non-blank lines, stripped, in lists of at most `size`, reading no line ahead: a list
  is yielded when it is full, at a None in `lines` (the input has nothing more ready: decode
  what there is) and at the end of the input."""
  batch: list[str] = []
  for line in itertools.chain(lines, [None]):
    if line is not None and line.strip():
      batch.append(line.strip())
    if batch and (line is None or len(batch) == size):
      yield batch
      batch = []


def stdin_lines(fd: int, encoding: str = "utf-8") -> Iterator[str | None]:
  """The lines of file descriptor `fd` (e.g. stdin) as they arrive, and a None each time no
  more input is ready without waiting: typed lines are then decoded at once, while a file or
  a fast pipe fills whole batches. (POSIX: select() on the descriptor.)"""
  pending = b""
  while True:
    if not select.select([fd], [], [], 0)[0]:
      yield None                                   # nothing more ready now
    chunk = os.read(fd, 1 << 16)                   # waits for input, b"" at its end
    if not chunk:
      break
    *complete, pending = (pending + chunk).split(b"\n")
    for line in complete:
      yield line.decode(encoding, errors="replace").rstrip("\r")
  if pending:
    yield pending.decode(encoding, errors="replace")


def _decode_batch(run, sources: list[str], beam_size: int, alpha: float) -> list[str]:
  src_tok = run.task.src_tokenizer
  rows = []
  for text in sources:
    text = run.task.normalize_source(text)
    ids = src_tok.encode(text)
    if src_tok.special.unk in ids:
      logging.warning("unknown symbols in %r were mapped to UNK", text)
    rows.append(ids + [src_tok.special.eos])
  src = _pad_batch(rows, src_tok.special.pad)                              # [B, S]
  out = decoding.search(run.module, {"params": run.params}, src,
                        assembly.decode_max_len(run.cfg, src.shape[1]), beam_size=beam_size,
                        alpha=alpha)
  return [run.task.tgt_tokenizer.decode(row) for row in np.asarray(out)]
