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
overrides for `encdec report`. This module plans; encdec/launch/jobs.py runs the runs (local
subprocesses, or one SLURM / TPU VM job per run).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import pathlib
import re
import shlex
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

from encdec import config as config_lib
from encdec.config import ConfigError
from encdec.launch import common as launch_common, jobs as jobs_lib

SEED_KEY, PER_MEMBER_KEYS = config_lib.SEED_KEY, config_lib.PER_MEMBER_KEYS
MANIFEST = "sweep.json"
MAX_NAME_LEN = 100

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
  """The Python module of config `PATH[:ARG]` or `NAME[:ARG]` (encdec.config.load_module)."""
  return config_lib.load_module(spec)


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
  command: str = "train"      # the encdec command that trains it

  @property
  def finished(self) -> bool:
    return self.final_eval.exists()


@dataclasses.dataclass
class BatchRun:
  """Runs of a sweep that differ only in PER_MEMBER_KEYS, trained together by `encdec train-batch`
  (one process, one compiled step; each member writes its own run directory). Its output goes
  to the first member's train.log."""
  members: list[Run]
  train_args: list[str]       # the `encdec train-batch` arguments
  command: str = "train-batch"

  @property
  def name(self) -> str:
    return f"{self.members[0].name}+{len(self.members) - 1}"

  @property
  def workdir(self) -> pathlib.Path:
    return self.members[0].workdir

  @property
  def finished(self) -> bool:
    return all(m.finished for m in self.members)


def batch_runs(runs: Sequence[Run], size: int, spec: str,
               base_overrides: Mapping[str, Any]) -> list[Run | BatchRun]:
  """`runs` with those that differ only in PER_MEMBER_KEYS (train.seed and the per-run
  hyperparameters) joined into BatchRuns of up to `size` members (first-seen order); a run
  without a seed override, or left alone, stays a Run. A batch's members override the same
  per-member keys (`--seeds`, then `--vary KEY=V0,V1,...` of encdec train-batch)."""
  groups: dict[str, list[Run]] = {}
  for run in runs:
    own = sorted(k for k in run.overrides if k in PER_MEMBER_KEYS)
    rest = {k: v for k, v in run.overrides.items() if k not in PER_MEMBER_KEYS}
    key = f"{_canonical(rest)}|{own}" if SEED_KEY in run.overrides else f"alone:{run.name}"
    groups.setdefault(key, []).append(run)
  out: list[Run | BatchRun] = []
  for members in groups.values():
    for start in range(0, len(members), size):
      chunk = members[start:start + size]
      if len(chunk) == 1:
        out.extend(chunk)
        continue
      shared = {**base_overrides, **{k: v for k, v in chunk[0].overrides.items()
                                     if k not in PER_MEMBER_KEYS}}
      workdirs = [arg for m in chunk for arg in ("--workdir", str(m.workdir))]
      out.append(BatchRun(chunk, ["--config", spec, *workdirs, *_member_args(chunk),
                                  *override_args(shared)]))
  return out


def _member_args(members: Sequence[Run]) -> list[str]:
  """`--seeds S0,S1,...`, then `--vary KEY=V0,V1,...` for each other per-member key."""
  keys = sorted((k for k in members[0].overrides if k in PER_MEMBER_KEYS),
                key=lambda k: k != SEED_KEY)
  args = []
  for key in keys:
    values = ",".join(format_value(m.overrides[key]) for m in members)
    args += ["--seeds", values] if key == SEED_KEY else ["--vary", f"{key}={values}"]
  return args


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
                   launch_common.final_eval_path(run_dir, cfg)))
  return out


def manifest(spec: str, sweep: str, base_overrides: Mapping[str, Any], command: str,
             launcher: str, runs: Sequence[Run],
             batches: Sequence[BatchRun] = ()) -> dict[str, Any]:
  """The content of WORKDIR/sweep.json (`batches`: the runs trained together this time)."""
  return {"config": spec, "sweep": sweep, "overrides": dict(base_overrides), "command": command,
          "launcher": launcher, "seed_key": SEED_KEY,
          "runs": {r.name: r.overrides for r in runs},
          "batches": [[m.name for m in b.members] for b in batches]}


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


# ----------------------------------------------------------------------------- the sweep
def run_sweep(spec: str, sweep: str, workdir: str | pathlib.Path, *,
              base_overrides: Mapping[str, Any] | None = None, jobs: int = 1,
              launcher: str = "local", launcher_args: Sequence[str] = (), dry_run: bool = False,
              command: str = "", batch: int = 1) -> int:
  """Plan, skip finished runs, run (or print) the rest (encdec.launch.jobs runs them), runs
  that differ only in PER_MEMBER_KEYS `batch` at a time in one `encdec train-batch` process.
  Returns the process exit status."""
  if jobs < 1:
    raise ConfigError(f"--jobs must be at least 1, got {jobs}")
  if batch < 1:
    raise ConfigError(f"--batch must be at least 1, got {batch}")
  if batch > 1 and launcher != "local":
    raise ConfigError("--batch is for --launcher local (encdec train-batch runs on one device)")
  if launcher not in jobs_lib.LAUNCHERS:
    raise ConfigError(f"unknown --launcher {launcher!r}; valid: {', '.join(jobs_lib.LAUNCHERS)}")
  if launcher != "local" and jobs != 1:
    raise ConfigError(f"--jobs is for --launcher local; {launcher} runs are handed over one "
                      "at a time")
  jobs_lib.check_launcher_args(launcher, launcher_args)
  sweep_dir = pathlib.Path(workdir)
  runs = plan(spec, sweep, sweep_dir, base_overrides)
  todo = [r for r in runs if not r.finished]
  if batch > 1:
    todo = batch_runs(todo, batch, spec, base_overrides or {})
  for r in runs:
    if r.finished:
      print(f"[sweep] skip {r.name} (finished: {r.final_eval})",
            file=sys.stderr if dry_run else sys.stdout, flush=True)
  if dry_run:
    if launcher == "local":
      for r in todo:
        print(shlex.join(jobs_lib.local_argv(r)))
      return 0
    outcomes = jobs_lib.run_launcher(launcher, launcher_args, sweep, todo, sweep_dir,
                                     dry_run=True)
    return 1 if any(o.returncode for o in outcomes) else 0
  batches = [r for r in todo if isinstance(r, BatchRun)]
  write_manifest(sweep_dir, manifest(spec, sweep, base_overrides or {}, command, launcher, runs,
                                     batches))
  remaining = sum(len(r.members) if isinstance(r, BatchRun) else 1 for r in todo)
  print(f"[sweep] {sweep}: {len(runs)} runs, {len(runs) - remaining} already finished, "
        f"{remaining} to run" + (f" ({jobs} at a time)" if launcher == "local" else "") +
        (f", {sum(len(b.members) for b in batches)} of them in {len(batches)} batches"
         if batches else ""), flush=True)
  if launcher == "local":
    outcomes = jobs_lib.run_local(todo, jobs)
  else:
    outcomes = jobs_lib.run_launcher(launcher, launcher_args, sweep, todo, sweep_dir,
                                     dry_run=False)
  line, ok = jobs_lib.summary(outcomes, len(runs) - remaining)
  print(f"[sweep] {sweep}: {line}", file=sys.stdout if ok else sys.stderr, flush=True)
  return 0 if ok else 1


def cli_command(argv: Sequence[str]) -> str:
  """The `encdec sweep ...` line to record in sweep.json."""
  return shlex.join(["encdec", *argv])
