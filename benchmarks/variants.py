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

`--placements all,first,...` compares instead where standard multi-head cross-attention sits
(model.cross_attention_layers), the first placement the reference; `--set KEY=VALUE` overrides
the config for every model compared (e.g. `--set model.num_decoder_layers=6`, the study's
placement arm).

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
from encdec import config as config_lib, model, threefry  # noqa: E402
from encdec.errors import ConfigError  # noqa: E402
from encdec.report import accounting  # noqa: E402

REFERENCE = "mha"
RATIO_KEYS = ("cache_bytes_per_source_token", "decode_greedy_tokens_per_s",
              "decode_beam4_tokens_per_s", "train_tgt_tokens_per_s")


def variants() -> list[str]:
  return [REFERENCE] + sorted(v for v in model.CROSS_ATTENTION if v != REFERENCE)


def compared(placements: str) -> tuple[str, dict[str, dict[str, str]]]:
  """(the config field compared, name -> its overrides, the reference first): every registered
  variant, or with `placements` ("all,first,...") standard multi-head cross-attention in
  those decoder layers (model.cross_attention_layers), the first of them the reference."""
  if placements:
    return "model.cross_attention_layers", {
        p: {"model.cross_attention": REFERENCE, "model.cross_attention_layers": p}
        for p in placements.split(",") if p}
  return "model.cross_attention", {v: {"model.cross_attention": v} for v in variants()}


def prepare(args, overrides: dict[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
  """(the model's costs measured once: cache bytes, parameters, train speed; its searches on
  `decode_batch` random sources of `--src_len` tokens, compiled and called once)."""
  cfg = run.load_config(args, **args.fixed, **overrides,
                        **{"task.max_src_len": max(args.src_len, 1)})
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
  """Each result with `{key}_ratio`s to the first (the reference's)."""
  ref = next(iter(results.values()))
  return {name: {**r, **{f"{k}_ratio": r[k] / ref[k] if ref[k] else None for k in RATIO_KEYS}}
          for name, r in results.items()}


def table(results: dict[str, dict[str, Any]], field: str = "model.cross_attention") -> str:
  ref = f"× {next(iter(results))}"
  lines = [f"| {field.split('.')[-1]} | cache B / source token | {ref} | greedy tok/s | {ref} | "
           f"beam-4 tok/s | {ref} | train tok/s | {ref} | params |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    cells = [f"{r[k]:,.0f} | {r[f'{k}_ratio']:.2f}" if r[f"{k}_ratio"] is not None
             else f"{r[k]:,.0f} | n/a" for k in RATIO_KEYS]
    lines.append(f"| {name} | {' | '.join(cells)} | {r['num_params']:,} |")
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  parser = run.build_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--src_len", type=int, default=256, help="source tokens per decoded source")
  parser.add_argument("--only", default="",
                      help="comma-separated names of those compared (the reference always runs)")
  parser.add_argument("--placements", default="",
                      help="compare these model.cross_attention_layers of standard multi-head "
                           "cross-attention instead of the variants, the first the reference: "
                           "e.g. all,first,last,middle,every:2,every:3")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for every model, e.g. model.num_decoder_layers=6")
  args = run.parse_args(argv, parser)
  try:
    args.fixed = config_lib.parse_overrides(args.set, prefix="")
  except ConfigError as e:
    parser.error(str(e))
  threefry.unroll_on_cpu()
  field, models = compared(args.placements)
  chosen = run.only(models, args.only, next(iter(models)))
  results, calls = {}, {}
  for name, overrides in chosen.items():
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    results[name], calls[name] = prepare(args, overrides)
  print(f"[bench] decoding: {args.decode_repeats} rounds of every model", file=sys.stderr,
        flush=True)
  for name, seconds in decode_rounds(calls, args.decode_repeats).items():
    results[name].update(decode_speeds(args, seconds))
  results = with_ratios(results)
  out = {"benchmark": "encdec cross-attention variants", "quick": args.quick,
         "config": args.config, "compared": field, "overrides": args.fixed,
         "src_len": args.src_len, "decode_batch": args.decode_batch,
         "decode_len": args.decode_len, "steps": args.steps, **run.environment(),
         "variants": results}
  return run.emit(out, table(results, field), args.json)


if __name__ == "__main__":
  main()
