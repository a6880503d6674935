"""encdec benchmarks: train throughput and MFU, decode speed vs a baseline, compile time, peers.

    python -m benchmarks.run --json bench.json [--peers] [--quick]    # from the repository root

A module of the repository's `benchmarks` package (not installed with encdec): run it with
`python -m` from the root of a checkout, which puts the checkout on sys.path; no path is edited.

Runs on the bench config (encdec/configs/bench.py) on the first JAX device and writes one JSON
object (see benchmarks/README.md for every key) plus a markdown summary on stdout. Stages, in order:
matmul peak, train step, decoding (encdec greedy / beam 4, and the baseline decoder of
benchmarks/baseline_decoder.py), train-step compile time at two depths, real G2P batches padded
and packed, the PyTorch peer (benchmarks/peers/torch_transformer.py).
Timings are wall-clock medians after warm-up, compilation excluded. Never used by tests for
timing assertions.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:
  sys.exit(f"run the benchmarks as a module from the repository root: cd {REPO} && "
           f"python -m benchmarks.run {' '.join(sys.argv[1:])}".rstrip())
if __name__ == "__main__":   # as `encdec` does: huge pages for XLA's buffers (and the peer's)
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402

from benchmarks import baseline_decoder, flops  # noqa: E402
from encdec import assembly, config as config_lib  # noqa: E402
from encdec import decoding, machine, threefry  # noqa: E402
from encdec.data import pipeline, tasks  # noqa: E402
from encdec import model as model_lib  # noqa: E402
from encdec.train import optim  # noqa: E402
from encdec.train import state as state_lib  # noqa: E402
from encdec.train import step as step_lib  # noqa: E402

# The PyTorch peer, run as a module of this package from the repository root (benchmarks/peers/).
PEER_TORCH = (sys.executable, "-m", "benchmarks.peers.torch_transformer")
PACKING_CONFIG = "g2p_cmudict"
FIRST_REAL_TOKEN = 4  # 0 PAD, 1 BOS, 2 EOS, 3 UNK
# --quick: a small model and few steps, for a smoke test of every stage.
QUICK_MODEL = {"model.d_model": 64, "model.num_heads": 4, "model.d_ff": 128,
               "model.src_vocab_size": 512, "model.tgt_vocab_size": 512}


def build_parser(description: str = __doc__.split("\n\n")[0]) -> argparse.ArgumentParser:
  """The benchmarks' shared flags (other benchmark modules add their own to it)."""
  p = argparse.ArgumentParser(description=description,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--json", type=pathlib.Path, help="write the results here")
  p.add_argument("--config", default="bench", help="PATH[:ARG] or a packaged config's NAME[:ARG]")
  p.add_argument("--quick", action="store_true",
                 help="smoke test: tiny model, 2 layers, few steps, short decodes")
  p.add_argument("--peers", action="store_true",
                 help="also run the PyTorch peer, benchmarks/peers/torch_transformer.py (needs "
                      "torch: pip install -e '.[peers]')")
  p.add_argument("--layers", type=int, help="layers per side (default: the config's; quick: 2)")
  p.add_argument("--steps", type=int, help="timed train steps (default 10; quick 3)")
  p.add_argument("--warmup", type=int, help="untimed train steps first (default 2; quick 1)")
  p.add_argument("--decode_batch", type=int, default=8, help="sources per decode call")
  p.add_argument("--decode_len", type=int, help="decode steps and source length (default 64; "
                 "quick 16)")
  p.add_argument("--decode_repeats", type=int, help="timed decode calls (default 3; quick 1)")
  p.add_argument("--compile_layers", help="two depths for compile time (default 6,24; quick 1,4)")
  p.add_argument("--peak_size", type=int,
                 help="matmul size for the peak (default 2048 on CPU, 8192 else; quick 512)")
  p.add_argument("--peak_repeats", type=int, default=8,
                 help="best of this many matmuls (measured before and after the train stage)")
  p.add_argument("--packing_config", default=PACKING_CONFIG,
                 help="real data for the packing stage: PATH[:ARG] (its model and batch size)")
  p.add_argument("--no_packing", action="store_true", help="skip the packing stage")
  p.add_argument("--flax_wmt", type=pathlib.Path,
                 help="the examples/wmt directory of a google/flax checkout: time its beam "
                      "search against encdec's, turn about (benchmarks/peers/flax_wmt.py)")
  p.add_argument("--peer_steps", type=int, help="timed peer steps (default: --steps)")
  p.add_argument("--peer_timeout", type=int, default=1800, help="seconds per peer run")
  p.add_argument("--seed", type=int, default=0)
  return p


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
  """`parser` (default: build_parser()) applied to argv, with the --quick-dependent defaults."""
  p = parser or build_parser()
  args = p.parse_args(argv)
  quick = args.quick
  defaults = dict(steps=3 if quick else 10, warmup=1 if quick else 2,
                  decode_len=16 if quick else 64, decode_repeats=1 if quick else 3,
                  compile_layers="1,4" if quick else "6,24")
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.layers is None and quick:
    args.layers = 2
  if args.peak_size is None:
    args.peak_size = 512 if quick else (2048 if jax.default_backend() == "cpu" else 8192)
  args.peer_steps = args.peer_steps or args.steps
  args.compile_layers = [int(x) for x in args.compile_layers.split(",")]
  if len(args.compile_layers) != 2:
    p.error("--compile_layers takes two depths, e.g. 6,24")
  return args


# ----------------------------------------------------------------------------------- helpers
def load_config(args, layers: int | None = None, **extra):
  overrides = dict(QUICK_MODEL) if args.quick else {}
  layers = layers if layers is not None else args.layers
  if layers is not None:
    overrides.update({"model.num_encoder_layers": layers, "model.num_decoder_layers": layers})
  overrides.update(extra)                      # a caller's own settings win over --layers
  return with_task_vocabulary(config_lib.load(args.config, overrides))


def with_task_vocabulary(cfg):
  """`cfg` (set in place) with vocabulary sizes the model can be built with: a config that takes
  them from its task (0, as the study configs do) gets the task's (the benchmark feeds random
  tokens, so nothing else of the task is used)."""
  if cfg.model.src_vocab_size and cfg.model.tgt_vocab_size:
    return cfg
  values = assembly.model_config(cfg.model, tasks.build(cfg.task))
  cfg.model.src_vocab_size = values["src_vocab_size"]
  cfg.model.tgt_vocab_size = values["tgt_vocab_size"]
  return cfg


def random_tokens(rng: np.random.Generator, shape, vocab: int) -> np.ndarray:
  """Real tokens only (ids >= 4: no PAD, BOS, EOS or UNK), int32."""
  return rng.integers(FIRST_REAL_TOKEN, vocab, size=shape, dtype=np.int32)


def train_batch(cfg, seed: int, lengths: tuple[int, int] | None = None
                ) -> dict[str, np.ndarray]:
  """Random tokens in the config's batch shape; `lengths` (S, T) replaces its lengths."""
  rng = np.random.default_rng(seed)
  s, t = lengths or (cfg.task.max_src_len + 1, cfg.task.max_tgt_len + 1)
  b = cfg.train.batch_size
  return {"src": random_tokens(rng, (b, s), cfg.model.src_vocab_size),
          "tgt_in": random_tokens(rng, (b, t), cfg.model.tgt_vocab_size),
          "tgt_out": random_tokens(rng, (b, t), cfg.model.tgt_vocab_size)}


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def device_memory() -> dict[str, float]:
  """The device allocator's statistics in MB where the backend has them (GPU, TPU)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
  return {f"device_{k.replace('bytes', 'mb')}": stats[k] / 2**20 for k in keys if k in stats}


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall-clock seconds of `repeats` calls of fn (each waited for to the end)."""
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - start)
  return out


def environment() -> dict[str, Any]:
  device = jax.devices()[0]
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "platform": device.platform, "device_kind": device.device_kind,
      "device_count": jax.device_count(), "jax_version": jax.__version__,
      "jaxlib_version": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
      "flax_version": flax.__version__, "python_version": platform.python_version(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "cpu_model": machine.cpu_model(), **machine.cpu_isa(),
      "load_avg_1m": os.getloadavg()[0],
      "matmul_precision": str(jax.config.jax_default_matmul_precision),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _version(package: str) -> str | None:
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return metadata.version(package)
  except Exception:  # pylint: disable=broad-except
    return None


# ------------------------------------------------------------------------------------ stages
def matmul_peak(size: int, repeats: int) -> dict[str, Any]:
  """The device's float32 matmul rate: best of `repeats` jitted [size, size] @ [size, size]."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), jnp.float32)
  b = jax.random.normal(kb, (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))                      # compile + warm up
  best = min(timed(lambda: matmul(a, b), repeats))
  return {"matmul_peak_flops": 2.0 * size**3 / best, "matmul_peak_size": size,
          "matmul_peak_best_s": best}


def build_train(cfg, task=None):
  """(module, tx, jitted train_step) for the config; vocabulary sizes and special ids from
  `task` where one is given (else the config's own)."""
  module = assembly.build_model(cfg, task) if task is not None else model_lib.build(cfg.model)
  tx = optim.optimizer(cfg.optim, cfg.train.num_steps)
  train_step = step_lib.make_train_step(module, tx, optim.schedule(cfg.optim, cfg.train.num_steps),
                                        label_smoothing=cfg.train.label_smoothing)
  return module, tx, train_step


def compile_train_step(train_step, state, batch, rng) -> tuple[Any, dict[str, float]]:
  """Trace/lower and XLA-compile the step; `state` may be abstract (ShapeDtypeStructs)."""
  start = time.perf_counter()
  lowered = train_step.lower(state, batch, rng)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return compiled, {"lower_s": lowered_at - start, "xla_compile_s": done - lowered_at,
                    "compile_s": done - start}


def timed_steps(compiled, state, batches, rng, warmup: int):
  """The compiled train step over `batches` (state donated): (seconds of each step after the
  first `warmup`, final state, last metrics)."""
  step_times, metrics = [], None
  for batch in batches:
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    step_times.append(time.perf_counter() - start)
  return step_times[warmup:], state, metrics


def bench_train(args, cfg) -> tuple[dict[str, Any], Any, Any]:
  """Median step time of the jitted train step; returns (results, module, final params)."""
  module, tx, train_step = build_train(cfg)
  batch = jax.device_put(train_batch(cfg, args.seed))      # resident, like a prefetched batch
  rng = jax.random.key(args.seed)
  state = state_lib.create(module, tx, jax.random.key(args.seed), batch["src"], batch["tgt_in"])
  compiled, times = compile_train_step(train_step, state, batch, rng)

  step_times, state, metrics = timed_steps(compiled, state, [batch] * (args.warmup + args.steps),
                                           rng, args.warmup)
  step_s = statistics.median(step_times)

  b, s = batch["src"].shape
  t = batch["tgt_in"].shape[1]
  forward = flops.forward_flops(cfg.model, b, s, t)
  step_flops = flops.train_flops(cfg.model, b, s, t)
  out = {
      "train_batch": b, "train_src_len": s, "train_tgt_len": t,
      "train_steps_timed": args.steps, "train_warmup_steps": args.warmup,
      "train_step_s": step_s, "train_step_s_min": min(step_times),
      "train_step_s_max": max(step_times),
      "train_tgt_tokens_per_s": b * t / step_s,
      "train_compile_s": times["compile_s"], "train_lower_s": times["lower_s"],
      "train_xla_compile_s": times["xla_compile_s"],
      "train_flops_per_step": step_flops,
      "train_flops_breakdown_forward": forward,
      "train_model_tflops_per_s": step_flops / step_s / 1e12,
      "train_final_loss": float(metrics["loss"]),
      "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))),
  }
  out.update(_compiled_stats(compiled))
  return out, module, state.params


def _compiled_stats(compiled) -> dict[str, Any]:
  """XLA's buffer sizes for the compiled step, where the backend reports them."""
  out = {}
  try:
    mem = compiled.memory_analysis()
    for name in ("argument", "output", "temp", "generated_code"):
      value = getattr(mem, f"{name}_size_in_bytes", None)
      if value is not None:
        out[f"train_step_{name}_mb"] = value / 2**20
  except Exception:  # pylint: disable=broad-except
    pass
  return out


def timed_search(fn: Callable[[], Any], generated: int, repeats: int
                 ) -> tuple[np.ndarray, dict[str, float]]:
  """A decoding call's tokens and its timing: `first_call_s` (compile included), `s` (median of
  `repeats` calls) and `tokens_per_s` (`generated` tokens per call: the best hypothesis of each
  source, every step)."""
  start = time.perf_counter()
  tokens = np.asarray(jax.block_until_ready(fn()))          # compile + first call
  first = time.perf_counter() - start
  seconds = statistics.median(timed(fn, repeats))
  return tokens, {"first_call_s": first, "s": seconds, "tokens_per_s": generated / seconds}


def decode_source(args, vocab: int) -> jax.Array:
  """The benchmark's [decode_batch, decode_len] random sources (real tokens only)."""
  rng = np.random.default_rng(args.seed + 1)
  return jnp.asarray(random_tokens(rng, (args.decode_batch, args.decode_len), vocab))


def searches(module, variables, src, steps: int) -> dict[str, Callable[[], Any]]:
  """Greedy and beam-4 search of `module` on `src`, `steps` steps exactly (no EOS ends a row),
  as calls by name: decode_greedy, decode_beam4."""
  return {
      "decode_greedy": lambda: decoding.greedy(module, variables, src, max_len=steps, eos_id=-1),
      "decode_beam4": lambda: decoding.beam_search(module, variables, src, 4, steps, eos_id=-1),
  }


def search_speeds(args, module, params, src) -> dict[str, float]:
  """`decode_greedy_tokens_per_s` and `decode_beam4_tokens_per_s` of encdec's searches on `src`,
  `decode_len` steps exactly, medians of `decode_repeats` calls."""
  calls = searches(module, {"params": params}, src, args.decode_len)
  return {f"{name}_tokens_per_s": timed_search(fn, src.shape[0] * args.decode_len,
                                               args.decode_repeats)[1]["tokens_per_s"]
          for name, fn in calls.items()}


def only(choices, wanted: str, reference: str):
  """The entries of `choices` (names, or a dict by name) that the comma-separated `wanted`
  names, the reference always first; all of them if `wanted` is empty. Exits on unknown names."""
  names = [name for name in wanted.split(",") if name]
  unknown = [name for name in names if name not in choices]
  if unknown:
    sys.exit(f"unknown --only {', '.join(unknown)}; valid: {', '.join(choices)}")
  keep = lambda name: not names or name == reference or name in names
  if isinstance(choices, dict):
    return {name: value for name, value in choices.items() if keep(name)}
  return [name for name in choices if keep(name)]


def bench_decode(args, module, params) -> dict[str, Any]:
  """Greedy and beam-4 decoding, encdec vs the baseline decoder, `decode_len` steps exactly."""
  variables = {"params": params}
  baseline = baseline_decoder.baseline_for(module)
  hoistable = baseline_decoder.baseline_for(module, hoistable=True)   # for reference
  src = decode_source(args, module.config.src_vocab_size)
  n, beam = args.decode_len, 4
  runs = {
      **searches(module, variables, src, n),
      **{f"baseline_{name}": fn for name, fn in searches(baseline, variables, src, n).items()},
      "hoistable_baseline_decode_beam4": searches(hoistable, variables, src, n)["decode_beam4"],
  }
  out, tokens = {"decode_batch": args.decode_batch, "decode_src_len": args.decode_len,
                 "decode_steps": n, "decode_beam_size": beam}, {}
  for name, fn in runs.items():
    tokens[name], timing = timed_search(fn, args.decode_batch * n, args.decode_repeats)
    out.update({f"{name}_{key}": value for key, value in timing.items()})
  out["decode_beam4_speedup_vs_baseline"] = (out["decode_beam4_tokens_per_s"]
                                             / out["baseline_decode_beam4_tokens_per_s"])
  out["decode_beam4_speedup_vs_hoistable_baseline"] = (
      out["decode_beam4_tokens_per_s"] / out["hoistable_baseline_decode_beam4_tokens_per_s"])
  out["decode_greedy_speedup_vs_baseline"] = (out["decode_greedy_tokens_per_s"]
                                              / out["baseline_decode_greedy_tokens_per_s"])
  # Same parameters, same search: the tokens should agree (a float tie could rarely flip one).
  for kind in ("greedy", "beam4"):
    a, b = tokens[f"decode_{kind}"], tokens[f"baseline_decode_{kind}"]
    out[f"baseline_{kind}_token_agreement"] = float(np.mean(a == b))
  return out


def bench_flax_wmt(args, module, params) -> dict[str, Any]:
  """Beam-4 decoding tokens/s of encdec and of the Flax WMT example's beam search at the same
  shapes, timed turn about (one call each per round, the order alternating), and their ratio."""
  from benchmarks.peers import flax_wmt  # pylint: disable=import-outside-toplevel
  try:
    models, decode = flax_wmt.load(args.flax_wmt)
  except FileNotFoundError as e:
    return {"peer_flax_wmt_status": f"skipped: {e}"}
  m = module.config
  src = decode_source(args, m.src_vocab_size)
  n, beam = args.decode_len, 4
  theirs = flax_wmt.beam_search(models, decode, vocab=m.tgt_vocab_size, d_model=m.d_model,
                                num_heads=m.num_heads, num_layers=m.num_decoder_layers,
                                d_ff=m.d_ff, src=src, steps=n, beam_size=beam, seed=args.seed)
  ours = searches(module, {"params": params}, src, n)["decode_beam4"]
  calls = {"encdec": ours, "flax_wmt": lambda: theirs(src)}
  for fn in calls.values():
    jax.block_until_ready(fn())                                       # compile + warm up
  rounds: dict[str, list[float]] = {name: [] for name in calls}
  for r in range(max(args.decode_repeats, 3)):
    for name in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
      rounds[name].append(timed(calls[name], 1)[0])
  ratios = [t / e for e, t in zip(rounds["encdec"], rounds["flax_wmt"])]
  generated = args.decode_batch * n
  return {"peer_flax_wmt_status": "ok", "peer_flax_wmt_dir": str(args.flax_wmt),
          "peer_flax_wmt_beam4_s_rounds": rounds["flax_wmt"],
          "peer_flax_wmt_encdec_beam4_s_rounds": rounds["encdec"],
          "peer_flax_wmt_beam4_tokens_per_s": generated / statistics.median(rounds["flax_wmt"]),
          "decode_beam4_speedup_vs_flax_wmt": statistics.median(ratios),
          "decode_beam4_speedup_vs_flax_wmt_rounds": ratios}


def compile_times(args, layers: int) -> dict[str, float]:
  """Trace + XLA compile times of a fresh train step at `layers` per side (abstract state),
  with the layers scanned (`model.scan_layers`), whatever the config trains with."""
  cfg = load_config(args, layers, **{"model.scan_layers": True})
  module, tx, train_step = build_train(cfg)
  batch = train_batch(cfg, args.seed)
  abstract_state = state_lib.abstract_shapes(module, tx, batch["src"], batch["tgt_in"])
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  return compile_train_step(train_step, abstract_state, abstract_batch,
                            jax.random.key(args.seed))[1]


def bench_compile(args) -> dict[str, Any]:
  """Trace + XLA compile time of the train step at two depths (abstract state: no init)."""
  out = {}
  for layers in args.compile_layers:
    times = compile_times(args, layers)
    out[f"compile_s_{layers}_layers"] = times["compile_s"]
    out[f"lower_s_{layers}_layers"] = times["lower_s"]
    out[f"xla_compile_s_{layers}_layers"] = times["xla_compile_s"]
  shallow, deep = args.compile_layers
  out["compile_layers"] = [shallow, deep]
  out["compile_scan_layers"] = True
  out["compile_s_ratio"] = out[f"compile_s_{deep}_layers"] / out[f"compile_s_{shallow}_layers"]
  return out


def bench_compile_cache(args, directory: str) -> dict[str, Any]:
  """The train step compiled twice with JAX's persistent compilation cache in `directory`:
  cold (compiles and writes) and warm (reads), as a resumed run or another seed of a sweep
  would. The cache settings are restored afterwards."""
  options = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = {name: getattr(jax.config, name) for name in options}
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    layers = args.compile_layers[0]
    cold, warm = compile_times(args, layers), compile_times(args, layers)
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()
  return {"compile_cache_layers": layers, "compile_s_cache_cold": cold["compile_s"],
          "compile_s_cache_warm": warm["compile_s"],
          "compile_cache_speedup": cold["compile_s"] / warm["compile_s"]}


def real_batches(cfg, task, pack: bool, count: int) -> list[dict[str, np.ndarray]]:
  """The first `count` training batches of the config's task, packed or padded."""
  batches = pipeline.train_batches(task, cfg.task, batch_size=cfg.train.batch_size,
                                   seed=cfg.train.seed, pack=pack)
  try:
    return [next(batches) for _ in range(count)]
  finally:
    batches.close()


def padding_fraction(batches, key: str, pad_id: int) -> float:
  """Share of the `key` slots of `batches` that hold padding."""
  return float(np.mean(np.concatenate([b[key].ravel() for b in batches]) == pad_id))


def bench_packing(args) -> dict[str, Any]:
  """Real G2P batches, padded to the longest allowed length or packed (several examples per
  row): padding fraction, and *real* target tokens per second of the config's train step."""
  cfg = config_lib.load(args.packing_config)
  task = tasks.build(cfg.task)
  module, tx, train_step = build_train(cfg, task)
  out = {"packing_config": args.packing_config, "packing_batch": cfg.train.batch_size,
         "packing_model_d": cfg.model.d_model}
  for name, pack in (("padded", False), ("packed", True)):
    batches = real_batches(cfg, task, pack, args.warmup + args.steps)
    on_device = [jax.device_put(b) for b in batches]
    state = state_lib.create(module, tx, jax.random.key(args.seed), on_device[0]["src"],
                             on_device[0]["tgt_in"])
    rng = jax.random.key(args.seed)
    compiled, _ = compile_train_step(train_step, state, on_device[0], rng)
    step_times, _, _ = timed_steps(compiled, state, on_device, rng, args.warmup)
    timed_batches = batches[args.warmup:]
    pad_id = module.config.pad_id
    real_tgt = sum(int(np.sum(b["tgt_out"] != pad_id)) for b in timed_batches)
    out[f"{name}_src_padding_fraction"] = padding_fraction(timed_batches, "src", pad_id)
    out[f"{name}_tgt_padding_fraction"] = padding_fraction(timed_batches, "tgt_out", pad_id)
    out[f"{name}_real_tgt_tokens_per_s"] = real_tgt / sum(step_times)
    out[f"{name}_step_s"] = statistics.mean(step_times)
  out["packing_speedup"] = (out["packed_real_tgt_tokens_per_s"]
                            / out["padded_real_tgt_tokens_per_s"])
  return out


# OpenMP's default spin-waiting can slow PyTorch down by orders of magnitude when the cores
# are shared with other processes; the peer runs under each policy and its best counts.
PEER_ENVS = {"default": {}, "omp_passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def run_torch_peer(args, cfg) -> dict[str, Any]:
  """The PyTorch nn.Transformer peer on the same shapes, in a subprocess (best of PEER_ENVS)."""
  if importlib.util.find_spec("torch") is None:
    return {"peer_torch_status": "skipped: torch is not importable in this Python "
                                 f"({sys.executable}); pip install -e '.[peers]' to compare"}
  m = cfg.model
  if m.num_encoder_layers != m.num_decoder_layers or cfg.task.max_src_len != cfg.task.max_tgt_len:
    return {"peer_torch_status": "skipped: the peer takes equal layer counts and lengths"}
  cmd = [*PEER_TORCH, "--steps", str(args.peer_steps), "--warmup", str(args.warmup),
         "--d", str(m.d_model), "--layers", str(m.num_encoder_layers),
         "--heads", str(m.num_heads), "--mlp", str(m.d_ff), "--vocab", str(m.tgt_vocab_size),
         "--batch", str(cfg.train.batch_size), "--len", str(cfg.task.max_tgt_len + 1),
         "--dropout", str(m.dropout_rate), "--label_smoothing", str(cfg.train.label_smoothing),
         "--lr", str(cfg.optim.learning_rate), "--clip", str(cfg.optim.grad_clip_norm),
         "--seed", str(args.seed)]
  runs, errors = {}, []
  for name, extra in PEER_ENVS.items():
    if any(k in os.environ for k in extra):
      continue  # the caller chose this setting already
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO,
                            env={**os.environ, **extra}, timeout=args.peer_timeout)
    except subprocess.TimeoutExpired:
      errors.append(f"{name}: over --peer_timeout={args.peer_timeout}s")
      continue
    result = _last_json_line(proc.stdout)
    if proc.returncode == 0 and result:
      runs[name] = result
    else:
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
      errors.append(f"{name}: exit {proc.returncode}: {tail[0]}")
  if not runs:
    return {"peer_torch_status": "failed: " + "; ".join(errors)}
  best = max(runs, key=lambda k: runs[k]["tgt_tokens_per_s"])
  return {"peer_torch_status": "ok", "peer_torch_runs": runs, "peer_torch_env": best,
          "peer_torch_tgt_tokens_per_s": runs[best]["tgt_tokens_per_s"],
          "peer_torch_step_s": runs[best].get("step_s"),
          "peer_torch_version": runs[best].get("torch"),
          "peer_torch_final_loss": runs[best].get("loss"),
          "peer_torch_threads": runs[best].get("threads")}


def _last_json_line(text: str) -> dict | None:
  for line in reversed(text.splitlines()):
    try:
      value = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(value, dict):
      return value
  return None


# ----------------------------------------------------------------------------------- summary
def summary_table(r: dict[str, Any]) -> str:
  def num(key, fmt="{:,.1f}", scale=1.0):
    return fmt.format(r[key] * scale) if isinstance(r.get(key), (int, float)) else "n/a"

  shallow, deep = r.get("compile_layers", [None, None])
  rows = [
      ("device", f"{r['device_kind']} ({r['platform']}), {r['cpu_count']} CPUs", ""),
      ("model", f"{r['layers']}+{r['layers']} layers, d={r['d_model']}, "
                f"{num('num_params', '{:,.0f}')} params", r["config"]),
      ("train tgt tokens/s", num("train_tgt_tokens_per_s"),
       f"median of {r['train_steps_timed']} steps, {num('train_step_s', '{:.3f}')} s/step"),
      ("train compile (s)", num("train_compile_s", "{:.2f}"), "lower + XLA compile"),
      ("model TFLOP/step", num("train_flops_per_step", "{:.3f}", 1e-12), "analytic, 3 x fwd"),
      ("matmul peak (TFLOP/s)", num("matmul_peak_flops", "{:.3f}", 1e-12),
       f"f32 {r.get('matmul_peak_size')}^2, measured"),
      ("MFU", num("mfu", "{:.1%}"), "model FLOPs / step time / peak"),
      ("decode greedy tokens/s", num("decode_greedy_tokens_per_s"),
       f"baseline {num('baseline_decode_greedy_tokens_per_s')}"),
      ("decode beam4 tokens/s", num("decode_beam4_tokens_per_s"),
       f"baseline {num('baseline_decode_beam4_tokens_per_s')}"),
      ("beam4 speedup vs baseline", num("decode_beam4_speedup_vs_baseline", "{:.2f}x"),
       f"token agreement {num('baseline_beam4_token_agreement', '{:.0%}')}; vs the baseline XLA "
       f"may hoist: {num('decode_beam4_speedup_vs_hoistable_baseline', '{:.2f}x')}"),
      (f"compile {shallow} / {deep} layers (s)",
       f"{num(f'compile_s_{shallow}_layers', '{:.2f}')} / "
       f"{num(f'compile_s_{deep}_layers', '{:.2f}')}",
       f"ratio {num('compile_s_ratio', '{:.2f}')}"),
      ("compile, persistent cache cold / warm (s)",
       f"{num('compile_s_cache_cold', '{:.2f}')} / {num('compile_s_cache_warm', '{:.2f}')}",
       f"{r.get('compile_cache_layers')} layers; {num('compile_cache_speedup', '{:.1f}x')}"),
      ("real G2P target tokens/s, padded / packed",
       f"{num('padded_real_tgt_tokens_per_s')} / {num('packed_real_tgt_tokens_per_s')}",
       f"padding of target slots {num('padded_tgt_padding_fraction', '{:.0%}')} / "
       f"{num('packed_tgt_padding_fraction', '{:.0%}')}; packing "
       f"{num('packing_speedup', '{:.2f}x')}"),
      ("peak RSS (MB)", num("peak_rss_mb", "{:,.0f}"),
       f"after train {num('peak_rss_mb_after_train', '{:,.0f}')}"),
  ]
  if "decode_beam4_speedup_vs_flax_wmt" in r:
    rows.append(("beam4 speedup vs Flax WMT example", num("decode_beam4_speedup_vs_flax_wmt",
                                                         "{:.2f}x"),
                 f"its beam search {num('peer_flax_wmt_beam4_tokens_per_s')} tokens/s; median "
                 "of rounds timed turn about"))
  elif "peer_flax_wmt_status" in r:
    rows.append(("Flax WMT peer", "n/a", r["peer_flax_wmt_status"]))
  if "device_peak_mb_in_use" in r:
    rows.append(("device peak memory (MB)", num("device_peak_mb_in_use", "{:,.0f}"), ""))
  if "peer_torch_tgt_tokens_per_s" in r:
    rows.append(("torch peer tgt tokens/s", num("peer_torch_tgt_tokens_per_s"),
                 f"encdec / torch = {num('train_speed_vs_torch', '{:.2f}x')} "
                 f"(torch {r.get('peer_torch_version')}, {r.get('peer_torch_threads')} threads, "
                 f"env {r.get('peer_torch_env')})"))
  elif "peer_torch_status" in r:
    rows.append(("torch peer", "n/a", r["peer_torch_status"]))
  lines = ["| metric | value | notes |", "|---|---|---|"]
  lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  threefry.unroll_on_cpu()   # as `encdec train` does on CPU: same dropout bits, no hash loop
  cfg = load_config(args)
  r: dict[str, Any] = {"benchmark": "encdec", "quick": args.quick, "config": args.config,
                       "layers": cfg.model.num_encoder_layers,
                       "decoder_layers": cfg.model.num_decoder_layers,
                       "d_model": cfg.model.d_model, "vocab": cfg.model.tgt_vocab_size}
  r.update(environment())

  def stage(name):
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)

  stage(f"matmul peak ({args.peak_size}^2 f32)")
  r.update(matmul_peak(args.peak_size, args.peak_repeats))
  stage(f"train step ({args.warmup} warm-up + {args.steps} timed)")
  train, module, params = bench_train(args, cfg)
  r.update(train)
  # The peak again, after the train stage: one reading can catch the CPU slow (a neighbour, a
  # clock change) and inflate MFU. The higher reading counts (the lower MFU).
  again = matmul_peak(args.peak_size, args.peak_repeats)
  r["matmul_peak_flops_readings"] = [r["matmul_peak_flops"], again["matmul_peak_flops"]]
  if again["matmul_peak_flops"] > r["matmul_peak_flops"]:
    r.update(again)
  r["mfu"] = r["train_flops_per_step"] / r["train_step_s"] / r["matmul_peak_flops"]
  r["peak_rss_mb_after_train"] = peak_rss_mb()
  r.update({f"{k}_after_train": v for k, v in device_memory().items()})
  stage(f"decoding ({args.decode_batch} x {args.decode_len}, greedy and beam 4, + baseline)")
  r.update(bench_decode(args, module, params))
  if args.flax_wmt:
    stage("the Flax WMT example's beam search, turn about with encdec's")
    r.update(bench_flax_wmt(args, module, params))
  del params
  stage(f"compile time at {args.compile_layers} layers")
  r.update(bench_compile(args))
  stage("compile time from the persistent compilation cache (cold, then warm)")
  with tempfile.TemporaryDirectory() as cache:
    r.update(bench_compile_cache(args, cache))
  if not args.no_packing:
    stage(f"real batches, padded and packed ({args.packing_config})")
    r.update(bench_packing(args))
  if args.peers:
    stage("torch peer")
    r.update(run_torch_peer(args, cfg))
    if "peer_torch_tgt_tokens_per_s" in r:
      r["train_speed_vs_torch"] = r["train_tgt_tokens_per_s"] / r["peer_torch_tgt_tokens_per_s"]
  r["peak_rss_mb"] = peak_rss_mb()
  r.update(device_memory())

  return emit(r, summary_table(r), args.json)


def emit(results: dict[str, Any], markdown: str, path: pathlib.Path | None) -> dict[str, Any]:
  """Print a benchmark's markdown, write its results to `path` (if given); return them."""
  print(markdown)
  if path:
    write_json(path, results)
  return results


def write_json(path: pathlib.Path, results: dict[str, Any]) -> None:
  """The results as indented JSON at `path`, whole or not at all (a temporary file, renamed)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
  tmp.replace(path)
  print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  main()
