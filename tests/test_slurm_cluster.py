"""encdec's SLURM launcher against a real scheduler: a one-node cluster on localhost
(tests/slurm_cluster.py; skipped without slurm-wlm, munge and root). Real `sbatch` jobs of tiny
copy-task runs, asserted on what they write: one task equals a local run, two tasks
(`--distributed auto`) equal one process, a sweep is submitted, collected, skipped and
reported, and a preempted job checkpoints, requeues and ends like an uninterrupted one."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from encdec import cli, writers
from encdec.launch import slurm
import slurm_cluster

pytestmark = pytest.mark.slow

CONFIG = "configs/algorithmic.py:task=copy"
TINY = {"task.max_len": 6, "task.num_train": 500, "task.num_eval": 32, "model.d_model": 16,
        "model.d_ff": 32, "model.num_heads": 2, "model.num_encoder_layers": 1,
        "model.num_decoder_layers": 1, "model.dropout_rate": 0.1, "train.num_steps": 12,
        "train.batch_size": 16, "logging.every_steps": 2, "checkpoint.every_steps": 6,
        "eval.every_steps": 1000, "eval.final_split": "test", "logging.tensorboard": False}
ONE_CPU_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                  "JAX_PLATFORMS": "cpu"}
JOB_TIMEOUT_S = 300


@pytest.fixture(autouse=True)
def _one_device_per_process(monkeypatch):
  """Jobs get the submitting environment (sbatch --export=ALL): one CPU device per process."""
  for key, value in ONE_CPU_DEVICE.items():
    monkeypatch.setenv(key, value)


def train_args(workdir, **overrides) -> list[str]:
  settings = {**TINY, **overrides}
  return ["--config", CONFIG, "--workdir", str(workdir),
          *[f"--config.{k}={v}" for k, v in settings.items()]]


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in writers.read_metrics(workdir) if "train/loss" in r}


def submit(tmp_path, name, launcher_args, workdir, **overrides) -> str:
  """sbatch a run through encdec.launch.slurm; the job id."""
  script = tmp_path / f"{name}.sbatch"
  assert slurm.main([*launcher_args, "--job-name", name, "--venv", sys.prefix, "--script",
                     str(script), "--submit", "--", *train_args(workdir, **overrides)]) == 0
  return script.with_suffix(slurm.JOB_ID_SUFFIX).read_text().strip()


def job_log(tmp_path, name, job_id) -> str:
  path = tmp_path / f"{name}-{job_id}.out"
  return path.read_text(errors="replace") if path.exists() else f"(no log {path})"


def completed(cluster, tmp_path, name, job_id) -> str:
  """Wait for the job; assert that it completed with status 0; its log."""
  info = cluster.wait_for_job(job_id, timeout_s=JOB_TIMEOUT_S)
  log = job_log(tmp_path, name, job_id)
  assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), f"{info}\n{log[-3000:]}"
  return log


def wait_for_rows(cluster, job_id, workdir, after_step: int) -> None:
  """Until WORKDIR/metrics.jsonl has a training row after `after_step` (the job is training)."""
  def training():
    assert cluster.job(job_id)["JobState"] in ("PENDING", "RUNNING"), cluster.job(job_id)
    return (workdir / "metrics.jsonl").exists() and max(losses(workdir), default=0) > after_step
  cluster.wait_until(training, f"job {job_id} to train past step {after_step}", JOB_TIMEOUT_S)


def start_now(cluster, job_id, log) -> None:
  """Once the job is requeued: start it (almost) now. SLURM makes a requeued job wait ~2 minutes
  (its BeginTime) before it may start again; no need for that here, but slurmd refuses a launch
  whose credential is not newer, in whole seconds, than the revocation of the job's previous
  one ("Job credential revoked": the job fails). So wait past the next second boundary."""
  info = cluster.wait_for_job(job_id, ("PENDING", *slurm_cluster.ENDED))
  assert info["JobState"] == "PENDING", f"{info}\n{log()[-3000:]}"
  time.sleep(2.0)
  cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module", name="cluster")
def fixture_cluster(tmp_path_factory):
  """The one-node cluster of tests/slurm_cluster.py, for this module's tests."""
  with slurm_cluster.running(tmp_path_factory.mktemp("slurm")) as cluster:
    yield cluster


@pytest.fixture(scope="module")
def local_losses(tmp_path_factory):
  """The losses of the tiny run in one local process on one CPU device."""
  workdir = tmp_path_factory.mktemp("local")
  subprocess.run([sys.executable, "-m", "encdec", "train", *train_args(workdir)], check=True,
                 env={**os.environ, **ONE_CPU_DEVICE}, capture_output=True, timeout=600)
  return losses(workdir)


def test_the_cluster_is_on_its_own_files(cluster):
  """Nothing of the fixture's in /etc: clients find it through SLURM_CONF."""
  assert os.environ["SLURM_CONF"] == str(cluster.conf)
  config = cluster.run(["scontrol", "show", "config"]).stdout
  assert f"SLURM_CONF              = {cluster.conf}" in config
  assert cluster.node_state() == "idle"


def test_one_task_job_equals_a_local_run(cluster, local_losses, tmp_path):
  job = submit(tmp_path, "one", ["--ntasks-per-node", "1"], tmp_path / "run")
  log = completed(cluster, tmp_path, "one", job)
  assert "final test @ 12" in log and (tmp_path / "run" / "eval" / "test-12.json").exists()
  assert "requeueing" not in log
  assert losses(tmp_path / "run") == local_losses


def test_two_task_job_equals_one_process(cluster, local_losses, tmp_path):
  # mesh.data=2 needs both processes' devices: a task that did not join would fail.
  job = submit(tmp_path, "two", ["--ntasks-per-node", "2"], tmp_path / "run",
               **{"mesh.data": 2})
  completed(cluster, tmp_path, "two", job)
  assert cluster.job(job)["NumTasks"] == "2"
  got = losses(tmp_path / "run")
  assert sorted(got) == sorted(local_losses)
  np.testing.assert_allclose([got[s] for s in sorted(got)],
                             [local_losses[s] for s in sorted(local_losses)], rtol=2e-4)
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["12", "6"]


SWEEP_CONFIG = """
from encdec import config, sweep

def get_config(arg=None):
  return config.load({config!r}, {tiny!r})

SWEEPS = {{"seeds": lambda: sweep.grid(seeds=(0, 1, 2, 3))}}
"""


def test_sweep_submits_collects_skips_and_reports(cluster, tmp_path, capsys):
  config_file = tmp_path / "tiny.py"
  config_file.write_text(SWEEP_CONFIG.format(config=CONFIG, tiny=TINY))
  workdir = tmp_path / "sweep"
  names = [f"seed={s}" for s in range(4)]
  command = ["sweep", "--config", str(config_file), "--sweep", "seeds", "--workdir",
             str(workdir), "--launcher", "slurm",
             "--launcher-args", f"--ntasks-per-node 1 --venv {sys.prefix}"]

  def sweep_again(expected_summary: str) -> str:
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert f"[sweep] seeds: {expected_summary}\n" in out, out
    return out

  sweep_again("4 submitted, 0 already finished")
  jobs = {n: slurm.active_job(slurm.script_path(workdir, n)) for n in names}
  assert all(jobs.values()), jobs
  sweep_again("4 queued, 0 already finished")           # nothing submitted twice
  for name, job in jobs.items():
    completed(cluster, workdir / "slurm", f"seeds.{name}", job)
  out = sweep_again("4 already finished")
  assert all(f"skip {n} (finished" in out for n in names)
  # A run whose final evaluation is gone is submitted again, and resumes.
  (workdir / "seed=2" / "eval" / "test-12.json").unlink()
  sweep_again("1 submitted, 3 already finished")
  job = (workdir / "slurm" / "seed=2.jobid").read_text().strip()
  assert job != jobs["seed=2"]
  assert "resumed from step 12" in completed(cluster, workdir / "slurm", "seeds.seed=2",
                                             job)
  assert cli.main(["report", str(workdir), "--no-decode-speed", "--resamples", "10"]) == 0
  report = (workdir / "report.md").read_text()
  assert "4 finished runs in 1 groups" in report and "| **base** | 4 |" in report, report


# Long enough (seconds of training) for a signal to reach a job while it trains.
LONG = {"train.num_steps": 2000, "logging.every_steps": 50, "checkpoint.every_steps": 10_000}


def test_preempted_job_requeues_and_ends_like_an_uninterrupted_one(cluster, tmp_path):
  """Three early stops in one job. `scancel --signal=TERM` while encdec starts up (it dies of
  it) and while it trains (it saves a checkpoint and exits): the script requeues the job. Then
  `scontrol requeue` (SLURM ends and requeues it, as on a preemption): encdec saves again. The
  job ends with the losses of a job that ran straight through."""
  straight = submit(tmp_path, "straight", ["--ntasks-per-node", "1"], tmp_path / "straight",
                    **LONG)
  job = submit(tmp_path, "preempted", ["--ntasks-per-node", "1"], tmp_path / "run", **LONG)
  log = lambda: job_log(tmp_path, "preempted", job)  # noqa: E731
  cluster.wait_until(lambda: f"{job}.0" in cluster.steps(job), f"job {job} to start srun", 120)
  cluster.run(["scancel", "--signal=TERM", job])          # encdec is still importing
  start_now(cluster, job, log)
  assert "Terminated" in log() and not (tmp_path / "run" / "checkpoints").exists(), log()
  wait_for_rows(cluster, job, tmp_path / "run", 0)
  cluster.run(["scancel", "--signal=TERM", job])
  start_now(cluster, job, log)
  (first_stop,) = checkpoint_steps(tmp_path / "run")
  wait_for_rows(cluster, job, tmp_path / "run", first_stop)
  cluster.run(["scontrol", "requeue", job])
  start_now(cluster, job, log)
  assert len(checkpoint_steps(tmp_path / "run")) == 2, log()
  text = completed(cluster, tmp_path, "preempted", job)
  assert cluster.job(job)["Restarts"] == "3"
  assert text.count("preempted at step") == 2 and text.count("resumed from step") == 2, text
  assert f"resumed from step {first_stop} " in text
  assert text.count("requeueing job") == 2               # the first two times, by the script
  completed(cluster, tmp_path, "straight", straight)
  reference, got = losses(tmp_path / "straight"), losses(tmp_path / "run")
  assert sorted(got) == sorted(reference) and max(got) == LONG["train.num_steps"]
  np.testing.assert_allclose([got[s] for s in sorted(got)],
                             [reference[s] for s in sorted(reference)], rtol=1e-6)


def test_scancel_ends_a_job_for_good_after_a_checkpoint(cluster, tmp_path):
  """A plain `scancel` is not an early stop to requeue: the job is cancelled, and encdec,
  which gets SIGTERM KillWait seconds before SIGKILL, still saves a checkpoint."""
  job = submit(tmp_path, "cancelled", ["--ntasks-per-node", "1"], tmp_path / "run", **LONG)
  wait_for_rows(cluster, job, tmp_path / "run", 0)
  cluster.run(["scancel", job])
  info = cluster.wait_for_job(job)
  cluster.wait_until(lambda: job not in cluster.job_ids(), f"job {job} to end", 60)
  assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0"), info
  assert "requeueing" not in job_log(tmp_path, "cancelled", job)
  (step,) = checkpoint_steps(tmp_path / "run")
  assert 0 < step < LONG["train.num_steps"]
