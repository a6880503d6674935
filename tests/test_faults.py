"""Fault injection with real processes: kill -9, SIGTERM, damaged checkpoints, NaN, bad input.

Most are marked slow; the quick suite keeps the cheap ones. In-process counterparts of the
others: tests/test_training.py (preemption and resume, NaN at a chosen step)."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from encdec import writers

ARGS = ["--config", "configs/algorithmic.py:task=reverse", "--config.task.max_len=6",
        "--config.model.d_model=32", "--config.model.dropout_rate=0.1",
        "--config.train.batch_size=16", "--config.logging.every_steps=2",
        "--config.checkpoint.every_steps=5", "--config.eval.every_steps=1000",
        "--config.eval.final_split=test", "--config.eval.max_examples=16"]


def command(workdir, steps, *extra):
  return [sys.executable, "-m", "encdec", "train", "--workdir", str(workdir), *ARGS,
          f"--config.train.num_steps={steps}", *extra]


def run(workdir, steps, *extra):
  return subprocess.run(command(workdir, steps, *extra), capture_output=True, text=True,
                        timeout=600)


def losses(workdir):
  rows = writers.read_metrics(workdir)
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def wait_for_checkpoint(workdir, step, proc, timeout=300):
  path = pathlib.Path(workdir) / "checkpoints" / str(step)
  start = time.time()
  while not path.exists():
    assert proc.poll() is None, proc.stderr.read()
    assert time.time() - start < timeout
    time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 30-step run."""
  workdir = tmp_path_factory.mktemp("reference")
  result = run(workdir, 30)
  assert result.returncode == 0, result.stderr
  return losses(workdir)


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, reference):
  proc = subprocess.Popen(command(tmp_path, 30), stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(tmp_path, 10, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = run(tmp_path, 30)
  assert resumed.returncode == 0, resumed.stderr
  assert "resumed from step" in resumed.stderr
  got = losses(tmp_path)   # rows logged twice (before the kill and after) agree too
  for step, loss in reference.items():
    assert got[step] == pytest.approx(loss, rel=1e-6), step


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_then_resume_equals_uninterrupted(tmp_path, reference):
  """Killed while a checkpoint is half-written (its temporary directory exists): the resumed
  run starts from the newest complete checkpoint and ends exactly like the uninterrupted one."""
  proc = subprocess.Popen(command(tmp_path, 30), stderr=subprocess.PIPE, text=True)
  checkpoints = tmp_path / "checkpoints"
  wait_for_checkpoint(tmp_path, 10, proc)      # complete ones to fall back to
  writing = []
  while not writing:
    assert proc.poll() is None, "the run ended before a checkpoint write could be interrupted"
    names = [p.name for p in checkpoints.iterdir()] if checkpoints.exists() else []
    writing = [n for n in names if not n.isdigit()]
    if not writing:
      time.sleep(0.001)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  complete = sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())
  resumed = run(tmp_path, 30)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed from step {complete[-1]}" in resumed.stderr, (writing, complete)
  got = losses(tmp_path)
  for step, loss in reference.items():
    assert got[step] == pytest.approx(loss, rel=1e-6), step


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, reference):
  proc = subprocess.Popen(command(tmp_path, 30), stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(tmp_path, 5, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  line = [l for l in err.splitlines() if "preempted at step" in l]
  assert line and "run the same command to resume" in line[0]
  step = int(line[0].split("preempted at step ")[1].split(":")[0])
  assert (tmp_path / "checkpoints" / str(step)).exists()
  resumed = run(tmp_path, 30)
  assert f"resumed from step {step}" in resumed.stderr
  got = losses(tmp_path)
  for s, loss in reference.items():
    assert got[s] == pytest.approx(loss, rel=1e-6), s


@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_damaged_newest_checkpoint_falls_back_and_is_kept(tmp_path):
  assert run(tmp_path, 10).returncode == 0            # checkpoints 5 and 10
  for f in (tmp_path / "checkpoints" / "10" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(b"garbage" * 10)
  result = run(tmp_path, 12)
  assert result.returncode == 0, result.stderr
  assert "checkpoint" in result.stderr and "is unreadable" in result.stderr
  assert "resumed from step 5" in result.stderr
  assert (tmp_path / "checkpoints" / "10.unreadable").is_dir()   # set aside, not deleted
  assert (tmp_path / "checkpoints" / "12").is_dir()


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_one_line_error(tmp_path):
  assert run(tmp_path, 5).returncode == 0
  for f in (tmp_path / "checkpoints" / "5" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"x")
  result = run(tmp_path, 8)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "encdec train: error: no readable checkpoint in ")


@pytest.mark.slow
def test_nonfinite_loss_stops_with_step_and_checkpoint(tmp_path):
  """A learning rate of 1e30 diverges within a few steps: one line, exit 2, naming the first
  non-finite step and a checkpoint from before it; no checkpoint from at or after it exists.
  (tests/test_training.py injects NaN at chosen steps and loads the named checkpoint.)"""
  result = run(tmp_path, 30, "--config.optim.learning_rate=1e30",
               "--config.optim.grad_clip_norm=0.0", "--config.checkpoint.every_steps=1",
               "--config.checkpoint.keep=100")
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  found = re.fullmatch(r"encdec train: error: non-finite (loss or gradient at|parameters or "
                       r"optimizer state after) step (\d+); last good checkpoint: (\S+) .*", last)
  assert found, last
  step, named = int(found.group(2)), found.group(3)
  kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  assert kept == list(range(1, step)), (last, kept)
  assert named == ("none" if step == 1 else str(tmp_path.resolve() / "checkpoints" / str(step - 1)))


def test_unwritable_workdir_is_a_one_line_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = run(blocker / "run", 5)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1 and "cannot create workdir" in result.stderr


MIB = 1 << 20
FULL_DISK_ARGS = ("--config.model.d_model=64", "--config.checkpoint.keep=100")


def disk_bytes(path: pathlib.Path) -> int:
  """What the files under `path` take on a tmpfs (whole 4 KiB pages)."""
  return sum(-(-f.stat().st_size // 4096) * 4096 for f in path.rglob("*") if f.is_file())


@pytest.fixture(name="small_disk")
def fixture_small_disk(tmp_path):
  """A tmpfs (needs root), sized later by remounting; unmounted at the end."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                    capture_output=True, check=False).returncode != 0:
    pytest.skip("mounting a small tmpfs needs root")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], check=False)


def resize(disk: pathlib.Path, size: int) -> None:
  subprocess.run(["mount", "-o", f"remount,size={-(-size // MIB)}m", str(disk)], check=True)


@pytest.mark.slow
def test_full_disk_on_save_is_a_clear_error_and_keeps_older_checkpoints(small_disk, tmp_path):
  """The disk holds what the run writes besides checkpoints and 2.5 checkpoints of its model
  (both measured on a 5-step run first), so the third checkpoint fills it. Then it is made
  twice as large as the whole 100-step run needs, and the same command resumes and finishes."""
  measured = tmp_path / "measured"
  assert run(measured, 5, *FULL_DISK_ARGS).returncode == 0
  checkpoint = disk_bytes(measured / "checkpoints" / "5")
  others = disk_bytes(measured) - disk_bytes(measured / "checkpoints")   # logs, config, eval
  resize(small_disk, 4 * others + 5 * checkpoint // 2)
  workdir = small_disk / "run"
  result = run(workdir, 100, *FULL_DISK_ARGS)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  last = [l for l in result.stderr.splitlines() if l.startswith("encdec train: error")][-1]
  assert last.startswith("encdec train: error: cannot write") and (
      "no space left on device" in last), last          # a checkpoint or the metrics
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  step = int(last.rsplit("resume from step ", 1)[1]) if "from step" in last else kept[-1]
  assert kept and kept[-1] == step < 100, (last, kept)
  resize(small_disk, 2 * (20 * others + 21 * checkpoint))
  resumed = run(workdir, 100, *FULL_DISK_ARGS)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed from step {step}" in resumed.stderr


@pytest.mark.slow   # an integration run (> 10 s); the quick suite covers its parts
def test_other_config_in_workdir_is_refused_and_nothing_is_lost(tmp_path):
  assert run(tmp_path, 5).returncode == 0
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  result = run(tmp_path, 5, "--config.model.d_model=48")
  assert result.returncode == 2 and "model.d_model=" in result.stderr
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
  assert json.loads((tmp_path / "config.json").read_text())["model"]["d_model"] == 32

