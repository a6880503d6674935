"""The command line: bad input fails in one line with a non-zero exit, before compiling."""
import subprocess
import sys

import pytest


def encdec(*args, cwd=None, timeout=300):
  return subprocess.run([sys.executable, "-m", "encdec", *args], capture_output=True, text=True,
                        cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--config.model.d_modle=64"], "unknown config key 'model.d_modle'; did you mean 'd_model'?"),
    (["--config.train.num_steps=many"], "config key 'train.num_steps' expects int"),
    (["--config.model.cross_attention=nope"], "unknown model.cross_attention 'nope'; valid: "),
    (["--config", "configs/missing.py"], "config file configs/missing.py does not exist"),
    (["--bogus"], "unrecognised argument '--bogus'"),
])
def test_bad_train_arguments_fail_in_one_line(tmp_path, args, message):
  result = encdec("train", "--workdir", str(tmp_path / "run"), *args)
  assert result.returncode == 2
  assert message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert "Traceback" not in result.stderr


def test_eval_on_a_directory_that_is_not_a_run(tmp_path):
  result = encdec("eval", "--workdir", str(tmp_path))
  assert result.returncode == 2 and "config.json does not exist" in result.stderr
