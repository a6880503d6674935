"""encdec and the PyTorch peer timed turn about, with the GEMM rates each reaches on this machine
and where each spends its step.

    python -m benchmarks.interleaved --json benchmarks/results-interleaved-cpu-DATE.json \
        [--rounds 5] [--steps 3] [--quick]

A ratio of two systems timed minutes apart on a shared host moves with the host: one slow
moment on either side and the ratio swings by 30%. Here both stay loaded (encdec in this process,
the peer `benchmarks/peers/torch_transformer.py --serve` in a subprocess) and take turns:
round r times `--steps` steps of one, then of the other, the order alternating (A B, B A, ...),
so drift hits both. Stages:

1. **GEMM rates**: float32 [m, k] @ [k, n] by XLA (jitted, this process) and by torch (the peer)
   at the train step's shapes (QKV, MLP in and out, logits; M = batch × target length) and at
   1024³ and 2048³, interleaved over the rounds; each round keeps its best of `--gemm_repeats`.
2. **Train steps, interleaved**: per system the median step over rounds and the spread of the
   round medians; the ratio encdec ÷ torch per round and its median.
3. **Per-op profiles**: XLA's from a jax.profiler trace of `--profile_steps` steps (op names
   classed with the compiled HLO: a fusion holding a dot is a GEMM; summed over XLA's worker
   threads), torch's from torch.profiler (self CPU time per aten op, its intra-op threads
   inside). Per class: the seconds and the share of all profiled op time; the markdown shows
   share × the median step, the class's part of the step. encdec's non-GEMM ops are also
   grouped by the JAX operation they come from (ORIGINS: dropout, attention layouts, norms,
   the optimizer, ...).
4. **MFU** of both train steps (analytic model FLOPs, benchmarks/flops.py) against (a) the best
   GEMM rate any library reached here, (b) the CPU's nominal peak (encdec/machine.py:
   cores × FMA lanes × 2 × clock), (c) XLA's own best GEMM.

Takes benchmarks.run's --config/--quick/--layers/--seed. Needs torch (pip install -e '.[peers]').
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any

if __name__ == "__main__" and not __package__:
  sys.exit("run the benchmarks as a module from the repository root: "
           "python -m benchmarks.interleaved")
if __name__ == "__main__":   # as benchmarks.run does: huge pages for XLA's buffers (and the peer's)
  from encdec import hugepages  # pylint: disable=wrong-import-position
  hugepages.reexec_if_wanted()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import flops, run  # noqa: E402
from encdec import machine, threefry  # noqa: E402
from encdec.train import state as state_lib  # noqa: E402

CLASSES = ("matmul", "reduce/softmax", "elementwise", "data movement", "rng/dropout",
           "optimizer", "other")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--json", type=pathlib.Path, help="write the results here")
  p.add_argument("--config", default="bench", help="PATH[:ARG] or a packaged config's NAME[:ARG]")
  p.add_argument("--quick", action="store_true", help="a small model: a smoke test")
  p.add_argument("--layers", type=int, help="layers per side (default: the config's)")
  p.add_argument("--rounds", type=int, default=5, help="turns of each system")
  p.add_argument("--steps", type=int, default=3, help="train steps per turn")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps of each system first")
  p.add_argument("--gemm_repeats", type=int, default=5, help="GEMM calls per shape and turn")
  p.add_argument("--profile_steps", type=int, default=2, help="steps under each profiler")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--peer_timeout", type=int, default=1800, help="seconds per peer command")
  args = p.parse_args(argv)
  if args.layers is None and args.quick:
    args.layers = 2
  return args


# --------------------------------------------------------------------------------- the peer
class TorchPeer:
  """The torch peer process in --serve mode: one JSON reply per command."""

  def __init__(self, cfg, args):
    m = cfg.model
    cmd = [*run.PEER_TORCH, "--serve", "--warmup", str(args.warmup), "--d", str(m.d_model),
           "--layers", str(m.num_encoder_layers), "--heads", str(m.num_heads),
           "--mlp", str(m.d_ff), "--vocab", str(m.tgt_vocab_size),
           "--batch", str(cfg.train.batch_size), "--len", str(cfg.task.max_tgt_len + 1),
           "--dropout", str(m.dropout_rate), "--label_smoothing", str(cfg.train.label_smoothing),
           "--lr", str(cfg.optim.learning_rate), "--clip", str(cfg.optim.grad_clip_norm),
           "--seed", str(args.seed)]
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=run.REPO)
    self.info = self._reply()

  def _reply(self) -> dict[str, Any]:
    for line in self.proc.stdout:
      if line.startswith("{"):
        reply = json.loads(line)
        if "error" in reply:
          raise RuntimeError(f"torch peer: {reply['error']}")
        return reply
    raise RuntimeError(f"the torch peer exited (code {self.proc.wait()}); see its stderr above")

  def ask(self, *words) -> dict[str, Any]:
    self.proc.stdin.write(" ".join(map(str, words)) + "\n")
    self.proc.stdin.flush()
    return self._reply()

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


def torch_blas_dispatch() -> str | None:
  """The BLAS and code path torch's sgemm takes here, as oneMKL reports it (MKL_VERBOSE's first
  line names the instruction set it dispatched to; on AMD CPUs it may name none). None where
  torch's BLAS is not MKL."""
  probe = "import torch; a = torch.randn(64, 64); torch.mm(a, a)"
  proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        env={**os.environ, "MKL_VERBOSE": "1"}, timeout=120, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith("MKL_VERBOSE") and " for " in line:
      return line.removeprefix("MKL_VERBOSE ").split(", Lnx")[0]
  return None


# ------------------------------------------------------------------------------------ GEMMs
def gemm_shapes(cfg) -> dict[str, tuple[int, int, int]]:
  """(m, k, n) of the train step's big matmuls (M = target tokens per batch), and squares."""
  m = cfg.model
  tokens = cfg.train.batch_size * (cfg.task.max_tgt_len + 1)
  return {"qkv": (tokens, m.d_model, 3 * m.d_model), "mlp_in": (tokens, m.d_model, m.d_ff),
          "mlp_out": (tokens, m.d_ff, m.d_model), "logits": (tokens, m.d_model,
                                                              m.tgt_vocab_size),
          "square_1024": (1024, 1024, 1024), "square_2048": (2048, 2048, 2048)}


def xla_gemm_seconds(shape: tuple[int, int, int], repeats: int) -> float:
  """Best seconds of XLA's jitted float32 [m, k] @ [k, n] over `repeats` calls."""
  m, k, n = shape
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), jnp.float32)
  b = jax.random.normal(kb, (k, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  return min(run.timed(lambda: matmul(a, b), repeats))


def gemm_rates(cfg, peer: TorchPeer, args) -> dict[str, Any]:
  """Per shape and library, the GFLOP/s of each round (best call of the round), interleaved."""
  rates: dict[str, dict[str, list[float]]] = {}
  for shape_name, shape in gemm_shapes(cfg).items():
    work = 2.0 * shape[0] * shape[1] * shape[2]
    rates[shape_name] = {"shape": list(shape), "xla": [], "torch": []}
    for r in range(args.rounds):
      order = ("xla", "torch") if r % 2 == 0 else ("torch", "xla")
      for lib in order:
        seconds = (xla_gemm_seconds(shape, args.gemm_repeats) if lib == "xla"
                   else peer.ask("gemm", *shape, args.gemm_repeats)["gemm_s"])
        rates[shape_name][lib].append(work / seconds / 1e9)
  return rates


# ------------------------------------------------------------------------------- train steps
def interleaved_steps(cfg, peer: TorchPeer, args) -> tuple[dict[str, Any], Any]:
  """Round medians of each system's step seconds, the ratio per round; (results, encdec step
  closure for the profiler)."""
  module, tx, train_step = run.build_train(cfg)
  batch = jax.device_put(run.train_batch(cfg, args.seed))
  rng = jax.random.key(args.seed)
  state = state_lib.create(module, tx, jax.random.key(args.seed), batch["src"], batch["tgt_in"])
  compiled, _ = run.compile_train_step(train_step, state, batch, rng)
  holder = {"state": state}

  def encdec_steps(count: int) -> list[float]:
    times, holder["state"], _ = run.timed_steps(compiled, holder["state"], [batch] * count,
                                                rng, 0)
    return times

  encdec_steps(args.warmup)
  rounds: dict[str, list[float]] = {"encdec": [], "torch": []}
  for r in range(args.rounds):
    order = ("encdec", "torch") if r % 2 == 0 else ("torch", "encdec")
    for system in order:
      times = (encdec_steps(args.steps) if system == "encdec"
               else peer.ask("train", args.steps)["step_s"])
      rounds[system].append(statistics.median(times))
  ratios = [t / e for e, t in zip(rounds["encdec"], rounds["torch"])]
  out = {"step_s_rounds": rounds, "speed_ratio_rounds": ratios,
         "speed_ratio_median": statistics.median(ratios),
         "speed_ratio_min": min(ratios), "speed_ratio_max": max(ratios)}
  for system, values in rounds.items():
    out[f"{system}_step_s_median"] = statistics.median(values)
    out[f"{system}_step_s_spread"] = [min(values), max(values)]
  return out, (compiled, batch, rng, holder)


# --------------------------------------------------------------------------------- profiles
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*? ([a-z][a-z0-9\-]*)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def hlo_op_classes(hlo_text: str) -> dict[str, str]:
  """Instruction name --> class (CLASSES) for a compiled module's HLO text: an op is a matmul
  when it is a dot or calls a computation holding one (fusions, library calls), else classed
  by what it or its fused computation does."""
  computations: dict[str, list[str]] = collections.defaultdict(list)
  calls: dict[str, str] = {}
  opcode: dict[str, str] = {}
  current = ""
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, op = match.groups()
    computations[current].append(op)
    opcode[name] = op
    called = _CALLS.search(line)
    if called:
      calls[name] = called.group(1)

  return {name: classify_xla_ops(name, set(computations[calls[name]]) if name in calls
                                 else {op})
          for name, op in opcode.items()}


_OP_NAME = re.compile(r'op_name="([^"]+)"')


def hlo_op_sources(hlo_text: str) -> dict[str, str]:
  """Instruction name --> the JAX operation it was lowered from (its op_name metadata, the
  jit(...)/ prefix dropped)."""
  sources = {}
  for line in hlo_text.splitlines():
    match, source = _INSTRUCTION.match(line), _OP_NAME.search(line)
    if match and source:
      sources[match.group(1)] = source.group(1).split("/", 1)[-1]
  return sources


def classify_xla_ops(name: str, ops: set[str]) -> str:
  if {"dot", "convolution"} & ops or (not ops and re.search(r"dot|gemm|matmul", name)):
    return "matmul"
  if {"rng", "rng-bit-generator", "rng-get-and-update-state"} & ops or "threefry" in name:
    return "rng/dropout"
  if {"reduce", "reduce-window"} & ops:
    return "reduce/softmax"
  if ops <= {"copy", "transpose", "bitcast", "reshape", "broadcast", "slice", "concatenate",
             "dynamic-slice", "dynamic-update-slice", "pad", "gather", "scatter", "tuple",
             "get-tuple-element", "parameter", ""}:
    return "data movement"
  return "elementwise"


# Where encdec's non-GEMM op time comes from: the first pattern matching the JAX operation an op
# was lowered from (its op_name). The optimizer's ops carry a bare primitive name ("add", "div"):
# optax's update runs outside the model's named scopes.
ORIGINS = (
    ("dropout and ReLU masks (forward and backward)", r"Dropout|dropout|mlp/select_n"),
    ("norms", r"/norm/|final_norm"),
    ("attention layouts (QKV slices, head transposes)",
     r"qkv|attention.*(squeeze|slice|transpose|reshape|pad|add_any|->)"),
    ("attention masks", r"attention.*select_n"),
    ("attention softmax", r"attention.*/(div|reduce_max|reduce_sum|exp|sub)"),
    ("tied output projection", r"tgt_embed|decoder/div"),
    ("parameter layout copies", r"^state\.params"),
    ("optimizer (AdamW, clipping)", r"^(add|div|mul|multiply|sqrt|rsqrt|sub|subtract|select)$"),
    ("positions", r"/positions/"),
    ("residual adds", r"_residual/add$"),
)


def origin(source: str) -> str:
  """The ORIGINS name for an op lowered from JAX operation `source`, else "other"."""
  return next((name for name, pattern in ORIGINS if re.search(pattern, source)), "other")


def non_gemm_by_origin(per_op: dict[str, float], classes: dict[str, str],
                       sources: dict[str, str]) -> dict[str, Any]:
  """{origin: (seconds per step, share of all profiled op time)} over the ops that are not
  GEMMs, largest first."""
  total = sum(per_op.values())
  seconds = collections.Counter()
  for op, s in per_op.items():
    if classes.get(op) != "matmul":
      seconds[origin(sources.get(op, op))] += s
  return {name: [s, s / total] for name, s in seconds.most_common()}


def xla_profile(compiled, batch, rng, holder, steps: int) -> dict[str, Any]:
  """Seconds per op class (summed over XLA's worker threads) over `steps` traced steps."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  classes = hlo_op_classes(compiled.as_text())
  per_op: collections.Counter = collections.Counter()
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        holder["state"], metrics = compiled(holder["state"], batch, rng)
        jax.block_until_ready(metrics)
    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    data = ProfileData.from_file(path)
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          stats = dict(event.stats)
          if "hlo_op" in stats:
            per_op[stats["hlo_op"]] += event.duration_ns / 1e9 / steps
  sources = hlo_op_sources(compiled.as_text())
  summary = summarise_ops(per_op, lambda op: classes.get(op, "other"), sources)
  summary["non_gemm_by_origin"] = non_gemm_by_origin(per_op, classes, sources)
  return summary


_TORCH_CLASSES = (
    ("matmul", r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_addmm|addbmm)$|attention"),
    ("rng/dropout", r"dropout|bernoulli|uniform|rand"),
    ("reduce/softmax", r"softmax|sum|mean|norm|logsumexp|max|cross_entropy|nll"),
    ("optimizer", r"Optimizer|_foreach|adam|zero_grad|clip"),
    ("data movement", r"copy|clone|contiguous|transpose|permute|cat|view|reshape|index|"
                      r"embedding|empty|expand|select|slice|as_strided|t$|stack|fill|zero"),
)


def classify_torch_op(name: str) -> str:
  for cls, pattern in _TORCH_CLASSES:
    if re.search(pattern, name):
      return cls
  return "elementwise" if name.startswith("aten::") else "other"


def summarise_ops(per_op: dict[str, float], classify, sources: dict[str, str] | None = None
                  ) -> dict[str, Any]:
  """{class: seconds per step}, shares, the total, and the slowest ops (overall and per class;
  XLA's labelled with the JAX operation they come from, `sources`)."""
  by_class = collections.Counter()
  for op, seconds in per_op.items():
    by_class[classify(op)] += seconds
  ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
  total = sum(per_op.values())
  label = lambda op: f"{op} ({sources[op]})" if sources and op in sources else op
  return {"seconds_per_step_by_class": {c: by_class.get(c, 0.0) for c in CLASSES},
          "share_by_class": {c: by_class.get(c, 0.0) / total for c in CLASSES},
          "seconds_per_step_total": total,
          "top_ops": [[label(op), seconds, classify(op)] for op, seconds in ranked[:10]],
          "top_ops_by_class": {c: [[label(op), seconds] for op, seconds in ranked
                                   if classify(op) == c][:6] for c in CLASSES}}


def torch_profile(peer: TorchPeer, steps: int) -> dict[str, Any]:
  per_op = {op: s / steps for op, s in peer.ask("profile", steps)["op_self_s"].items()}
  return summarise_ops(per_op, classify_torch_op)


# ------------------------------------------------------------------------------------ report
def mfu_table(r: dict[str, Any]) -> dict[str, Any]:
  """MFU of each system against the best GEMM here, the nominal peak and XLA's best GEMM."""
  best = {lib: max(max(v[lib]) for v in r["gemm_gflops"].values()) * 1e9
          for lib in ("xla", "torch")}
  peaks = {"best_gemm": max(best.values()), "nominal": r.get("nominal_peak_flops"),
           "xla_gemm": best["xla"]}
  out = {"peak_flops": peaks, "best_gemm_by_library_flops": best}
  for system in ("encdec", "torch"):
    rate = r["train_flops_per_step"] / r[f"{system}_step_s_median"]
    out[f"{system}_model_flops_per_s"] = rate
    for peak_name, peak in peaks.items():
      out[f"{system}_mfu_vs_{peak_name}"] = rate / peak if peak else None
  return out


def markdown(r: dict[str, Any]) -> str:
  def pct(x):
    return "n/a" if x is None else f"{x:.0%}"
  lines = [f"{r['cpu_model']} ({r.get('cpu_vendor')} {r.get('cpu_family_model')}; "
           f"{r.get('cpu_isa')}), {r['cpu_count']} CPUs; jax {r['jax_version']}, torch "
           f"{r.get('peer_torch_version')} (BLAS: {r.get('torch_blas_dispatch')}); XLA_FLAGS "
           f"'{r.get('xla_flags', '')}'; {r['rounds']} rounds × {r['steps']} steps",
           "", "| GEMM (m, k, n) | XLA GFLOP/s median [min, max] | torch GFLOP/s median [min, max] |",
           "|---|---|---|"]
  for name, v in r["gemm_gflops"].items():
    cells = [f"{statistics.median(v[lib]):.0f} [{min(v[lib]):.0f}, {max(v[lib]):.0f}]"
             for lib in ("xla", "torch")]
    lines.append(f"| {name} {tuple(v['shape'])} | {cells[0]} | {cells[1]} |")
  lines += ["", "| train step | median s [min, max of rounds] | MFU vs best GEMM | vs nominal | "
            "vs XLA GEMM |", "|---|---|---|---|---|"]
  for system in ("encdec", "torch"):
    lo, hi = r[f"{system}_step_s_spread"]
    lines.append(f"| {system} | {r[f'{system}_step_s_median']:.3f} [{lo:.3f}, {hi:.3f}] | "
                 f"{pct(r[f'{system}_mfu_vs_best_gemm'])} | {pct(r[f'{system}_mfu_vs_nominal'])} "
                 f"| {pct(r[f'{system}_mfu_vs_xla_gemm'])} |")
  lines += ["", f"encdec ÷ torch speed: median {r['speed_ratio_median']:.2f}× (rounds "
            f"{', '.join(f'{x:.2f}' for x in r['speed_ratio_rounds'])})", "",
            "| op class: seconds of the step (share of profiled op time) | encdec | torch |",
            "|---|---|---|"]
  for cls in CLASSES:
    cells = [f"{r[f'{system}_step_s_median'] * share:.3f} ({share:.0%})" for system in
             ("encdec", "torch") for share in [r[f"profile_{system}"]["share_by_class"][cls]]]
    lines.append(f"| {cls} | {cells[0]} | {cells[1]} |")
  lines += ["", "| encdec's non-GEMM op time by origin | seconds of the step | share |",
            "|---|---|---|"]
  for name, (_, share) in r["profile_encdec"]["non_gemm_by_origin"].items():
    lines.append(f"| {name} | {r['encdec_step_s_median'] * share:.3f} | {share:.1%} |")
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  threefry.unroll_on_cpu()
  cfg = run.load_config(args)
  r: dict[str, Any] = {"benchmark": "interleaved", "config": args.config, "quick": args.quick,
                       "rounds": args.rounds, "steps": args.steps,
                       "layers": cfg.model.num_encoder_layers, "d_model": cfg.model.d_model}
  r.update(run.environment())
  r.update(machine.nominal_peak())
  batch = run.train_batch(cfg, args.seed)
  b, s, t = batch["src"].shape[0], batch["src"].shape[1], batch["tgt_in"].shape[1]
  r["train_flops_per_step"] = flops.train_flops(cfg.model, b, s, t)
  print("[interleaved] starting the torch peer ...", file=sys.stderr, flush=True)
  peer = TorchPeer(cfg, args)
  r["peer_torch_version"], r["peer_torch_threads"] = peer.info["torch"], peer.info["threads"]
  r["torch_blas_dispatch"] = torch_blas_dispatch()
  try:
    print("[interleaved] GEMM rates ...", file=sys.stderr, flush=True)
    r["gemm_gflops"] = gemm_rates(cfg, peer, args)
    print("[interleaved] train steps, turn about ...", file=sys.stderr, flush=True)
    steps, encdec_handles = interleaved_steps(cfg, peer, args)
    r.update(steps)
    print("[interleaved] profiles ...", file=sys.stderr, flush=True)
    r["profile_encdec"] = xla_profile(*encdec_handles, args.profile_steps)
    r["profile_torch"] = torch_profile(peer, args.profile_steps)
  finally:
    peer.close()
  r.update(mfu_table(r))
  return run.emit(r, markdown(r), args.json)


if __name__ == "__main__":
  main()
