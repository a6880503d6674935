"""Runs per hour when N runs share one compiled step (encdec train-batch), against one at a time.

    python -m benchmarks.batched --json benchmarks/results-batched.json \
        [--config cross_attention_ablation:task=g2p_cmudict] [--sizes 1,2,5,10] [--d_models 64,256]

Takes benchmarks.run's flags (--config, --steps, --warmup, --seed, --quick). For each d_model
and each batch size N: the train step of encdec/train/batched.py (`jax.jit(jax.vmap(
train_step_fn))` over N stacked states, N random batches of the config's shape, N dropout keys)
timed as benchmarks.run times the lone step (median after warm-up, compile excluded).
`runs_per_hour_ratio` = N × (lone step time) ÷ (batched step time): how many times more runs an
hour of training finishes batched than one after another (checkpoints left out).
The same for decoding, as train-batch evaluates its members: greedy search of --decode_batch
random sources, --decode_len steps exactly, by N members at once (decoding.search_members)
against one model's decoding.search: `decode_ratio` = N × lone ÷ batched.
"""
from __future__ import annotations

import statistics
import sys
from typing import Any

if __name__ == "__main__" and not __package__:
  sys.exit("run the benchmarks as a module from the repository root: python -m benchmarks.batched")
if __name__ == "__main__":   # as benchmarks.run does: huge pages for XLA's buffers
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

import jax  # noqa: E402

from benchmarks import run  # noqa: E402
from encdec import decoding, threefry  # noqa: E402
from encdec.train import batched, state as state_lib, step as step_lib  # noqa: E402

ABLATION = "cross_attention_ablation:task=g2p_cmudict"


def step_seconds(args, cfg, size: int) -> float:
  """Median seconds of one batched step of `size` members (size 1: still vmapped)."""
  module, tx, _ = run.build_train(cfg)
  pure = step_lib.train_step_fn(module, tx, lambda step, hparams: cfg.optim.learning_rate,
                                label_smoothing=cfg.train.label_smoothing)
  train_step = jax.jit(jax.vmap(lambda state, batch, rng: pure(state, batch, rng, {})),
                       donate_argnums=0)
  batches = [run.train_batch(cfg, args.seed + i) for i in range(size)]
  states = [state_lib.create(module, tx, jax.random.key(args.seed + i), b["src"], b["tgt_in"])
            for i, b in enumerate(batches)]
  stacked = batched.stack(states)
  batch = jax.device_put(batched.stack(batches))
  rngs = batched.stack([jax.random.key(args.seed + i) for i in range(size)])
  compiled, _ = run.compile_train_step(train_step, stacked, batch, rngs)
  times, _, _ = run.timed_steps(compiled, stacked, [batch] * (args.warmup + args.steps), rngs,
                                args.warmup)
  return statistics.median(times)


def decode_seconds(args, cfg, size: int) -> tuple[float, float]:
  """Median seconds of greedy decoding by `size` members at once, and by one model alone."""
  module, _, _ = run.build_train(cfg)
  src = run.decode_source(args, module.config.src_vocab_size)
  example = run.train_batch(cfg, args.seed)
  params = [module.init(jax.random.key(args.seed + i), example["src"], example["tgt_in"])
            ["params"] for i in range(size)]
  stacked = batched.stack(params)
  members = lambda: decoding.search_members(module, stacked, src, args.decode_len, eos_id=-1)
  lone = lambda: decoding.search(module, {"params": params[0]}, src, args.decode_len, eos_id=-1)
  return tuple(run.timed_search(fn, 1, args.decode_repeats)[1]["s"] for fn in (members, lone))


def load_config(args, d_model: int):
  """The config at `d_model` (d_ff = 4 d_model; vocabulary sizes the task's where the config
  leaves them to it, as run.load_config does)."""
  return run.load_config(args, **{"model.d_model": d_model, "model.d_ff": 4 * d_model})


def lone_step_seconds(args, cfg) -> float:
  """Median seconds of the lone jitted train step (benchmarks.run's train stage)."""
  return run.bench_train(args, cfg)[0]["train_step_s"]


def main(argv=None) -> dict[str, Any]:
  parser = run.build_parser(__doc__.split("\n\n")[0])
  parser.set_defaults(config=ABLATION)
  parser.add_argument("--sizes", default="1,2,5,10", help="runs per batched step, N")
  parser.add_argument("--d_models", default="64", help="model widths (d_ff = 4 d_model)")
  args = run.parse_args(argv, parser)
  threefry.unroll_on_cpu()   # as `encdec train` does on CPU
  results = []
  for d_model in [int(d) for d in args.d_models.split(",")]:
    cfg = load_config(args, d_model)
    lone = lone_step_seconds(args, cfg)
    for size in [int(n) for n in args.sizes.split(",")]:
      print(f"[bench] d_model {d_model}, N={size} ...", file=sys.stderr, flush=True)
      seconds = step_seconds(args, cfg, size)
      decode_s, lone_decode_s = decode_seconds(args, cfg, size)
      results.append({"d_model": d_model, "runs": size, "step_s": seconds, "lone_step_s": lone,
                      "runs_per_hour_ratio": size * lone / seconds, "decode_s": decode_s,
                      "lone_decode_s": lone_decode_s,
                      "decode_ratio": size * lone_decode_s / decode_s})
  out = {"benchmark": "encdec batched runs", "config": args.config, "steps": args.steps,
         **run.environment(), "results": results}
  print("| d_model | N | batched step (s) | lone step (s) | runs/hour vs one at a time | "
        "batched greedy decoding (s) | lone (s) | decoding vs one at a time |")
  print("|---|---|---|---|---|---|---|---|")
  for r in results:
    print(f"| {r['d_model']} | {r['runs']} | {r['step_s']:.4f} | {r['lone_step_s']:.4f} | "
          f"{r['runs_per_hour_ratio']:.2f}× | {r['decode_s']:.4f} | {r['lone_decode_s']:.4f} | "
          f"{r['decode_ratio']:.2f}× |")
  if args.json:
    run.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
