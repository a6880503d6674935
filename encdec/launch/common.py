"""Pieces every launcher shares: splitting the command line at `--`, building the
`encdec train` argv, shell quoting, and running commands.

A launcher owns the flags that say how processes find each other (`DISTRIBUTED_FLAGS`); the
arguments after `--` are passed to `encdec train` unchanged and may not repeat those flags.
"""
from __future__ import annotations

import argparse
import functools
import pathlib
import shlex
import subprocess
import sys
from typing import Any, Callable, Mapping, Sequence

# The command the SLURM launcher starts (the installed console script).
ENCDEC_TRAIN = ("encdec", "train")
# Set by the launchers themselves; an `encdec train` argument that repeats one is an error.
DISTRIBUTED_FLAGS = ("--coordinator_address", "--num_processes", "--process_id", "--distributed")
AUTO_DISTRIBUTED = ("--distributed", "auto")


def split_at_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(launcher arguments, `encdec train` arguments): the two sides of the first `--`."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  i = argv.index("--")
  return argv[:i], argv[i + 1:]


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None
          ) -> tuple[argparse.Namespace, list[str]]:
  """Parse `LAUNCHER_ARGS -- TRAIN_ARGS`; a misplaced or reserved flag exits with status 2."""
  own, train_args = split_at_dashes(sys.argv[1:] if argv is None else argv)
  args, unknown = parser.parse_known_args(own)
  if unknown:
    parser.error(f"unrecognized arguments: {shlex.join(unknown)} (arguments for "
                 f"`encdec train` go after `--`)")
  for arg in train_args:
    flag = arg.split("=", 1)[0]
    if flag in DISTRIBUTED_FLAGS:
      parser.error(f"{flag} is set by the launcher; remove it from the arguments after `--`")
  return args, train_args


def train_argv(train_args: Sequence[str], distributed_args: Sequence[str],
               program: Sequence[str] = ENCDEC_TRAIN) -> list[str]:
  """`program` (`encdec train`) + the passthrough arguments + how to join the run."""
  return [*program, *train_args, *distributed_args]


def train_run(train_args: Sequence[str]) -> tuple[pathlib.Path, Any]:
  """(workdir, loaded and validated config) of `encdec train TRAIN_ARGS`, read with encdec's
  own command line parser (its defaults included); a bad config raises ConfigError."""
  from encdec import cli, config  # pylint: disable=import-outside-toplevel (absl: only here)
  parser = cli._parser()  # pylint: disable=protected-access
  args, rest = parser.parse_known_args(["train", *train_args])
  cfg = config.load(args.config, config.parse_overrides(rest))
  return pathlib.Path(args.workdir), cfg


def final_eval_path(workdir: pathlib.Path, cfg: Any) -> pathlib.Path:
  """WORKDIR/eval/<eval.final_split>-<train.num_steps>.json: written at the very end of a run,
  so a run is finished once it exists (the same test as encdec.sweep.Run.finished)."""
  return workdir / "eval" / f"{cfg.eval.final_split}-{cfg.train.num_steps}.json"


def python_train(python: str, *python_flags: str) -> list[str]:
  """`PYTHON [FLAGS] -m encdec train`: the same as `encdec train`, found through an
  interpreter rather than PATH."""
  return [python, *python_flags, "-m", "encdec", "train"]


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
  """One shell-quoted line that runs `argv`, with `env` as `KEY=VALUE` assignments first."""
  assignments = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
  return " ".join([*assignments, shlex.join(argv)])


def add_dry_run(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dry-run", action="store_true",
                      help="print exactly what would run, run nothing, exit 0")


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def run_commands(commands: Sequence[Sequence[str]]) -> int:
  """Run commands one after another; stop at the first failure and return its exit code."""
  for argv in commands:
    try:
      code = subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
      print(f"error: {argv[0]} not found on PATH; install it or check PATH", file=sys.stderr)
      return 127
    if code:
      return exit_status(code)
  return 0


def exit_status(returncode: int) -> int:
  """A shell-style exit status: a child killed by signal N gives 128 + N."""
  return 128 - returncode if returncode < 0 else returncode


def returns_exit_code(main: Callable[[Sequence[str] | None], int]
                      ) -> Callable[[Sequence[str] | None], int]:
  """Wrap a launcher's main so that argparse's exits (--help, usage errors) become return
  values: `main(argv)` always returns the process exit code."""
  @functools.wraps(main)
  def wrapper(argv: Sequence[str] | None = None) -> int:
    try:
      return main(argv)
    except SystemExit as e:
      return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return wrapper
