"""Speeds of a run: train target tokens/s from its metrics.jsonl, and decode tokens/s measured
once on its final parameters (greedy, a fixed batch of test sources, exactly decode_max_len
steps) and cached in WORKDIR/decode_speed.json."""
from __future__ import annotations

import json
import pathlib
import statistics
import time
from typing import Any

from absl import logging

from encdec import writers
from encdec.report import discovery

SPEED_FILE = "decode_speed.json"
SPEED_BATCH = 32
SPEED_REPEATS = 3


def train_tokens_per_s(workdir: pathlib.Path) -> float | None:
  """Median of the logged train/tokens_per_s windows after the first (which compiles)."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  rates = [r["train/tokens_per_s"] for r in writers.read_metrics(workdir)
           if isinstance(r.get("train/tokens_per_s"), (int, float))]
  rates = rates[1:] or rates
  return float(statistics.median(rates)) if rates else None


def measure_decode_speed(workdir: pathlib.Path, split: str, batch_size: int = SPEED_BATCH,
                         repeats: int = SPEED_REPEATS) -> dict[str, Any]:
  """Greedy decoding of the first `batch_size` sources of `split` for exactly decode_max_len
  steps (EOS ignored, so every variant decodes the same number of tokens): best of `repeats`
  timed calls after a compiling warm-up."""
  import jax  # pylint: disable=import-outside-toplevel
  from encdec import assembly, decoding, run as run_lib  # pylint: disable=import-outside-toplevel
  from encdec.data import pipeline  # pylint: disable=import-outside-toplevel
  run = run_lib.load(workdir)
  batches = pipeline.eval_batches(run.task, run.cfg.task, split, batch_size=batch_size)
  src, _ = next(batches)                                                    # [B, S]
  batches.close()
  src = jax.device_put(src)
  max_len = assembly.decode_max_len(run.cfg, src.shape[1])
  decode = lambda: decoding.greedy(run.module, {"params": run.params}, src, max_len,
                                   eos_id=-1).block_until_ready()
  decode()                                                                  # compile
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    decode()
    seconds.append(time.perf_counter() - start)
  return {"step": run.step, "split": split, "batch_size": batch_size,
          "source_length": int(src.shape[1]), "max_len": max_len, "seconds": min(seconds),
          "tokens_per_s": batch_size * max_len / min(seconds),
          "device": jax.devices()[0].device_kind}


def decode_tokens_per_s(run: discovery.RunResult, measure: bool) -> float | None:
  """The run's cached decode speed at its final step; measured (and cached) if missing."""
  path = run.workdir / SPEED_FILE
  split = run.cfg.eval.final_split
  if path.exists():
    cached = json.loads(path.read_text())
    if (cached.get("step"), cached.get("split"), cached.get("batch_size")) == (
        run.step, split, SPEED_BATCH):
      return cached["tokens_per_s"]
  if not measure or not (run.workdir / "checkpoints").is_dir():
    return None
  logging.info("measuring the decode speed of %s", run.name)
  result = measure_decode_speed(run.workdir, split)
  path.write_text(json.dumps(result, indent=2) + "\n")
  return result["tokens_per_s"]
