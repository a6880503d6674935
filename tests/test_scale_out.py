"""Scale-out end to end: resume on other meshes, two processes equal one, restore anywhere."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from encdec import config, writers
from encdec.train import loop

BASE = {"task.max_len": 6, "train.num_steps": 12, "train.batch_size": 16, "model.d_model": 32,
        "model.dropout_rate": 0.1, "logging.every_steps": 2, "checkpoint.every_steps": 6,
        "eval.every_steps": 1000, "eval.final_split": "test", "eval.batch_size": 64}


def cfg_for(mesh, **overrides):
  data, fsdp, tensor = mesh
  return config.load("configs/algorithmic.py:task=copy", {
      **BASE, "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor, **overrides})


def losses(workdir):
  return {r["step"]: r["train/loss"] for r in writers.read_metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The losses of 12 steps on a 2x2x2 mesh."""
  workdir = tmp_path_factory.mktemp("straight")
  loop.train(cfg_for((2, 2, 2)), workdir)
  return losses(workdir)


@pytest.mark.slow   # three real runs (> 40 s)
@pytest.mark.parametrize("mesh", [(1, 4, 1), (1, 1, 1), (2, 1, 4)])
def test_resume_on_other_meshes_matches_an_uninterrupted_run(tmp_path, uninterrupted, mesh):
  loop.train(cfg_for((2, 2, 2), **{"train.num_steps": 6}), tmp_path)   # saved on 2x2x2
  with open(tmp_path / "config.json") as f:  # same model and task: a resume is allowed
    assert '"num_steps": 6' in f.read()
  loop.train(cfg_for(mesh), tmp_path)                                   # resumed on `mesh`
  resumed = losses(tmp_path)
  assert sorted(resumed) == sorted(uninterrupted)
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                             [uninterrupted[s] for s in sorted(uninterrupted)], rtol=2e-4)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_training(workdir, devices, extra=(), processes=1,
                   program=("-m", "encdec")) -> list[subprocess.Popen]:
  """`encdec train` (or `program` given the same arguments) in `processes` processes of
  `devices` CPU devices each."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu"}
  args = [sys.executable, *program, "train", "--config", "configs/algorithmic.py:task=copy",
          "--workdir", str(workdir), *[f"--config.{k}={v}" for k, v in BASE.items()], *extra]
  if processes == 1:
    return [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)]
  port = free_port()
  return [subprocess.Popen(args + [f"--coordinator_address=localhost:{port}",
                                   f"--num_processes={processes}", f"--process_id={i}"],
                           env=env, stderr=subprocess.PIPE, text=True)
          for i in range(processes)]


def encdec_train(workdir, devices, extra=(), processes=1, program=("-m", "encdec")):
  procs = start_training(workdir, devices, extra, processes, program)
  errors = [p.communicate(timeout=600)[1] for p in procs]
  for p in procs:
    assert p.returncode == 0, "\n".join(f"--- process {j} (exit {q.returncode}):\n{e[-2500:]}"
                                         for j, (q, e) in enumerate(zip(procs, errors)))
  return errors


@pytest.mark.slow
def test_two_processes_equal_one_process_and_one_device(tmp_path):
  encdec_train(tmp_path / "one_device", 1)
  encdec_train(tmp_path / "eight_devices", 8, ["--config.mesh.fsdp=2", "--config.mesh.tensor=2"])
  logs = encdec_train(tmp_path / "two_processes", 4,
                      ["--config.mesh.fsdp=2", "--config.mesh.tensor=2"], processes=2)
  assert "resumed" not in logs[0]
  reference = losses(tmp_path / "one_device")
  for run in ("eight_devices", "two_processes"):
    got = losses(tmp_path / run)
    assert sorted(got) == sorted(reference)
    np.testing.assert_allclose([got[s] for s in sorted(got)],
                               [reference[s] for s in sorted(reference)], rtol=2e-4)
  # Both processes wrote their shards of the same checkpoints.
  assert sorted(p.name for p in (tmp_path / "two_processes" / "checkpoints").iterdir()) == [
      "12", "6"]
  # The 2-process checkpoint resumes in one process on 8 devices, then on 2 processes again.
  more = ["--config.train.num_steps=14", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
  log = encdec_train(tmp_path / "two_processes", 8, more)[0]
  assert "resumed from step 12" in log
  more[0] = "--config.train.num_steps=16"
  logs = encdec_train(tmp_path / "two_processes", 4, more, processes=2)
  assert "resumed from step 14" in logs[0] and "final test" not in logs[1]


# `encdec train` whose process 0 takes DELAY_S longer over its own end-of-run work (writing the
# evaluation outputs), with JAX's shutdown barrier cut to SHUTDOWN_S: test-only patches.
SLOW_PROCESS_0_AT_THE_END = """
import sys, time
import jax
from encdec import cli, evaluate, parallel
parallel.SHUTDOWN_TIMEOUT_S = {shutdown_s}
write_outputs = evaluate.write_outputs

def slow_write_outputs(*args, **kwargs):
  assert jax.process_index() == 0
  time.sleep({delay_s})
  return write_outputs(*args, **kwargs)

evaluate.write_outputs = slow_write_outputs
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_processes_leave_together_however_long_process_0_ends(tmp_path):
  """Process 0 spends 3x JAX's (shortened) shutdown deadline alone on its end-of-run work:
  process 1 waits for it before that deadline starts, and both exit 0."""
  program = ("-c", SLOW_PROCESS_0_AT_THE_END.format(shutdown_s=3, delay_s=9))
  logs = encdec_train(tmp_path, 4, ["--config.train.num_steps=2", "--config.mesh.fsdp=2"],
                      processes=2, program=program)
  assert "final test @ 2" in logs[0] and (tmp_path / "eval" / "test-2.json").exists()


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
  """One host preempted: both processes agree on the step, save it together and exit 0."""
  procs = start_training(tmp_path, 4, ["--config.train.num_steps=100000",
                                       "--config.checkpoint.every_steps=100000"], processes=2)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().strip()):
    assert all(p.poll() is None for p in procs) and time.time() < deadline
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  errors = [p.communicate(timeout=300)[1] for p in procs]
  steps = []
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-2000:]
    line = [l for l in err.splitlines() if "preempted at step" in l]
    assert line, err[-2000:]
    steps.append(int(line[0].split("preempted at step ")[1].split(":")[0]))
  assert steps[0] == steps[1] and (tmp_path / "checkpoints" / str(steps[0])).is_dir()


def test_warm_start_merges_by_path_and_mapping():
  from encdec.train import warm_start  # pylint: disable=import-outside-toplevel
  fresh = {"a": {"gate": np.zeros(2)}, "b": np.ones(3), "new": np.zeros(1)}
  old = {"b": 2 * np.ones(3), "c": 5 * np.ones(2)}
  merged, copied, new = warm_start.merge(fresh, old, ("a/gate=c",))
  np.testing.assert_array_equal(merged["a"]["gate"], [5, 5])
  np.testing.assert_array_equal(merged["b"], [2, 2, 2])
  assert copied == ["a/gate", "b"] and new == ["new"]
  with pytest.raises(ValueError, match="shapes differ"):
    warm_start.merge({"b": np.ones(4)}, old)
  with pytest.raises(ValueError, match="expected NEW_REGEX=OLD_PATH"):
    warm_start.merge(fresh, old, ("nonsense",))


def test_init_from_names_each_seeds_own_source_run():
  from encdec.train import warm_start  # pylint: disable=import-outside-toplevel
  assert warm_start.source_run("runs/pre/seed={seed}", 4) == "runs/pre/seed=4"
  assert warm_start.source_run("runs/{seed}/x{seed}", 0) == "runs/0/x0"
  assert warm_start.source_run("runs/mha", 4) == "runs/mha"


@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_init_from_another_run_and_incompatible_checkpoint(tmp_path):
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel
  loop.train(cfg_for((1, 1, 1), **{"train.num_steps": 6}), tmp_path / "a")
  # A learning rate far too small to move any float32 parameter: b keeps what it copied.
  # b's seed (3) names its source: the pretrained run of the same seed.
  (tmp_path / "a").rename(tmp_path / "seed=3")
  frozen = cfg_for((1, 1, 1), **{"train.num_steps": 2, "optim.learning_rate": 1e-30,
                                  "train.seed": 3,
                                  "train.init_from": str(tmp_path / "seed={seed}")})
  loop.train(frozen, tmp_path / "b")
  (tmp_path / "seed=3").rename(tmp_path / "a")
  a, b = run_lib.load(tmp_path / "a").params, run_lib.load(tmp_path / "b").params
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_array_equal(x, y)
  (tmp_path / "a" / "config.json").unlink()
  with pytest.raises(config.ConfigError, match=r"was trained with model.d_model=32 \(now 48\)"):
    loop.train(cfg_for((1, 1, 1), **{"model.d_model": 48}), tmp_path / "a")
  assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["6"]


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
