"""Scanned or unrolled layers (model.scan_layers): a config's train step at its data's shapes.

    python -m benchmarks.layer_stack --config 'cross_attention_study_v2:task=g2p_cmudict' \
        --set train.bucket_width=8 --json benchmarks/results-layer-stack.json \
        [--shapes 8x8,16x16] [--data_batches 1000] [--rounds 5] [--steps 20] [--quick]

Takes benchmarks.run's flags (--config, --layers, --quick, --steps, --warmup, --seed).
`nn.scan` over the layers keeps compile time flat in depth; on CPU its loop (stacked carries,
the residuals saved for the backward pass by dynamic-update-slice) can cost more than a small
model's layers themselves. This measures what a run of the config gets from either.

Shapes: a length-bucketed config (train.bucket_width > 0) trains on several batch shapes
[B, S'] / [B, T']; their shares are counted over the first `--data_batches` batches of its own
training data (encdec.data.pipeline, as `encdec train` builds them). Otherwise the config's one
shape [B, S] / [B, T]. `--shapes SxT,...` gives them by hand (equal shares, no data read).

For each shape both stacks are compiled, then timed in `--rounds` rounds of `--steps` steps
each (random tokens, the state carried on), scanned first in even rounds and unrolled first in
odd ones, so a drift of a shared machine's speed falls on both alike. Per shape: the median over
rounds of each round's median step, the model FLOP rate and the unrolled speed-up; overall: the
step time averaged with the shapes' shares, i.e. what a training run of the config would see.
"""
from __future__ import annotations

import collections
import statistics
import sys
from typing import Any

if __name__ == "__main__" and not __package__:
  sys.exit("run the benchmarks as a module from the repository root: "
           "python -m benchmarks.layer_stack")
if __name__ == "__main__":   # as benchmarks.run does: huge pages for XLA's buffers
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import flops, run  # noqa: E402
from encdec import config as config_lib, threefry  # noqa: E402
from encdec.data import pipeline, tasks  # noqa: E402
from encdec.errors import ConfigError  # noqa: E402
from encdec.train import state as state_lib  # noqa: E402

STACKS = {"scanned": True, "unrolled": False}    # name -> model.scan_layers

Shape = tuple[int, int]                           # (S', T')


def parse_shapes(text: str) -> dict[Shape, float]:
  """"8x8,16x16" --> {(8, 8): 0.5, (16, 16): 0.5}."""
  try:
    shapes = [tuple(int(n) for n in part.split("x")) for part in text.split(",") if part]
  except ValueError:
    shapes = []
  if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
    raise ConfigError(f"--shapes {text!r}: give source x target lengths, e.g. 8x8,16x16")
  return {s: 1.0 / len(shapes) for s in shapes}


def shape_shares(batches) -> dict[Shape, float]:
  """{(S', T'): share of the batches}, most common first."""
  counts = collections.Counter((b["src"].shape[1], b["tgt_in"].shape[1]) for b in batches)
  total = sum(counts.values())
  return {shape: n / total for shape, n in counts.most_common()}


def data_shapes(cfg, count: int, seed: int) -> dict[Shape, float]:
  """The shapes the config's training data comes in (counted over `count` batches if bucketed)."""
  if not cfg.train.bucket_width:
    return {(cfg.task.max_src_len + 1, cfg.task.max_tgt_len + 1): 1.0}
  task = tasks.build(cfg.task)
  batches = pipeline.train_batches(task, cfg.task, batch_size=cfg.train.batch_size, seed=seed,
                                   bucket_width=cfg.train.bucket_width,
                                   bucket_window=cfg.train.bucket_window)
  try:
    return shape_shares(next(batches) for _ in range(count))
  finally:
    batches.close()


class Stack:
  """One stack's compiled train step at one shape, its state carried from call to call."""

  def __init__(self, cfg, batch: dict[str, np.ndarray], seed: int):
    module, tx, train_step = run.build_train(cfg)
    self.batch = jax.device_put(batch)
    self.rng = jax.random.key(seed)
    self.state = state_lib.create(module, tx, jax.random.key(seed), batch["src"],
                                  batch["tgt_in"])
    self.compiled, times = run.compile_train_step(train_step, self.state, self.batch, self.rng)
    self.compile_s = times["compile_s"]

  def median_step_s(self, steps: int) -> float:
    times, self.state, _ = run.timed_steps(self.compiled, self.state, [self.batch] * steps,
                                           self.rng, 0)
    return statistics.median(times)


def timed_rounds(stacks: dict[str, Any], rounds: int, steps: int) -> dict[str, list[float]]:
  """stack name -> its median step seconds in each round; the first stack leads in even
  rounds, the last in odd ones."""
  seconds = {name: [] for name in stacks}
  order = list(stacks)
  for r in range(rounds):
    for name in order if r % 2 == 0 else order[::-1]:
      seconds[name].append(stacks[name].median_step_s(steps))
  return seconds


def bench_shape(args, configs: dict[str, Any], shape: Shape) -> dict[str, Any]:
  """Both stacks at one shape: compile seconds, round medians, FLOP rate, speed-up."""
  batch = run.train_batch(next(iter(configs.values())), args.seed, shape)
  stacks = {name: Stack(cfg, batch, args.seed) for name, cfg in configs.items()}
  for stack in stacks.values():
    stack.median_step_s(args.warmup)
  seconds = timed_rounds(stacks, args.rounds, args.steps)
  b = batch["src"].shape[0]
  step_flops = flops.train_flops(next(iter(configs.values())).model, b, *shape)
  out: dict[str, Any] = {"src_len": shape[0], "tgt_len": shape[1], "batch": b,
                         "train_flops_per_step": step_flops}
  for name, stack in stacks.items():
    step_s = statistics.median(seconds[name])
    out[name] = {"step_s": step_s, "step_s_rounds": seconds[name],
                 "compile_s": stack.compile_s, "model_gflops_per_s": step_flops / step_s / 1e9}
  out["unrolled_speedup"] = out["scanned"]["step_s"] / out["unrolled"]["step_s"]
  return out


def weighted(results: list[dict[str, Any]], shares: list[float]) -> dict[str, Any]:
  """Each stack's step seconds averaged with the shapes' shares, and the unrolled speed-up."""
  mean = {name: sum(share * r[name]["step_s"] for r, share in zip(results, shares))
          for name in STACKS}
  return {"scanned_step_s": mean["scanned"], "unrolled_step_s": mean["unrolled"],
          "unrolled_speedup": mean["scanned"] / mean["unrolled"],
          "scanned_compile_s": sum(r["scanned"]["compile_s"] for r in results),
          "unrolled_compile_s": sum(r["unrolled"]["compile_s"] for r in results)}


def table(results: list[dict[str, Any]], shares: list[float], overall: dict[str, Any]) -> str:
  lines = ["| S' x T' | share | scanned ms | unrolled ms | unrolled speed-up | "
           "scanned GFLOP/s | unrolled GFLOP/s |", "|---|---|---|---|---|---|---|"]
  for r, share in zip(results, shares):
    lines.append(f"| {r['src_len']} x {r['tgt_len']} | {share:.2f} | "
                 f"{1e3 * r['scanned']['step_s']:.1f} | {1e3 * r['unrolled']['step_s']:.1f} | "
                 f"{r['unrolled_speedup']:.2f} | {r['scanned']['model_gflops_per_s']:.1f} | "
                 f"{r['unrolled']['model_gflops_per_s']:.1f} |")
  lines.append(f"| weighted | 1.00 | {1e3 * overall['scanned_step_s']:.1f} | "
               f"{1e3 * overall['unrolled_step_s']:.1f} | {overall['unrolled_speedup']:.2f} | | |")
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  parser = run.build_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for both stacks, e.g. train.bucket_width=8")
  parser.add_argument("--shapes", default="", help="SxT,... instead of the data's shapes")
  parser.add_argument("--data_batches", type=int, default=1000,
                      help="training batches whose shapes are counted (bucketed configs)")
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds of both stacks")
  args = run.parse_args(argv, parser)
  try:
    fixed = config_lib.parse_overrides(args.set, prefix="")
    configs = {name: run.load_config(args, **fixed, **{"model.scan_layers": scan})
               for name, scan in STACKS.items()}
    shapes = (parse_shapes(args.shapes) if args.shapes
              else data_shapes(configs["scanned"], args.data_batches, args.seed))
  except ConfigError as e:
    parser.error(str(e))
  threefry.unroll_on_cpu()            # as the trainer lowers dropout's hash
  results = []
  for shape in shapes:
    print(f"[bench] {shape[0]} x {shape[1]} ...", file=sys.stderr, flush=True)
    results.append(bench_shape(args, configs, shape))
  shares = list(shapes.values())
  overall = weighted(results, shares)
  out = {"benchmark": "encdec scanned vs unrolled layers", "quick": args.quick,
         "config": args.config, "overrides": fixed, "rounds": args.rounds, "steps": args.steps,
         "shape_source": "--shapes" if args.shapes else
         (f"{args.data_batches} training batches" if configs["scanned"].train.bucket_width
          else "the config's lengths"),
         **run.environment(),
         "shapes": [{**r, "share": share} for r, share in zip(results, shares)], **overall}
  return run.emit(out, table(results, shares, overall), args.json)


if __name__ == "__main__":
  main()
