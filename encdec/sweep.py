"""Sweeps: one run directory per override dict of a config's named sweep.

A config file may define, next to `get_config(arg)`, a dict of sweeps; each returns a list of
dotted override dicts (grid × seeds):

    SWEEPS = {"cross_attention": lambda: sweep.grid(
        seeds=(0, 1, 2), **{"model.cross_attention": ["mha", "mqa", "gqa"]})}

    encdec sweep --config configs/g2p_cmudict.py --sweep cross_attention --workdir runs/xattn

trains each run in WORKDIR/<name> (`cross_attention=mqa.seed=1`) with `encdec train`, whose
final evaluation writes WORKDIR/<name>/eval/<final_split>-<num_steps>.json. A run with that
file is finished and skipped; any other run is (re)started with the same command, which resumes
from its newest checkpoint. WORKDIR/sweep.json records the config, the sweep and each run's
overrides for `encdec report`.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import itertools
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from encdec import config as config_lib
from encdec.config import ConfigError

SEED_KEY = "train.seed"
MANIFEST = "sweep.json"
MAX_NAME_LEN = 100
LAUNCHERS = ("local", "slurm", "tpu_vm")
POLL_S = 0.2

Overrides = dict[str, Any]
SweepFn = Callable[[], list[Overrides]]   # the values of a config file's SWEEPS dict


# ------------------------------------------------------------------------- building sweeps
def grid(seeds: Iterable[int] = (0,), **axes: Sequence[Any]) -> list[Overrides]:
  """Every combination of `axes` (dotted key -> values), each once per seed.

  The first axis varies slowest and the seed fastest; keys keep the order given, then
  `train.seed`. `grid(seeds=(0, 1), **{"model.cross_attention": ["mha", "mqa"]})` -->
  [{cross_attention: mha, seed: 0}, {mha, 1}, {mqa, 0}, {mqa, 1}].
  """
  keys = list(axes)
  return [{**dict(zip(keys, values)), SEED_KEY: seed}
          for values in itertools.product(*(axes[k] for k in keys)) for seed in seeds]


def union(*sweeps: Iterable[Overrides]) -> list[Overrides]:
  """The runs of several sweeps, in order; a run listed twice is kept once (the first)."""
  out, seen = [], set()
  for runs in sweeps:
    for overrides in runs:
      key = _canonical(overrides)
      if key not in seen:
        seen.add(key)
        out.append(dict(overrides))
  return out


def _canonical(overrides: Mapping[str, Any]) -> str:
  return json.dumps(sorted(overrides.items()), default=repr)


# ------------------------------------------------------------------------------- run names
def short_keys(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """Each swept key --> its last component, or the whole dotted key where that is ambiguous."""
  keys = list(dict.fromkeys(k for overrides in runs for k in overrides))
  last = [k.rsplit(".", 1)[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _sanitize(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "_"


def _digest(overrides: Mapping[str, Any]) -> str:
  return hashlib.sha1(_canonical(overrides).encode()).hexdigest()[:8]


def run_name(overrides: Mapping[str, Any], short: Mapping[str, str]) -> str:
  """`cross_attention=mqa.seed=1`: readable, only [A-Za-z0-9._=-], at most MAX_NAME_LEN."""
  if not overrides:
    return "base"
  name = ".".join(f"{_sanitize(short.get(k, k))}={_sanitize(str(v))}"
                  for k, v in overrides.items())
  if len(name) > MAX_NAME_LEN:
    name = f"{name[:MAX_NAME_LEN - 9]}-{_digest(overrides)}"
  return name


def run_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  """A unique, deterministic name per override dict (a hash suffix where names collide)."""
  if len({_canonical(o) for o in runs}) != len(runs):
    raise ConfigError("the sweep lists the same overrides twice; remove the duplicate "
                      "(sweep.union drops them)")
  short = short_keys(runs)
  names = [run_name(o, short) for o in runs]
  return [f"{n[:MAX_NAME_LEN - 9]}-{_digest(o)}" if names.count(n) > 1 else n
          for n, o in zip(names, runs)]


# ----------------------------------------------------------------------- config and runs
def format_value(value: Any) -> str:
  """A value as `--config.KEY=TEXT` text that `config.parse_overrides` reads back as `value`."""
  if isinstance(value, str):
    try:
      ast.literal_eval(value)
    except (ValueError, SyntaxError):
      return value          # a bare word stays readable: mqa
  return repr(value)


def override_args(overrides: Mapping[str, Any]) -> list[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]


def config_module(spec: str):
  """The Python module of config `PATH[:ARG]` (its file is checked by `config.load` first)."""
  path = pathlib.Path(spec.partition(":")[0])
  module_spec = importlib.util.spec_from_file_location(f"encdec_sweep_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def sweep_runs(spec: str, name: str) -> list[Overrides]:
  """The override dicts of sweep `name` in the config's SWEEPS; ConfigError if it has none."""
  config_lib.load(spec)                       # a missing or broken config file: one line
  sweeps: dict[str, SweepFn] = getattr(config_module(spec), "SWEEPS", {})
  if name not in sweeps:
    valid = ", ".join(sorted(sweeps)) or "none (define SWEEPS = {NAME: fn} in the config file)"
    raise ConfigError(f"unknown sweep {name!r} in {spec.partition(':')[0]}; valid: {valid}")
  runs = [dict(o) for o in sweeps[name]()]
  if not runs:
    raise ConfigError(f"sweep {name!r} lists no runs")
  return runs


@dataclasses.dataclass
class Run:
  name: str
  overrides: Overrides        # the sweep's own keys (what names the run)
  workdir: pathlib.Path
  train_args: list[str]       # the `encdec train` arguments
  final_eval: pathlib.Path    # exists once the run is finished

  @property
  def finished(self) -> bool:
    return self.final_eval.exists()


def plan(spec: str, sweep: str, workdir: str | pathlib.Path,
         base_overrides: Mapping[str, Any] | None = None) -> list[Run]:
  """The sweep's runs, every config loaded and validated before anything starts."""
  workdir, base_overrides = pathlib.Path(workdir), dict(base_overrides or {})
  runs = sweep_runs(spec, sweep)
  out = []
  for name, overrides in zip(run_names(runs), runs):
    merged = {**base_overrides, **overrides}
    try:
      cfg = config_lib.load(spec, merged)
    except ConfigError as e:
      raise ConfigError(f"run {name}: {e}") from e
    run_dir = workdir / name
    out.append(Run(name, overrides, run_dir,
                   ["--config", spec, "--workdir", str(run_dir), *override_args(merged)],
                   run_dir / "eval" / f"{cfg.eval.final_split}-{cfg.train.num_steps}.json"))
  return out


def manifest(spec: str, sweep: str, base_overrides: Mapping[str, Any], command: str,
             launcher: str, runs: Sequence[Run]) -> dict[str, Any]:
  """The content of WORKDIR/sweep.json."""
  return {"config": spec, "sweep": sweep, "overrides": dict(base_overrides), "command": command,
          "launcher": launcher, "seed_key": SEED_KEY,
          "runs": {r.name: r.overrides for r in runs}}


def write_manifest(workdir: pathlib.Path, content: Mapping[str, Any]) -> None:
  """Write sweep.json; refuse a workdir that holds another sweep (another config or base)."""
  path = workdir / MANIFEST
  text = json.dumps(content, indent=2, default=repr) + "\n"
  if path.exists():
    old, new = json.loads(path.read_text()), json.loads(text)   # tuples compare as lists
    for key in ("config", "sweep", "overrides"):
      if old.get(key) != new[key]:
        raise ConfigError(f"{path} was written for {key} {old.get(key)!r}, not "
                          f"{new[key]!r}; use another --workdir")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  except OSError as e:
    raise ConfigError(f"cannot write {path}: {e.strerror}") from e


def read_manifest(workdir: str | pathlib.Path) -> dict[str, Any] | None:
  path = pathlib.Path(workdir) / MANIFEST
  return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------- launching
def local_argv(run: Run) -> list[str]:
  """`python -m encdec train ARGS` with this interpreter (independent of PATH)."""
  return [sys.executable, "-m", "encdec", "train", *run.train_args]


COMPILATION_CACHE = "compilation_cache"


def local_env(run: Run) -> dict[str, str]:
  """The environment of a local run: JAX's persistent compilation cache in the sweep directory
  (unless JAX_COMPILATION_CACHE_DIR is set), so seeds and resumed runs, which compile the same
  programs, read them instead of compiling again."""
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(run.workdir.parent / COMPILATION_CACHE))
  return env


def launcher_module(name: str):
  """experiments.launch.<name> from the repository checkout this package lives in."""
  root = pathlib.Path(__file__).resolve().parents[1]
  if not (root / "experiments" / "launch" / f"{name}.py").exists():
    raise ConfigError(f"--launcher {name} needs experiments/launch/{name}.py of a source "
                      "checkout; install encdec with `pip install -e .` from the repository")
  if str(root) not in sys.path:
    sys.path.insert(0, str(root))
  return importlib.import_module(f"experiments.launch.{name}")


def check_launcher_args(launcher: str, launcher_args: Sequence[str]) -> None:
  """Parse the launcher's own flags once, so a mistake stops the sweep before any run."""
  if launcher == "local":
    if launcher_args:
      raise ConfigError("--launcher-args is for --launcher slurm or tpu_vm")
    return
  parser = launcher_module(launcher)._parser()  # pylint: disable=protected-access
  try:
    _, unknown = parser.parse_known_args(list(launcher_args))
  except SystemExit:
    unknown = None
  if unknown is None or unknown:
    raise ConfigError(f"bad --launcher-args {shlex.join(launcher_args)!r} for {launcher}; see "
                      f"python -m experiments.launch.{launcher} --help")


def launcher_argv(launcher: str, launcher_args: Sequence[str], sweep: str, run: Run,
                  sweep_dir: pathlib.Path, dry_run: bool) -> list[str]:
  """The argv of experiments.launch.<launcher>.main for one run (one job per run)."""
  own = list(launcher_args)
  if launcher == "slurm":
    own += ["--job-name", f"{sweep}.{run.name}",
            "--script", str(sweep_dir / "slurm" / f"{run.name}.sbatch"), "--submit"]
  return [*own, *(["--dry-run"] if dry_run else []), "--", *run.train_args]


@dataclasses.dataclass
class Outcome:
  name: str
  status: str   # finished, failed, incomplete (e.g. preempted), not started, submitted
  returncode: int
  seconds: float


def _print(line: str) -> None:
  print(f"[sweep] {line}", flush=True)


def _start(run: Run) -> subprocess.Popen:
  """Start `encdec train` for `run` in its own session (a terminal's Ctrl-C reaches it only
  through the sweep), appending its output to WORKDIR/<name>/train.log."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  with (run.workdir / "train.log").open("a") as log:
    proc = subprocess.Popen(local_argv(run), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=local_env(run))
  _print(f"start {run.name} (log: {run.workdir / 'train.log'})")
  return proc


def run_local(runs: Sequence[Run], jobs: int) -> list[Outcome]:
  """Run up to `jobs` `encdec train` processes at once; output to WORKDIR/<name>/train.log.

  SIGTERM / SIGINT stop new runs from starting and are passed on to the running ones, which
  save a checkpoint and exit (the next `encdec sweep` resumes them).
  """
  pending, running, outcomes, stopping = list(runs), {}, [], []

  def stop(signum, frame):  # pylint: disable=unused-argument
    stopping.append(signum)
    _print(f"{signal.Signals(signum).name}: no new runs; stopping the {len(running)} running")
    for proc, _, _ in running.values():
      if proc.poll() is None:
        proc.send_signal(signum)

  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while running or (pending and not stopping):
      while pending and len(running) < jobs and not stopping:
        run = pending.pop(0)
        running[run.name] = (_start(run), run, time.monotonic())
      for name, (proc, run, start) in list(running.items()):
        if proc.poll() is None:
          continue
        del running[name]
        code = proc.returncode
        status = "failed" if code else ("finished" if run.finished else "incomplete")
        outcomes.append(Outcome(name, status, code, time.monotonic() - start))
        failed = sum(o.status != "finished" for o in outcomes)
        _print(f"{len(outcomes)}/{len(runs)} done, {failed} failed or incomplete: {name} "
               f"{status}" + (f" (exit {code})" if code else "") +
               f" in {outcomes[-1].seconds:.0f}s")
      time.sleep(POLL_S)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  outcomes += [Outcome(r.name, "not started", 0, 0.0) for r in pending]
  return outcomes


def run_launcher(launcher: str, launcher_args: Sequence[str], sweep: str, runs: Sequence[Run],
                 sweep_dir: pathlib.Path, dry_run: bool) -> list[Outcome]:
  """Hand each run to experiments.launch.<launcher>, one after another."""
  main = launcher_module(launcher).main
  outcomes = []
  for i, run in enumerate(runs):
    if launcher == "slurm" and not dry_run:
      (sweep_dir / "slurm").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    code = main(launcher_argv(launcher, launcher_args, sweep, run, sweep_dir, dry_run))
    status = "failed" if code else ("submitted" if launcher == "slurm" or dry_run else
                                    "finished" if run.finished else "incomplete")
    outcomes.append(Outcome(run.name, status, code, time.monotonic() - start))
    if not dry_run:
      _print(f"{i + 1}/{len(runs)} {run.name}: {status}" + (f" (exit {code})" if code else ""))
  return outcomes


def summary(outcomes: Sequence[Outcome], skipped: int) -> tuple[str, bool]:
  """(one line for the end of a sweep, whether every run ended well)."""
  bad = [o for o in outcomes if o.status not in ("finished", "submitted")]
  counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "submitted")}
  parts = [f"{n} {s}" for s, n in counts.items() if n] + [f"{skipped} already finished"]
  line = ", ".join(parts)
  if bad:
    line += "; not finished: " + ", ".join(f"{o.name} ({o.status}"
                                            + (f", exit {o.returncode})" if o.returncode else ")")
                                            for o in bad)
  return line, not bad


def run_sweep(spec: str, sweep: str, workdir: str | pathlib.Path, *,
              base_overrides: Mapping[str, Any] | None = None, jobs: int = 1,
              launcher: str = "local", launcher_args: Sequence[str] = (), dry_run: bool = False,
              command: str = "") -> int:
  """Plan, skip finished runs, run (or print) the rest. Returns the process exit status."""
  if jobs < 1:
    raise ConfigError(f"--jobs must be at least 1, got {jobs}")
  if launcher not in LAUNCHERS:
    raise ConfigError(f"unknown --launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
  if launcher != "local" and jobs != 1:
    raise ConfigError(f"--jobs is for --launcher local; {launcher} runs are handed over one "
                      "at a time")
  check_launcher_args(launcher, launcher_args)
  sweep_dir = pathlib.Path(workdir)
  runs = plan(spec, sweep, sweep_dir, base_overrides)
  todo = [r for r in runs if not r.finished]
  for r in runs:
    if r.finished:
      print(f"[sweep] skip {r.name} (finished: {r.final_eval})",
            file=sys.stderr if dry_run else sys.stdout, flush=True)
  if dry_run:
    if launcher == "local":
      for r in todo:
        print(shlex.join(local_argv(r)))
      return 0
    outcomes = run_launcher(launcher, launcher_args, sweep, todo, sweep_dir, dry_run=True)
    return 1 if any(o.returncode for o in outcomes) else 0
  write_manifest(sweep_dir, manifest(spec, sweep, base_overrides or {}, command, launcher, runs))
  _print(f"{sweep}: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
         f"{len(todo)} to run" + (f" ({jobs} at a time)" if launcher == "local" else ""))
  if launcher == "local":
    outcomes = run_local(todo, jobs)
  else:
    outcomes = run_launcher(launcher, launcher_args, sweep, todo, sweep_dir, dry_run=False)
  line, ok = summary(outcomes, len(runs) - len(todo))
  print(f"[sweep] {sweep}: {line}", file=sys.stdout if ok else sys.stderr, flush=True)
  return 0 if ok else 1


def cli_command(argv: Sequence[str]) -> str:
  """The `encdec sweep ...` line to record in sweep.json."""
  return shlex.join(["encdec", *argv])
