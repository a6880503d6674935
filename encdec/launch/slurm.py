"""Write (and with --submit, submit) an sbatch script for a multi-node `encdec train` run;
every task joins with `--distributed auto` (JAX reads SLURM's variables).

    python -m encdec.launch.slurm [--nodes N] (--gpus-per-node G | --ntasks-per-node T) \
        [--cpus-per-task C] [--partition P] [--time HH:MM:SS] [--job-name NAME] \
        [--process-per gpu|node] [--venv PATH] [--sbatch-option=--OPT=VALUE ...] \
        [--script FILE] [--submit] [--dry-run] -- --config configs/g2p_cmudict.py --workdir runs/g2p

GPU nodes, `--process-per gpu` (default): one task per GPU (`--ntasks-per-node=G
--gpus-per-task=1`); `--process-per node`: one task per node driving all its GPUs
(`--gpus-per-node=G`). CPU nodes: `--ntasks-per-node T` processes per node, no GPUs asked for.

Preemption: SLURM sends SIGTERM to every task (`--signal=TERM@120`: 120 s before the time
limit; a preemption; `scancel --signal=TERM JOBID`), and `encdec train` saves a checkpoint and
exits 0 (a SIGTERM before its training loop ends it instead). The script then sees that the run
has not reached its final evaluation and requeues the job (`scontrol requeue`, allowed by
`--requeue`), which starts the same command again on the same workdir: it resumes from the
newest checkpoint. A plain `scancel JOBID` ends the job for good (after the same checkpoint).
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Sequence

from encdec.errors import UserError
from encdec.launch import common

PREEMPT_SIGNAL = "TERM@120"   # SIGTERM to all tasks 120 s before the time limit
# A job requeues itself after an early stop at most this often (a guard against a loop).
MAX_REQUEUES = 100
SIGTERM_STATUS = 128 + 15    # srun's exit status when SIGTERM ended a task
TIME_RE = re.compile(r"(\d+-)?\d+:\d\d:\d\d")
# `encdec sweep --launcher slurm` (encdec.launch.jobs): one job per run, submitted, which runs
# on after `main` returns.
SUBMITS = True
JOB_ID_SUFFIX = ".jobid"      # next to the script: the id of the job it was submitted as
ACTIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                 "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "STOPPED", "SIGNALING")


def _time(text: str) -> str:
  if not TIME_RE.fullmatch(text):
    raise argparse.ArgumentTypeError(f"expected HH:MM:SS (or D-HH:MM:SS), got {text!r}")
  return text


def _word(text: str) -> str:
  """argparse type: a non-empty value without whitespace (it goes on an #SBATCH line)."""
  if not text or any(c.isspace() for c in text):
    raise argparse.ArgumentTypeError(f"expected a single word without spaces, got {text!r}")
  return text


def _sbatch_option(text: str) -> str:
  """argparse type: one sbatch option, `--NAME` or `--NAME=VALUE`, for an #SBATCH line."""
  if not text.startswith("--") or any(c.isspace() for c in text):
    raise argparse.ArgumentTypeError(f"expected an sbatch option like --account=NAME (one word, "
                                     f"given as --sbatch-option=--account=NAME), got {text!r}")
  return text


def build_parser() -> argparse.ArgumentParser:
  """This launcher's command line (its own flags; `encdec train`'s go after `--`)."""
  parser = argparse.ArgumentParser(
      prog="python -m encdec.launch.slurm", description=__doc__.split("\n\n")[0],
      usage="%(prog)s [--nodes N] (--gpus-per-node G | --ntasks-per-node T) "
            "[--cpus-per-task C] [--partition P] [--time HH:MM:SS] [--job-name NAME] "
            "[--process-per gpu|node] [--venv PATH] [--sbatch-option=--OPT=VALUE ...] "
            "[--script FILE] [--submit] [--dry-run] -- ENCDEC_TRAIN_ARGS...")
  parser.add_argument("--nodes", type=common.positive_int, default=1)
  per_node = parser.add_mutually_exclusive_group(required=True)
  per_node.add_argument("--gpus-per-node", type=common.positive_int,
                        help="GPU nodes: the GPUs each node gives the job")
  per_node.add_argument("--ntasks-per-node", type=common.positive_int,
                        help="CPU nodes: processes per node (no GPUs asked for)")
  parser.add_argument("--cpus-per-task", type=common.positive_int, default=None)
  parser.add_argument("--partition", type=_word, default=None)
  parser.add_argument("--time", type=_time, default=None, help="time limit, HH:MM:SS")
  parser.add_argument("--job-name", type=_word, default="encdec")
  parser.add_argument("--process-per", choices=("gpu", "node"), default=None,
                      help="with --gpus-per-node: one process per GPU (default) or one per node "
                           "driving all its GPUs")
  parser.add_argument("--venv", default=None,
                      help="virtual environment to activate on the nodes (default: `encdec` "
                           "must already be on PATH, e.g. from the submitting shell)")
  parser.add_argument("--sbatch-option", type=_sbatch_option, action="append", default=[],
                      metavar="--OPT[=VALUE]",
                      help="one more #SBATCH line, e.g. --sbatch-option=--account=proj "
                           "(repeatable)")
  parser.add_argument("--script", type=pathlib.Path, default=None,
                      help="where to write the sbatch script (default: JOB_NAME.sbatch); the "
                           "job's log goes next to it, JOB_NAME-JOBID.out")
  parser.add_argument("--submit", action="store_true", help="submit the script with sbatch")
  common.add_dry_run(parser)
  return parser


def sweep_args(sweep: str, run: str, sweep_dir: pathlib.Path) -> list[str]:
  """This launcher's flags for one run of a sweep: a job named SWEEP.RUN, its script (and
  log) in SWEEP_DIR/slurm/, submitted."""
  return ["--job-name", f"{sweep}.{run}", "--script", str(script_path(sweep_dir, run)),
          "--submit"]


def script_path(sweep_dir: pathlib.Path, run: str) -> pathlib.Path:
  return sweep_dir / "slurm" / f"{run}.sbatch"


# ------------------------------------------------------------------------------ the script
def resources(args: argparse.Namespace) -> list[str]:
  """sbatch/srun options for the task geometry (srun takes them all but --nodes again: since
  SLURM 22.05 srun no longer inherits --cpus-per-task from the batch job)."""
  if not args.gpus_per_node:
    tasks = [f"--ntasks-per-node={args.ntasks_per_node}"]
  elif (args.process_per or "gpu") == "gpu":
    tasks = [f"--ntasks-per-node={args.gpus_per_node}", "--gpus-per-task=1"]
  else:
    tasks = ["--ntasks-per-node=1", f"--gpus-per-node={args.gpus_per_node}"]
  cpus = [f"--cpus-per-task={args.cpus_per_task}"] if args.cpus_per_task else []
  return [f"--nodes={args.nodes}", *tasks, *cpus]


def local_device_ids(gpus_per_node: int, process_per: str) -> str:
  """JAX_LOCAL_DEVICE_IDS for every task.

  Under SLURM, jax.distributed.initialize() otherwise drives only GPU number SLURM_LOCALID.
  That is wrong in both modes here: with --gpus-per-task=1 a task sees just its own GPU, as
  device 0 (jax-ml/jax#28194); one process per node must drive all its GPUs (jax-ml/jax#16788).
  """
  return "0" if process_per == "gpu" else ",".join(map(str, range(gpus_per_node)))


def final_eval(train_args: Sequence[str]) -> pathlib.Path:
  """The file the run writes last, WORKDIR/eval/<eval.final_split>-<train.num_steps>.json, as an
  absolute path (the job runs in the submission directory); loading the config also checks it
  before anything is submitted."""
  workdir, cfg = common.train_run(train_args)
  return common.final_eval_path(workdir.resolve(), cfg)


def requeue_lines(final: pathlib.Path) -> list[str]:
  """Shell lines after srun (whose exit status is in $status): requeue the job if the run
  stopped early, that is, before its final evaluation, and either cleanly or by SIGTERM."""
  restarts = '"${SLURM_RESTART_COUNT:-0}"'
  return ["# A SIGTERM (a preemption, --signal before the time limit, scancel --signal=TERM)",
          "# makes `encdec train` save a checkpoint and exit 0, or, before its training loop has",
          "# started, ends it (status 128 + 15). Either way the run stopped before its final",
          "# evaluation: requeued, the job starts again and resumes from the newest checkpoint.",
          f"if [ ! -e {shlex.quote(str(final))} ] && [[ $status == 0 || $status == "
          f"{SIGTERM_STATUS} ]] && [ {restarts} -lt {MAX_REQUEUES} ]; then",
          '  echo "[slurm] stopped before the final evaluation: requeueing job $SLURM_JOB_ID"',
          '  scontrol requeue "$SLURM_JOB_ID"',
          "fi",
          "exit $status"]


def sbatch_script(args: argparse.Namespace, train_args: Sequence[str], log_dir: pathlib.Path,
                  final: pathlib.Path) -> str:
  """The whole sbatch script, as text."""
  options = [f"--job-name={args.job_name}", *resources(args),
             *([f"--partition={args.partition}"] if args.partition else []),
             *([f"--time={args.time}"] if args.time else []),
             f"--signal={PREEMPT_SIGNAL}", "--requeue",
             "--open-mode=append", f"--output={log_dir / '%x-%j.out'}",  # a requeued run appends
             *args.sbatch_option]
  srun = ["srun", "--kill-on-bad-exit=1", *resources(args)[1:],
          *common.train_argv(train_args, common.AUTO_DISTRIBUTED)]
  gpu_ids = (local_device_ids(args.gpus_per_node, args.process_per or "gpu")
             if args.gpus_per_node else None)
  lines = ["#!/bin/bash",
           *(f"#SBATCH {option}" for option in options),
           "set -eo pipefail",
           *([f"source {shlex.quote(str(pathlib.Path(args.venv) / 'bin' / 'activate'))}"]
             if args.venv else []),
           *([f"export JAX_LOCAL_DEVICE_IDS={gpu_ids}"] if gpu_ids else []),
           'echo "[slurm] job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on '
           '$SLURM_JOB_NODELIST, $(date)"',
           "# Re-running this command on the same workdir resumes from its newest checkpoint.",
           "status=0",
           f"{shlex.join(srun)} || status=$?",
           *requeue_lines(final)]
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ submitting
def submit(path: pathlib.Path) -> int:
  """sbatch the script; print and record (next to it) the job id. Returns the exit status."""
  try:
    result = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True,
                            check=False)
  except FileNotFoundError:
    print("error: sbatch not found on PATH; run this on a SLURM login node", file=sys.stderr)
    return 127
  if result.returncode:
    print(f"error: sbatch {path} failed: {result.stderr.strip()}", file=sys.stderr)
    return common.exit_status(result.returncode)
  job_id = result.stdout.strip().split(";")[0]
  path.with_suffix(JOB_ID_SUFFIX).write_text(job_id + "\n")
  print(f"submitted job {job_id}: {path}", flush=True)
  return 0


def active_job(script: pathlib.Path) -> str | None:
  """The id of the job `script` was submitted as, if that job is still queued or running
  (pending, requeued after a preemption, ...); None otherwise or when unknown."""
  id_file = script.with_suffix(JOB_ID_SUFFIX)
  if not id_file.exists():
    return None
  job_id = id_file.read_text().strip()
  try:
    result = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"],
                            capture_output=True, text=True, check=False)
  except FileNotFoundError:
    return None
  states = result.stdout.split() if result.returncode == 0 else []
  return job_id if any(s in ACTIVE_STATES for s in states) else None


def queued(sweep_dir: pathlib.Path, run: str) -> str | None:
  """For `encdec sweep`: the id of the run's job if it is still queued or running."""
  return active_job(script_path(sweep_dir, run))


@common.returns_exit_code
def main(argv: Sequence[str] | None = None) -> int:
  """Parse the command line; print (--dry-run), write, or write and submit the script."""
  parser = build_parser()
  args, train_args = common.parse(parser, argv)
  if args.process_per and not args.gpus_per_node:
    parser.error("--process-per is for GPU nodes (--gpus-per-node)")
  try:
    final = final_eval(train_args)
  except UserError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  path = args.script or pathlib.Path(f"{args.job_name}.sbatch")
  script = sbatch_script(args, train_args, path.parent.resolve(), final)
  if args.dry_run:
    print(script, end="")
    print(f"# would write {path}" + (f" and run: sbatch --parsable {path}" if args.submit
                                     else ""), file=sys.stderr)
    return 0
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(script)
  if not args.submit:
    print(f"wrote {path}; submit it with: sbatch {path}")
    return 0
  return submit(path)


if __name__ == "__main__":
  sys.exit(main())
