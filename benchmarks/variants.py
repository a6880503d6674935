"""The cost side of the cross-attention study: every registered variant's cache, decode and train
speed on one architecture, as ratios to standard multi-head cross-attention.

    python -m benchmarks.variants --json benchmarks/results-variants.json [--src_len 256] [--quick]

Takes benchmarks.run's flags (--config, --layers, --quick, --steps, --warmup, --decode_batch,
--decode_len, --decode_repeats, --seed). For each variant of encdec.model.CROSS_ATTENTION (`mha`
first), the config with `model.cross_attention` set to it: the K/V cache bytes per source token
(the variant's own account, encdec/report/accounting.py's), greedy and beam-4 decoding of
`decode_batch` random sources of `--src_len` tokens for exactly `decode_len` steps (long sources:
where re-reading a per-source cache costs), and the train stage of benchmarks/run.py (sources of
`--src_len` tokens there too). Variants
that need settings (GQA's K/V heads, latents) take the config's.

Decoding is timed in rounds once every variant is compiled: each round calls every variant's
searches once, in registry order and then reversed in the next round, so a drift of the
machine's speed (a shared host, a warming cache) falls on all variants alike; the speed is the
median over `--decode_repeats` rounds, and each round's seconds are kept in the JSON. A small
model's search takes tens of milliseconds: timed alone, each right after its compilation,
`gated` (mha's work plus a scalar gate) decoded greedily at 1.56x mha's speed on the study
model; in rounds, at 1.00x (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import statistics
import sys
from typing import Any, Callable

if __name__ == "__main__" and not __package__:
  sys.exit("run the benchmarks as a module from the repository root: python -m benchmarks.variants")
if __name__ == "__main__":   # as benchmarks.run does: huge pages for XLA's buffers
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import run  # noqa: E402
from encdec import model, threefry  # noqa: E402
from encdec.report import accounting  # noqa: E402

REFERENCE = "mha"
RATIO_KEYS = ("cache_bytes_per_source_token", "decode_greedy_tokens_per_s",
              "decode_beam4_tokens_per_s", "train_tgt_tokens_per_s")


def variants() -> list[str]:
  return [REFERENCE] + sorted(v for v in model.CROSS_ATTENTION if v != REFERENCE)


def prepare(args, variant: str) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
  """(the variant's costs measured once: cache bytes, parameters, train speed; its searches on
  `decode_batch` random sources of `--src_len` tokens, compiled and called once)."""
  cfg = run.load_config(args, **{"model.cross_attention": variant,
                                 "task.max_src_len": max(args.src_len, 1)})
  train, module, params = run.bench_train(args, cfg)
  rng = np.random.default_rng(args.seed + 1)
  src = run.random_tokens(rng, (args.decode_batch, args.src_len), module.config.src_vocab_size)
  calls = run.searches(module, {"params": params}, src, args.decode_len)
  for fn in calls.values():
    jax.block_until_ready(fn())                        # compile outside the timed rounds
  return ({"cache_bytes_per_source_token": accounting.cache_bytes_per_source_token(cfg),
           "num_params": train["num_params"],
           "train_tgt_tokens_per_s": train["train_tgt_tokens_per_s"]}, calls)


def decode_rounds(calls: dict[str, dict[str, Callable[[], Any]]], rounds: int
                  ) -> dict[str, dict[str, list[float]]]:
  """variant -> search name -> its seconds in each round; the variants are taken in turn,
  forwards in even rounds and backwards in odd ones."""
  seconds = {variant: {name: [] for name in searches} for variant, searches in calls.items()}
  order = list(calls)
  for r in range(rounds):
    for variant in order if r % 2 == 0 else order[::-1]:
      for name, fn in calls[variant].items():
        seconds[variant][name] += run.timed(fn, 1)
  return seconds


def decode_speeds(args, seconds: dict[str, list[float]]) -> dict[str, Any]:
  """`{search}_tokens_per_s` (the median round) and `{search}_s_rounds` of one variant."""
  generated = args.decode_batch * args.decode_len
  out = {}
  for name, times in seconds.items():
    out[f"{name}_tokens_per_s"] = generated / statistics.median(times)
    out[f"{name}_s_rounds"] = times
  return out


def with_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
  ref = results[REFERENCE]
  return {name: {**r, **{f"{k}_ratio": r[k] / ref[k] if ref[k] else None for k in RATIO_KEYS}}
          for name, r in results.items()}


def table(results: dict[str, dict[str, Any]]) -> str:
  lines = ["| variant | cache B / source token | × mha | greedy tok/s | × mha | beam-4 tok/s | "
           "× mha | train tok/s | × mha | params |", "|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    cells = [f"{r[k]:,.0f} | {r[f'{k}_ratio']:.2f}" if r[f"{k}_ratio"] is not None
             else f"{r[k]:,.0f} | n/a" for k in RATIO_KEYS]
    lines.append(f"| {name} | {' | '.join(cells)} | {r['num_params']:,} |")
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  parser = run.build_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--src_len", type=int, default=256, help="source tokens per decoded source")
  parser.add_argument("--only", default="", help="comma-separated variants (mha always runs)")
  args = run.parse_args(argv, parser)
  threefry.unroll_on_cpu()
  chosen = run.only(variants(), args.only, REFERENCE)
  results, calls = {}, {}
  for variant in chosen:
    print(f"[bench] {variant} ...", file=sys.stderr, flush=True)
    results[variant], calls[variant] = prepare(args, variant)
  print(f"[bench] decoding: {args.decode_repeats} rounds of every variant", file=sys.stderr,
        flush=True)
  for variant, seconds in decode_rounds(calls, args.decode_repeats).items():
    results[variant].update(decode_speeds(args, seconds))
  results = with_ratios(results)
  out = {"benchmark": "encdec cross-attention variants", "quick": args.quick,
         "config": args.config, "src_len": args.src_len, "decode_batch": args.decode_batch,
         "decode_len": args.decode_len, "steps": args.steps, **run.environment(),
         "variants": results}
  return run.emit(out, table(results), args.json)


if __name__ == "__main__":
  main()
