"""Run `encdec train` on every host of a Cloud TPU VM (pod slice) through
`gcloud compute tpus tpu-vm ssh --worker=all`; every host joins with `--distributed auto`
(JAX reads the TPU VM metadata).

    python -m encdec.launch.tpu_vm --tpu NAME --zone ZONE [--project P] [--repo-dir DIR] \
        [--python PY] [--setup] [--dry-run] -- --config configs/g2p_cmudict.py --workdir runs/g2p

The repository must already be at DIR on every worker (default `encdec`, relative to the
home directory there). `--setup` first installs it on all workers (`pip install -e .` with
`jax[tpu]`). The remote command runs `PY -m encdec train`, which does not depend on PATH.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
from typing import Sequence

from encdec.launch import common

SETUP_PACKAGES = ("-e", ".", "jax[tpu]")   # the project, plus the TPU runtime for its jax pin
# `encdec sweep --launcher tpu_vm` (encdec.launch.jobs): each run in turn, to its end.
SUBMITS = False


def build_parser() -> argparse.ArgumentParser:
  """This launcher's command line (its own flags; `encdec train`'s go after `--`)."""
  parser = argparse.ArgumentParser(
      prog="python -m encdec.launch.tpu_vm", description=__doc__.split("\n\n")[0],
      usage="%(prog)s --tpu NAME --zone ZONE [--project P] [--repo-dir DIR] [--python PY] "
            "[--setup] [--dry-run] -- ENCDEC_TRAIN_ARGS...")
  parser.add_argument("--tpu", required=True, help="TPU VM name")
  parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
  parser.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
  parser.add_argument("--repo-dir", default="encdec",
                      help="the repository on each worker (default: ~/encdec)")
  parser.add_argument("--python", default="python3", help="interpreter on the workers")
  parser.add_argument("--setup", action="store_true",
                      help="first pip-install the repository and jax[tpu] on all workers")
  common.add_dry_run(parser)
  return parser


def sweep_args(sweep: str, run: str, sweep_dir: pathlib.Path) -> list[str]:
  """This launcher's flags for one run of a sweep: none beyond the user's."""
  del sweep, run, sweep_dir
  return []


def queued(sweep_dir: pathlib.Path, run: str) -> str | None:
  """Runs are not submitted to a queue here: never one still queued from an earlier sweep."""
  del sweep_dir, run
  return None


def quote_remote_dir(path: str) -> str:
  """Shell-quote a directory for the remote shell, keeping a leading `~/` expandable."""
  if path == "~":
    return path
  if path.startswith("~/"):
    return "~/" + shlex.quote(path[2:])
  return shlex.quote(path)


def remote_command(repo_dir: str, argv: Sequence[str]) -> str:
  """`cd DIR && ARGV`, quoted for the shell on each worker."""
  return f"cd {quote_remote_dir(repo_dir)} && {shlex.join(argv)}"


def ssh_all(args: argparse.Namespace, remote: str) -> list[str]:
  """gcloud argv that runs `remote` on every worker of the TPU VM."""
  project = ["--project", args.project] if args.project else []
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, "--zone", args.zone, *project,
          "--worker=all", "--command", remote]


def commands(args: argparse.Namespace, train_args: Sequence[str]) -> list[list[str]]:
  """The local commands to run, in order: [setup,] train."""
  train = common.train_argv(train_args, common.AUTO_DISTRIBUTED, common.python_train(args.python))
  setup = [args.python, "-m", "pip", "install", *SETUP_PACKAGES]
  return [ssh_all(args, remote_command(args.repo_dir, argv))
          for argv in ([setup] if args.setup else []) + [train]]


@common.returns_exit_code
def main(argv: Sequence[str] | None = None) -> int:
  """Parse the command line, then print (--dry-run) or run the gcloud commands."""
  args, train_args = common.parse(build_parser(), argv)
  cmds = commands(args, train_args)
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0
  return common.run_commands(cmds)


if __name__ == "__main__":
  sys.exit(main())
