"""The `encdec` command line.

    encdec train [--config PATH[:ARG]] [--workdir DIR] [--config.KEY=VALUE ...]

A user error (bad config key or value, unknown task/variant, missing data, a workdir that
belongs to another config) prints one line to stderr and exits with status 2; set
ENCDEC_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import argparse
import logging as py_logging
import os
import sys

from absl import logging

from encdec import config as config_lib

USER_ERRORS = (config_lib.ConfigError, ValueError, FileNotFoundError, FloatingPointError)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="encdec", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train (or resume) a model in a workdir",
                         epilog="Override any config key with --config.KEY=VALUE, "
                                "e.g. --config.model.d_model=128.")
  train.add_argument("--config", default=None,
                     help="PATH[:ARG] of a config file (default: configs/g2p_cmudict.py)")
  train.add_argument("--workdir", default="runs/g2p_cmudict",
                     help="run directory: config.json, metrics.jsonl, checkpoints/, eval/")
  return parser


def _setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  handler.setFormatter(py_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logging.use_absl_handler()


def cmd_train(args, overrides) -> int:
  from encdec.train import loop  # pylint: disable=import-outside-toplevel (slow: jax)
  cfg = config_lib.load(args.config, overrides)
  loop.train(cfg, args.workdir)
  return 0


COMMANDS = {"train": cmd_train}


def main(argv: list[str] | None = None) -> int:
  args, rest = _parser().parse_known_args(argv)
  _setup_logging()
  try:
    overrides = config_lib.parse_overrides(rest)
    return COMMANDS[args.command](args, overrides)
  except USER_ERRORS as e:
    if os.environ.get("ENCDEC_DEBUG"):
      raise
    print(f"encdec {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
