"""Running the runs of a sweep (`encdec sweep`, planned by encdec/sweep.py).

`--launcher local`: up to `--jobs` `encdec train` subprocesses at a time on this machine, each
writing WORKDIR/<name>/train.log, sharing JAX's persistent compilation cache in the sweep
directory; SIGTERM / SIGINT are passed on to the running ones (they save a checkpoint and exit).
With several jobs on Linux, each running run is bound to its own share of this process's CPUs
(`cpu_slots`): XLA sizes its thread pool by the CPUs a process may use, so the runs neither
oversubscribe the cores nor migrate between them.
`--launcher slurm | tpu_vm`: each run handed to that launcher's `main` (encdec.launch.slurm,
encdec.launch.tpu_vm), one after another, with the user's `--launcher-args` plus the flags the
launcher asks for per run (`sweep_args`); a run whose job is still queued or running from an
earlier `encdec sweep` (the launcher's `queued`) is not submitted again.

A run is any object with `name`, `workdir`, `command` (the encdec command that trains it:
`train`, or `train-batch` for several seeds in one process), `train_args` (that command's
arguments) and `finished` (encdec.sweep.Run, encdec.sweep.BatchRun).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from encdec.errors import ConfigError
from encdec.launch import slurm, tpu_vm
from encdec.train import progress

CLUSTER = {"slurm": slurm, "tpu_vm": tpu_vm}   # launcher name --> module with main, sweep_args
LAUNCHERS = ("local", *CLUSTER)
COMPILATION_CACHE = "compilation_cache"
POLL_S = 0.2
# `python -c BIND CPUS ARGV...`: bind this process to CPUS (comma-separated), then become ARGV.
BIND = ("import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); "
        "os.execv(sys.argv[2], sys.argv[2:])")

Run = Any   # encdec.sweep.Run


@dataclasses.dataclass
class Outcome:
  name: str
  # finished, failed, incomplete (e.g. preempted), not started; cluster jobs: submitted, or
  # queued (submitted by an earlier `encdec sweep` and not over yet)
  status: str
  returncode: int
  seconds: float
  resumed: bool = False   # it started from an earlier start's checkpoints: a part of a run


def resumes(run: Run) -> bool:
  """Whether `run`'s directory holds checkpoints of an earlier start (it will resume)."""
  return (run.workdir / "checkpoints").is_dir()


def _print(line: str) -> None:
  print(f"[sweep] {line}", flush=True)


# ------------------------------------------------------------------------------ local runs
def local_argv(run: Run) -> list[str]:
  """`python -m encdec COMMAND ARGS` with this interpreter (independent of PATH)."""
  return [sys.executable, "-m", "encdec", run.command, *run.train_args]


def local_env(run: Run) -> dict[str, str]:
  """The environment of a local run: JAX's persistent compilation cache in the sweep directory
  (unless JAX_COMPILATION_CACHE_DIR is set), so seeds and resumed runs, which compile the same
  programs, read them instead of compiling again."""
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(run.workdir.parent / COMPILATION_CACHE))
  return env


def cpu_slots(cpus: Sequence[int], jobs: int) -> list[frozenset[int]]:
  """`cpus` split into `jobs` contiguous shares as equal as they come (the first ones one CPU
  larger); [] when there are fewer CPUs than jobs (the runs then share all of them)."""
  if jobs < 2 or len(cpus) < jobs:
    return []
  size, extra = divmod(len(cpus), jobs)
  bounds = [i * size + min(i, extra) for i in range(jobs + 1)]
  return [frozenset(cpus[bounds[i]:bounds[i + 1]]) for i in range(jobs)]


def bound(argv: Sequence[str], cpus: frozenset[int]) -> list[str]:
  """`argv` run bound to `cpus`: a fresh interpreter binds itself and execs `argv`, which keeps
  the binding (no `preexec_fn`, which is unsafe in a process that may hold JAX's threads)."""
  return [sys.executable, "-c", BIND, ",".join(map(str, sorted(cpus))), *argv]


def _start(run: Run, cpus: frozenset[int] | None) -> subprocess.Popen:
  """Start `encdec train` for `run` in its own session (a terminal's Ctrl-C reaches it only
  through the sweep), bound to `cpus` (None: not bound), appending its output to
  WORKDIR/<name>/train.log."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  argv = local_argv(run) if cpus is None else bound(local_argv(run), cpus)
  with (run.workdir / "train.log").open("a") as log:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=local_env(run))
  where = "" if cpus is None else f" on CPUs {','.join(map(str, sorted(cpus)))}"
  _print(f"start {run.name}{where} (log: {run.workdir / 'train.log'})")
  return proc


def sweep_eta(finished: Sequence[Outcome], running_s: Sequence[float], left: int,
              jobs: int) -> float | None:
  """Seconds until the last of `left` runs (those running included) ends, `jobs` at a time,
  if each takes the mean time of the `finished` runs that trained from the start and the
  running ones have run `running_s` already; None before such a run finished (a resumed run's
  time is a part of a run's: it would make a 10-hour remainder read minutes)."""
  whole = [o.seconds for o in finished if not o.resumed]
  if not whole or left <= 0:
    return None
  work = left * sum(whole) / len(whole) - sum(running_s)
  return max(0.0, work) / min(jobs, left)


def run_local(runs: Sequence[Run], jobs: int) -> list[Outcome]:
  """Run up to `jobs` `encdec train` processes at once; output to WORKDIR/<name>/train.log.

  SIGTERM / SIGINT stop new runs from starting and are passed on to the running ones, which
  save a checkpoint and exit (the next `encdec sweep` resumes them). With `jobs` > 1, each
  running run holds one of `cpu_slots` of this process's CPUs.
  """
  pending, running, outcomes, stopping = list(runs), {}, [], []
  ours = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  free = cpu_slots(ours, jobs)                                  # shares not held by a run

  def stop(signum, frame):  # pylint: disable=unused-argument
    stopping.append(signum)
    _print(f"{signal.Signals(signum).name}: no new runs; stopping the {len(running)} running")
    for proc, *_ in running.values():
      if proc.poll() is None:
        proc.send_signal(signum)

  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while running or (pending and not stopping):
      while pending and len(running) < jobs and not stopping:
        run, cpus = pending.pop(0), (free.pop(0) if free else None)
        resumed = resumes(run)
        running[run.name] = (_start(run, cpus), run, time.monotonic(), cpus, resumed)
      for name, (proc, run, start, cpus, resumed) in list(running.items()):
        if proc.poll() is None:
          continue
        del running[name]
        if cpus is not None:
          free.append(cpus)
        code = proc.returncode
        status = "failed" if code else ("finished" if run.finished else "incomplete")
        outcomes.append(Outcome(name, status, code, time.monotonic() - start, resumed))
        failed = sum(o.status != "finished" for o in outcomes)
        left = len(runs) - len(outcomes)
        now = time.monotonic()
        eta_s = sweep_eta([o for o in outcomes if o.status == "finished"],
                          [now - began_run for _, _, began_run, *_ in running.values()],
                          left, jobs)
        eta = f"; ETA {progress.format_duration(eta_s)}" if left and eta_s is not None else ""
        _print(f"{len(outcomes)}/{len(runs)} done, {failed} failed or incomplete: {name} "
               f"{status}" + (f" (exit {code})" if code else "") +
               f" in {outcomes[-1].seconds:.0f}s" + (" (resumed)" if resumed else "") + eta)
      time.sleep(POLL_S)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  outcomes += [Outcome(r.name, "not started", 0, 0.0) for r in pending]
  return outcomes


# ---------------------------------------------------------------------------- cluster runs
def check_launcher_args(launcher: str, launcher_args: Sequence[str]) -> None:
  """Parse the launcher's own flags once, so a mistake stops the sweep before any run."""
  if launcher == "local":
    if launcher_args:
      raise ConfigError(f"--launcher-args is for --launcher {' or '.join(CLUSTER)}")
    return
  try:
    _, unknown = CLUSTER[launcher].build_parser().parse_known_args(list(launcher_args))
  except SystemExit:
    unknown = None
  if unknown is None or unknown:
    raise ConfigError(f"bad --launcher-args {shlex.join(launcher_args)!r} for {launcher}; see "
                      f"python -m encdec.launch.{launcher} --help")


def launcher_argv(launcher: str, launcher_args: Sequence[str], sweep: str, run: Run,
                  sweep_dir: pathlib.Path, dry_run: bool) -> list[str]:
  """The argv of encdec.launch.<launcher>.main for one run (one job per run)."""
  own = [*launcher_args, *CLUSTER[launcher].sweep_args(sweep, run.name, sweep_dir)]
  return [*own, *(["--dry-run"] if dry_run else []), "--", *run.train_args]


def run_launcher(launcher: str, launcher_args: Sequence[str], sweep: str, runs: Sequence[Run],
                 sweep_dir: pathlib.Path, dry_run: bool) -> list[Outcome]:
  """Hand each run to encdec.launch.<launcher>, one after another."""
  module = CLUSTER[launcher]
  outcomes = []
  for i, run in enumerate(runs):
    job = module.queued(sweep_dir, run.name)
    if job is not None:   # submitted before and not over yet (pending, running, requeued)
      outcomes.append(Outcome(run.name, "queued", 0, 0.0))
      line = f"{i + 1}/{len(runs)} {run.name}: queued (job {job}, submitted earlier)"
      print(f"[sweep] {line}", file=sys.stderr if dry_run else sys.stdout, flush=True)
      continue
    start = time.monotonic()
    code = module.main(launcher_argv(launcher, launcher_args, sweep, run, sweep_dir, dry_run))
    status = "failed" if code else ("submitted" if module.SUBMITS or dry_run else
                                    "finished" if run.finished else "incomplete")
    outcomes.append(Outcome(run.name, status, code, time.monotonic() - start))
    if not dry_run:
      _print(f"{i + 1}/{len(runs)} {run.name}: {status}" + (f" (exit {code})" if code else ""))
  return outcomes


def summary(outcomes: Sequence[Outcome], skipped: int) -> tuple[str, bool]:
  """(one line for the end of a sweep, whether every run ended well)."""
  good = ("finished", "submitted", "queued")
  bad = [o for o in outcomes if o.status not in good]
  counts = {s: sum(o.status == s for o in outcomes) for s in good}
  parts = [f"{n} {s}" for s, n in counts.items() if n] + [f"{skipped} already finished"]
  line = ", ".join(parts)
  if bad:
    line += "; not finished: " + ", ".join(f"{o.name} ({o.status}"
                                            + (f", exit {o.returncode})" if o.returncode else ")")
                                            for o in bad)
  return line, not bad
