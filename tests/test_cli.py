"""The command line: bad input fails in one line with a non-zero exit, before compiling."""
import asyncio
import subprocess
import sys
import types

import pytest

from encdec import cli


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


@pytest.mark.parametrize("command, override, message", [
    ("eval", "--config.model.d_model=8", "only --config.mesh.* can be set for a trained run "
                                         "(its model and task come from its config.json); got "
                                         "model.d_model"),
    ("decode", "--config.mesh.fsdq=2", "unknown config key 'mesh.fsdq'; did you mean 'fsdp'?"),
    ("eval", "--bogus", "unrecognised argument '--bogus'"),
])
def test_eval_and_decode_take_only_mesh_overrides(tmp_path, command, override, message):
  result = encdec(command, "--workdir", str(tmp_path), override)    # refused before loading
  assert result.returncode == 2
  assert message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _raised(fn):
  try:
    fn()
  except Exception as e:  # pylint: disable=broad-except
    return type(e), e, e.__traceback__
  raise AssertionError("nothing raised")


def test_only_asyncio_closed_event_loop_errors_are_quietened():
  loop = asyncio.new_event_loop()
  loop.close()
  closed = _raised(lambda: loop.call_soon_threadsafe(print))
  assert cli._is_closed_event_loop_error(*closed)                # pylint: disable=protected-access

  def own_error():
    raise RuntimeError("Event loop is closed")

  assert not cli._is_closed_event_loop_error(*_raised(own_error))  # pylint: disable=protected-access
  assert not cli._is_closed_event_loop_error(*_raised(lambda: 1 / 0))  # pylint: disable=protected-access


def test_installed_hooks_drop_only_closed_event_loop_errors(monkeypatch):
  """TensorStore's callbacks report them through sys.unraisablehook (seen on a full disk)."""
  seen = []
  monkeypatch.delenv("ENCDEC_DEBUG", raising=False)
  monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(("except", exc[0])))
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(("unraisable", u.exc_type)))
  cli._quiet_closed_event_loop_errors()                          # pylint: disable=protected-access
  loop = asyncio.new_event_loop()
  loop.close()
  closed = _raised(lambda: loop.call_soon_threadsafe(print))
  other = _raised(lambda: 1 / 0)
  for exc_type, exc, tb in (closed, other):
    sys.excepthook(exc_type, exc, tb)
    sys.unraisablehook(types.SimpleNamespace(exc_type=exc_type, exc_value=exc, exc_traceback=tb,
                                             err_msg=None, object=None))
  assert seen == [("except", ZeroDivisionError), ("unraisable", ZeroDivisionError)]
