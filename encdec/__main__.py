"""The `encdec` command (console script and `python -m encdec`).

Process-wide set-up happens here, first, before any heavy import, and only for the command:
on Linux CPUs the process re-executes itself once with glibc's huge-page tunable
(encdec/hugepages.py; ENCDEC_HUGEPAGES=0 turns it off), and matplotlib draws without a display.
"""
import os
import sys

from encdec import hugepages


def main() -> int:
  hugepages.reexec_if_wanted()
  os.environ.setdefault("MPLBACKEND", "Agg")
  from encdec import cli  # pylint: disable=import-outside-toplevel (after the re-exec)
  return cli.main(sys.argv[1:])


if __name__ == "__main__":
  sys.exit(main())
