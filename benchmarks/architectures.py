"""Speed of every position scheme and preset on the bench config, as ratios to its own model.

    python -m benchmarks.architectures --json benchmarks/results-architectures.json [--quick]

Takes benchmarks.run's flags (--quick, --steps, --warmup, --decode_len, --decode_batch,
--decode_repeats, --layers, --config, --seed; the others are ignored). For each architecture, one
after another in this process: the train stage of benchmarks/run.py (median step of the jitted
train step on one random batch: `train_tgt_tokens_per_s`, MFU against the matmul peak measured
once at the start) and greedy / beam-4 decoding of `decode_batch` random sources for exactly
`decode_len` steps (`decode_greedy_tokens_per_s`, `decode_beam4_tokens_per_s`). Ratios are to the
bench config as it is (pre-LN, sinusoidal positions, ReLU MLP, tied output), measured first.

Architectures: `model.position_encoding` = each scheme of encdec.model.schema (the rest of the
bench config unchanged), then `model.preset` = each preset (which also sets norms, MLP, biases
and positions). Sizes, batch and vocabulary never change, so the ratios isolate the
architecture's cost.
"""
from __future__ import annotations

import sys
from typing import Any

if __name__ == "__main__" and not __package__:
  sys.exit("run the benchmarks as a module from the repository root: "
           "python -m benchmarks.architectures")
if __name__ == "__main__":   # as benchmarks.run does: huge pages for XLA's buffers
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

from benchmarks import run  # noqa: E402
from encdec import threefry  # noqa: E402
from encdec.model import presets, schema  # noqa: E402

REFERENCE = "bench config"


def architectures() -> dict[str, dict[str, str]]:
  """Name -> the overrides that select it; the reference (no override) first."""
  out = {REFERENCE: {}}
  out.update({f"position_encoding={p}": {"model.position_encoding": p}
              for p in schema.POSITION_ENCODINGS})
  out.update({f"preset={p}": {"model.preset": p} for p in presets.PRESETS})
  return out


def measure(args, overrides: dict[str, str], peak_flops: float) -> dict[str, Any]:
  """Train and decode speed of the bench config with `overrides`."""
  cfg = run.load_config(args, **overrides)
  train, module, params = run.bench_train(args, cfg)
  src = run.decode_source(args, module.config.src_vocab_size)
  out = {key: train[key] for key in ("train_tgt_tokens_per_s", "train_step_s", "train_compile_s",
                                     "train_flops_per_step", "num_params")}
  out["mfu"] = train["train_flops_per_step"] / train["train_step_s"] / peak_flops
  out.update(run.search_speeds(args, module, params, src))
  out["resolved"] = {k: cfg.model[k] for k in ("position_encoding", "norm", "norm_type", "mlp",
                                                "attention_bias", "tie_output")}
  return out


def with_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Each architecture's speeds also as ratios to the reference's."""
  ref = results[REFERENCE]
  keys = ("train_tgt_tokens_per_s", "decode_greedy_tokens_per_s", "decode_beam4_tokens_per_s")
  return {name: {**r, **{f"{k}_ratio": r[k] / ref[k] for k in keys}}
          for name, r in results.items()}


def table(results: dict[str, dict[str, Any]]) -> str:
  """Markdown: one row per architecture."""
  lines = ["| architecture | train tok/s | × ref | MFU | greedy tok/s | × ref | beam-4 tok/s | "
           "× ref | params |", "|---|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    lines.append(
        f"| {name} | {r['train_tgt_tokens_per_s']:,.0f} | "
        f"{r['train_tgt_tokens_per_s_ratio']:.2f} | {r['mfu']:.1%} | "
        f"{r['decode_greedy_tokens_per_s']:,.0f} | {r['decode_greedy_tokens_per_s_ratio']:.2f} | "
        f"{r['decode_beam4_tokens_per_s']:,.0f} | {r['decode_beam4_tokens_per_s_ratio']:.2f} | "
        f"{r['num_params']:,} |")
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  parser = run.build_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--only", default="", help="comma-separated architecture names, e.g. "
                      "position_encoding=rope,preset=t5_v1_1 (the reference always runs)")
  args = run.parse_args(argv, parser)
  threefry.unroll_on_cpu()   # as `encdec train` does on CPU
  env = run.environment()
  peak = run.matmul_peak(args.peak_size, args.peak_repeats)
  chosen = run.only(architectures(), args.only, REFERENCE)
  results = {}
  for name, overrides in chosen.items():
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    results[name] = measure(args, overrides, peak["matmul_peak_flops"])
  results = with_ratios(results)
  out = {"benchmark": "encdec architectures", "quick": args.quick, "config": args.config,
         "steps": args.steps, "decode_batch": args.decode_batch, "decode_len": args.decode_len,
         **env, **peak, "architectures": results}
  return run.emit(out, table(results), args.json)


if __name__ == "__main__":
  main()
