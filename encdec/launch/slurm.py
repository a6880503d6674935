"""Write (and with --submit, submit) an sbatch script for a multi-node, multi-GPU
`encdec train` run; every task joins with `--distributed auto` (JAX reads SLURM's variables).

    python -m encdec.launch.slurm --nodes 2 --gpus-per-node 8 [--partition P] \
        [--time HH:MM:SS] [--job-name NAME] [--process-per gpu|node] [--venv PATH] \
        [--script FILE] [--submit] [--dry-run] -- --config configs/g2p_cmudict.py --workdir runs/g2p

`--process-per gpu` (default): one task per GPU (`--ntasks-per-node=G --gpus-per-task=1`).
`--process-per node`: one task per node driving all its GPUs (`--gpus-per-node=G`).
Preemption: `--signal=TERM@120` sends SIGTERM to every task 120 s before the time limit, and
`encdec train` then saves a checkpoint and exits; `--requeue` lets SLURM restart a preempted
job, and because the script re-runs the same command on the same workdir, it resumes.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import sys
from typing import Sequence

from encdec.launch import common

PREEMPT_SIGNAL = "TERM@120"   # SIGTERM to all tasks 120 s before the time limit
TIME_RE = re.compile(r"(\d+-)?\d+:\d\d:\d\d")
# `encdec sweep --launcher slurm` (encdec.launch.jobs): one job per run, submitted, which runs
# on after `main` returns.
SUBMITS = True


def _time(text: str) -> str:
  if not TIME_RE.fullmatch(text):
    raise argparse.ArgumentTypeError(f"expected HH:MM:SS (or D-HH:MM:SS), got {text!r}")
  return text


def _word(text: str) -> str:
  """argparse type: a non-empty value without whitespace (it goes on an #SBATCH line)."""
  if not text or any(c.isspace() for c in text):
    raise argparse.ArgumentTypeError(f"expected a single word without spaces, got {text!r}")
  return text


def build_parser() -> argparse.ArgumentParser:
  """This launcher's command line (its own flags; `encdec train`'s go after `--`)."""
  parser = argparse.ArgumentParser(
      prog="python -m encdec.launch.slurm", description=__doc__.split("\n\n")[0],
      usage="%(prog)s --nodes N --gpus-per-node G [--partition P] [--time HH:MM:SS] "
            "[--job-name NAME] [--process-per gpu|node] [--venv PATH] [--script FILE] "
            "[--submit] [--dry-run] -- ENCDEC_TRAIN_ARGS...")
  parser.add_argument("--nodes", type=common.positive_int, required=True)
  parser.add_argument("--gpus-per-node", type=common.positive_int, required=True)
  parser.add_argument("--partition", type=_word, default=None)
  parser.add_argument("--time", type=_time, default=None, help="time limit, HH:MM:SS")
  parser.add_argument("--job-name", type=_word, default="encdec")
  parser.add_argument("--process-per", choices=("gpu", "node"), default="gpu",
                      help="one process per GPU (default) or one per node driving all its GPUs")
  parser.add_argument("--venv", default=None,
                      help="virtual environment to activate on the nodes (default: `encdec` "
                           "must already be on PATH, e.g. from the submitting shell)")
  parser.add_argument("--script", type=pathlib.Path, default=None,
                      help="where to write the sbatch script (default: JOB_NAME.sbatch)")
  parser.add_argument("--submit", action="store_true", help="submit the script with sbatch")
  common.add_dry_run(parser)
  return parser


def sweep_args(sweep: str, run: str, sweep_dir: pathlib.Path) -> list[str]:
  """This launcher's flags for one run of a sweep: a job named SWEEP.RUN, its script in
  SWEEP_DIR/slurm/, submitted."""
  return ["--job-name", f"{sweep}.{run}", "--script", str(sweep_dir / "slurm" / f"{run}.sbatch"),
          "--submit"]


def resources(nodes: int, gpus_per_node: int, process_per: str) -> list[str]:
  """sbatch/srun options for the task geometry."""
  if process_per == "gpu":
    tasks = [f"--ntasks-per-node={gpus_per_node}", "--gpus-per-task=1"]
  else:
    tasks = ["--ntasks-per-node=1", f"--gpus-per-node={gpus_per_node}"]
  return [f"--nodes={nodes}", *tasks]


def local_device_ids(gpus_per_node: int, process_per: str) -> str:
  """JAX_LOCAL_DEVICE_IDS for every task.

  Under SLURM, jax.distributed.initialize() otherwise drives only GPU number SLURM_LOCALID.
  That is wrong in both modes here: with --gpus-per-task=1 a task sees just its own GPU, as
  device 0 (jax-ml/jax#28194); one process per node must drive all its GPUs (jax-ml/jax#16788).
  """
  return "0" if process_per == "gpu" else ",".join(map(str, range(gpus_per_node)))


def sbatch_script(args: argparse.Namespace, train_args: Sequence[str]) -> str:
  """The whole sbatch script, as text."""
  options = [f"--job-name={args.job_name}",
             *resources(args.nodes, args.gpus_per_node, args.process_per),
             *([f"--partition={args.partition}"] if args.partition else []),
             *([f"--time={args.time}"] if args.time else []),
             f"--signal={PREEMPT_SIGNAL}", "--requeue",
             "--open-mode=append", "--output=%x-%j.out"]  # a requeued run appends to its log
  srun = ["srun", "--kill-on-bad-exit=1",
          *resources(args.nodes, args.gpus_per_node, args.process_per)[1:],
          *common.train_argv(train_args, common.AUTO_DISTRIBUTED)]
  lines = ["#!/bin/bash",
           *(f"#SBATCH {option}" for option in options),
           "set -eo pipefail",
           *([f"source {shlex.quote(str(pathlib.Path(args.venv) / 'bin' / 'activate'))}"]
             if args.venv else []),
           f"export JAX_LOCAL_DEVICE_IDS={local_device_ids(args.gpus_per_node, args.process_per)}",
           "# Re-running this command on the same workdir resumes from its newest checkpoint.",
           shlex.join(srun)]
  return "\n".join(lines) + "\n"


@common.returns_exit_code
def main(argv: Sequence[str] | None = None) -> int:
  """Parse the command line; print (--dry-run), write, or write and submit the script."""
  args, train_args = common.parse(build_parser(), argv)
  script = sbatch_script(args, train_args)
  path = args.script or pathlib.Path(f"{args.job_name}.sbatch")
  submit = ["sbatch", str(path)]
  if args.dry_run:
    print(script, end="")
    print(f"# would write {path}" + (f" and run: {shlex.join(submit)}" if args.submit else ""),
          file=sys.stderr)
    return 0
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(script)
  if not args.submit:
    print(f"wrote {path}; submit it with: {shlex.join(submit)}")
    return 0
  return common.run_commands([submit])


if __name__ == "__main__":
  sys.exit(main())
