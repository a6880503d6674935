"""User errors vs bugs: a user error is one line and exit 2; a bug keeps its traceback, exit 1."""
import subprocess
import sys

import pytest

from encdec import cli, errors


def run_cli_with(command_body: str):
  """`encdec train` whose command function is replaced by `command_body` (a Python statement)."""
  code = ("import sys\nfrom encdec import cli, errors\n"
          f"def command(args, overrides):\n  {command_body}\n"
          "cli.COMMANDS['train'] = command\nsys.exit(cli.main(['train']))\n")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("error", ["ConfigError", "DataError", "CheckpointError",
                                   "TrainingDiverged"])
def test_a_user_error_is_one_line_and_exit_2(error):
  result = run_cli_with(f"raise errors.{error}('fix this: set x')")
  assert result.returncode == 2
  assert result.stderr.strip() == "encdec train: error: fix this: set x"


def test_a_bug_keeps_its_traceback_and_exits_1():
  result = run_cli_with("raise ValueError('an internal bug')")   # not a UserError
  assert result.returncode == 1
  assert "Traceback" in result.stderr and "ValueError: an internal bug" in result.stderr


def test_encdec_debug_shows_the_traceback_of_a_user_error():
  code = ("import os, sys\nos.environ['ENCDEC_DEBUG'] = '1'\nfrom encdec import cli, errors\n"
          "def command(args, overrides):\n  raise errors.DataError('missing file')\n"
          "cli.COMMANDS['train'] = command\nsys.exit(cli.main(['train']))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1 and "Traceback" in result.stderr


def test_every_user_error_type_is_caught_by_the_cli_and_nothing_broader():
  for error in (errors.ConfigError, errors.DataError, errors.CheckpointError,
                errors.TrainingDiverged):
    assert issubclass(error, errors.UserError)
  assert not issubclass(ValueError, errors.UserError)
  with pytest.raises(KeyError):            # in-process too: a bug propagates from main()
    cli.COMMANDS["report"] = lambda args, overrides: {}["missing"]
    try:
      cli.main(["report", "somewhere"])
    finally:
      cli.COMMANDS["report"] = cli.cmd_report
