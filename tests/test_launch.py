"""The cluster launchers in encdec/launch: dry runs print exactly what would run, bad
arguments fail with one clear line, and the local launcher really runs (stand-in) processes,
prefixes their output, propagates failures and forwards SIGTERM. No cluster, no training."""
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import types

import pytest

from encdec.launch import jobs, local, slurm, tpu_vm

TRAIN_ARGS = ["--config", "configs/wmt.py:size=base,variant=mqa", "--workdir", "runs/a b",
              "--config.mesh.data=-1", "--config.mesh.fsdp=8"]


def _dry_run(module, argv, capsys) -> list[str]:
  assert module.main([*argv, "--dry-run", "--", *TRAIN_ARGS]) == 0
  return capsys.readouterr().out.splitlines()


# --- local ------------------------------------------------------------------------------------

def test_local_dry_run_prints_one_command_per_process(capsys, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_force_host_platform_device_count=8")
  lines = _dry_run(local, ["--num-processes", "3", "--devices-per-process", "2",
                           "--port", "12345"], capsys)
  env = ("XLA_FLAGS='--xla_foo=1 --xla_force_host_platform_device_count=2' JAX_PLATFORMS=cpu ")
  train = shlex.join([sys.executable, "-u", "-m", "encdec", "train", *TRAIN_ARGS])
  assert lines == [f"{env}{train} --coordinator_address localhost:12345 --num_processes 3 "
                   f"--process_id {i}" for i in range(3)]


def test_local_dry_run_without_devices_sets_no_env_and_picks_a_port(capsys):
  lines = _dry_run(local, ["--num-processes", "2"], capsys)
  assert len(lines) == 2 and all(line.startswith(sys.executable) for line in lines)
  port = int(shlex.split(lines[0])[shlex.split(lines[0]).index("--coordinator_address") + 1]
             .split(":")[1])
  assert 0 < port < 65536


# --- slurm ------------------------------------------------------------------------------------

# The SLURM launcher loads the config (to validate it, and to know the run's last file).
SLURM_TRAIN_ARGS = ["--config", "algorithmic.py:task=copy", "--workdir", "runs/a b",
                    "--config.train.num_steps=50", "--config.mesh.data=-1",
                    "--config.mesh.fsdp=8"]


def _slurm_dry_run(argv, capsys) -> tuple[list[str], list[str]]:
  """The script's lines, and its srun line as argv."""
  assert slurm.main([*argv, "--dry-run", "--", *SLURM_TRAIN_ARGS]) == 0
  lines = capsys.readouterr().out.splitlines()
  (srun,) = [line for line in lines if line.startswith("srun ")]
  return lines, shlex.split(srun.removesuffix(" || status=$?"))


def test_slurm_dry_run_one_process_per_gpu(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  lines, srun = _slurm_dry_run(["--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu",
                                "--time", "12:00:00", "--job-name", "wmt", "--venv", "/opt/v"],
                               capsys)
  assert lines[0] == "#!/bin/bash"
  for expected in ["#SBATCH --job-name=wmt", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
                   "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu",
                   "#SBATCH --time=12:00:00", "#SBATCH --signal=TERM@120", "#SBATCH --requeue",
                   "#SBATCH --open-mode=append", f"#SBATCH --output={tmp_path}/%x-%j.out",
                   "source /opt/v/bin/activate", "export JAX_LOCAL_DEVICE_IDS=0"]:
    assert expected in lines
  assert srun[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=8", "--gpus-per-task=1"]
  assert srun[4:] == ["encdec", "train", *SLURM_TRAIN_ARGS, "--distributed", "auto"]
  # After srun: requeue unless the run reached its final evaluation (an early stop).
  final = tmp_path / "runs" / "a b" / "eval" / "test_long-50.json"
  assert lines[lines.index(shlex.join(srun) + " || status=$?") - 1] == "status=0"
  assert (f"if [ ! -e {shlex.quote(str(final))} ] && [[ $status == 0 || $status == 143 ]] && "
          f"[ \"${{SLURM_RESTART_COUNT:-0}}\" -lt {slurm.MAX_REQUEUES} ]; then") in lines
  assert lines[-4:] == ['  echo "[slurm] stopped before the final evaluation: requeueing job '
                        '$SLURM_JOB_ID"', '  scontrol requeue "$SLURM_JOB_ID"', "fi",
                        "exit $status"]


def test_slurm_dry_run_one_process_per_node(capsys):
  lines, srun = _slurm_dry_run(["--nodes", "4", "--gpus-per-node", "4", "--process-per", "node"],
                               capsys)
  for expected in ["#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                   "#SBATCH --gpus-per-node=4", "export JAX_LOCAL_DEVICE_IDS=0,1,2,3"]:
    assert expected in lines
  assert not any("--gpus-per-task" in line or "--partition" in line for line in lines)
  assert srun[-2:] == ["--distributed", "auto"]


def test_slurm_dry_run_cpu_nodes(capsys):
  lines, srun = _slurm_dry_run(["--ntasks-per-node", "2", "--cpus-per-task", "4",
                                "--sbatch-option=--account=proj", "--sbatch-option=--exclusive"],
                               capsys)
  for expected in ["#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=2",
                   "#SBATCH --cpus-per-task=4", "#SBATCH --account=proj",
                   "#SBATCH --exclusive"]:
    assert expected in lines
  assert not any("gpu" in line or "JAX_LOCAL_DEVICE_IDS" in line for line in lines)
  # srun repeats --cpus-per-task: since SLURM 22.05 it does not inherit it from sbatch.
  assert srun[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=2",
                      "--cpus-per-task=4"]


def _fake_slurm(tmp_path, monkeypatch, squeue_state=""):
  """sbatch --parsable that answers job 4242 (and records its arguments); squeue that shows
  `squeue_state` for any job."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {bin_dir}/sbatch.args\n'
                                  'echo "4242;cluster"\n')
  (bin_dir / "squeue").write_text(f'#!/bin/sh\necho "$@" > {bin_dir}/squeue.args\n'
                                  f'echo "{squeue_state}"\n')
  for name in ("sbatch", "squeue"):
    (bin_dir / name).chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  return bin_dir


def test_slurm_writes_and_submits_the_script(tmp_path, monkeypatch, capfd):
  bin_dir = _fake_slurm(tmp_path, monkeypatch)
  script = tmp_path / "job.sbatch"
  own = ["--nodes", "1", "--gpus-per-node", "2", "--script", str(script)]
  assert slurm.main([*own, "--submit", "--dry-run", "--", "--workdir", "w"]) == 0
  printed, note = capfd.readouterr()
  assert not script.exists() and f"run: sbatch --parsable {script}" in note
  assert slurm.main([*own, "--", "--workdir", "w"]) == 0
  assert script.read_text() == printed
  assert f"submit it with: sbatch {script}" in capfd.readouterr().out
  assert slurm.main([*own, "--submit", "--", "--workdir", "w"]) == 0
  assert capfd.readouterr().out == f"submitted job 4242: {script}\n"
  assert (bin_dir / "sbatch.args").read_text() == f"--parsable {script}\n"
  assert (tmp_path / "job.jobid").read_text() == "4242\n"


def test_slurm_writes_its_script_into_a_new_directory(tmp_path, capsys):
  script = tmp_path / "sweep" / "slurm" / "run.sbatch"       # as `encdec sweep` asks for
  assert slurm.main(["--nodes", "1", "--gpus-per-node", "1", "--script", str(script), "--",
                     "--workdir", "w"]) == 0
  assert script.read_text().startswith("#!/bin/bash\n") and "wrote" in capsys.readouterr().out
  assert f"#SBATCH --output={script.parent}/%x-%j.out\n" in script.read_text()


def test_slurm_a_bad_config_fails_before_anything_is_written(tmp_path, capsys):
  script = tmp_path / "job.sbatch"
  assert slurm.main(["--ntasks-per-node", "1", "--script", str(script), "--submit", "--",
                     "--config", "algorithmic.py", "--config.model.d_modle=8"]) == 2
  err = capsys.readouterr().err
  assert "unknown config key 'model.d_modle'" in err and len(err.strip().splitlines()) == 1
  assert not script.exists()


@pytest.mark.parametrize("state, queued", [("RUNNING", True), ("PENDING", True), ("", False)])
def test_slurm_knows_whether_a_submitted_job_is_still_queued(tmp_path, monkeypatch, state,
                                                             queued):
  bin_dir = _fake_slurm(tmp_path, monkeypatch, squeue_state=state)
  assert slurm.queued(tmp_path, "run") is None                   # never submitted
  slurm.script_path(tmp_path, "run").parent.mkdir()
  slurm.script_path(tmp_path, "run").with_suffix(slurm.JOB_ID_SUFFIX).write_text("77\n")
  assert slurm.queued(tmp_path, "run") == ("77" if queued else None)
  assert "--jobs=77" in (bin_dir / "squeue.args").read_text()


def test_a_sweep_does_not_submit_a_run_whose_job_is_still_queued(tmp_path, monkeypatch, capsys):
  bin_dir = _fake_slurm(tmp_path, monkeypatch, squeue_state="PENDING")
  runs = [types.SimpleNamespace(name=n, workdir=tmp_path / n, finished=False,
                                train_args=["--config", "algorithmic.py", "--workdir",
                                            str(tmp_path / n)]) for n in ("a", "b")]
  slurm.script_path(tmp_path, "a").parent.mkdir()
  slurm.script_path(tmp_path, "a").with_suffix(slurm.JOB_ID_SUFFIX).write_text("77\n")
  outcomes = jobs.run_launcher("slurm", ["--ntasks-per-node", "1"], "s", runs, tmp_path,
                               dry_run=False)
  assert [(o.name, o.status) for o in outcomes] == [("a", "queued"), ("b", "submitted")]
  assert "a: queued (job 77, submitted earlier)" in capsys.readouterr().out
  assert (bin_dir / "sbatch.args").read_text() == f"--parsable {tmp_path / 'slurm' / 'b.sbatch'}\n"
  assert jobs.summary(outcomes, 1) == ("1 submitted, 1 queued, 1 already finished", True)


# --- TPU VM -----------------------------------------------------------------------------------

def test_tpu_vm_dry_run_quotes_the_remote_command(capsys):
  lines = _dry_run(tpu_vm, ["--tpu", "my-tpu", "--zone", "us-central2-b", "--project", "p1"],
                   capsys)
  assert len(lines) == 1
  remote = ("cd encdec && python3 -m encdec train --config configs/wmt.py:size=base,variant=mqa "
            "--workdir 'runs/a b' --config.mesh.data=-1 --config.mesh.fsdp=8 --distributed auto")
  assert lines[0] == ("gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b --project p1 "
                      f"--worker=all --command {shlex.quote(remote)}")
  # What the local shell passes to gcloud, then what the remote shell runs:
  argv = shlex.split(lines[0])
  assert argv[argv.index("--command") + 1] == remote
  assert shlex.split(remote)[3:] == ["python3", "-m", "encdec", "train", *TRAIN_ARGS,
                                     "--distributed", "auto"]


def test_tpu_vm_setup_installs_first_on_all_workers(capsys):
  lines = _dry_run(tpu_vm, ["--tpu", "t", "--zone", "z", "--setup", "--repo-dir", "~/my code"],
                   capsys)
  assert len(lines) == 2
  setup = shlex.split(lines[0])
  assert setup[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t", "--zone", "z",
                       "--worker=all"]
  assert setup[-1] == "cd ~/'my code' && python3 -m pip install -e . 'jax[tpu]'"
  assert shlex.split(lines[1])[-1].startswith("cd ~/'my code' && python3 -m encdec train ")


# --- bad arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("module, argv, message", [
    (local, ["--num-processes", "0"], "--num-processes: expected a positive integer, got 0"),
    (local, [], "the following arguments are required: --num-processes"),
    (local, ["--num-processes", "2", "--port", "70000"], "a port is at most 65535"),
    (local, ["--num-processes", "2", "--workdir", "w"],
     "unrecognized arguments: --workdir w (arguments for `encdec train` go after `--`)"),
    (local, ["--num-processes", "2", "--", "--process_id=1"],
     "--process_id is set by the launcher; remove it from the arguments after `--`"),
    (slurm, ["--nodes", "2"], "one of the arguments --gpus-per-node --ntasks-per-node is "
                              "required"),
    (slurm, ["--gpus-per-node", "8", "--ntasks-per-node", "2"],
     "--ntasks-per-node: not allowed with argument --gpus-per-node"),
    (slurm, ["--ntasks-per-node", "2", "--process-per", "node"],
     "--process-per is for GPU nodes (--gpus-per-node)"),
    (slurm, ["--ntasks-per-node", "2", "--sbatch-option", "account=x"],
     "expected an sbatch option like --account=NAME"),
    (slurm, ["--nodes", "2", "--gpus-per-node", "8", "--time", "2h"],
     "--time: expected HH:MM:SS"),
    (slurm, ["--nodes", "2", "--gpus-per-node", "8", "--process-per", "core"],
     "--process-per: invalid choice: 'core'"),
    (slurm, ["--nodes", "1", "--gpus-per-node", "1", "--", "--distributed", "auto"],
     "--distributed is set by the launcher"),
    (tpu_vm, ["--tpu", "t"], "required: --zone"),
])
def test_bad_arguments_fail_with_a_clear_error(module, argv, message, capsys):
  assert module.main(argv) == 2
  err = capsys.readouterr().err
  assert message in err and "usage:" in err


# --- a real local run with stand-in processes -------------------------------------------------

STAND_IN = textwrap.dedent("""
    import os, signal, sys, time
    i = int(sys.argv[sys.argv.index("--process_id") + 1])
    n = sys.argv[sys.argv.index("--num_processes") + 1]
    mode = sys.argv[1]
    print(f"process {i} of {n} at {sys.argv[sys.argv.index('--coordinator_address') + 1]} "
          f"devices={os.environ.get('XLA_FLAGS', '').split('=')[-1]}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if mode == "fail" and i == 1:
        sys.exit(3)
    if mode == "fail":
        time.sleep(120)      # stopped by the launcher once process 1 fails
    if mode == "signal":
        def on_term(signum, frame):
            print("got SIGTERM, saving", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        time.sleep(120)
""")


def _launch(tmp_path, mode, **popen_kwargs):
  script = tmp_path / "stand_in.py"
  script.write_text(STAND_IN)
  argv = [sys.executable, "-m", "encdec.launch.local", "--num-processes", "2",
          "--devices-per-process", "3", "--program", shlex.join([sys.executable, str(script)]),
          "--", mode]
  return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **popen_kwargs)


def test_local_runs_processes_and_prefixes_their_output(tmp_path):
  out, err = _launch(tmp_path, "ok").communicate(timeout=60)
  lines = out.splitlines()
  for i in (0, 1):
    assert any(line.startswith(f"[p{i}] process {i} of 2 at localhost:") and
               line.endswith("devices=3") for line in lines), out
    assert f"[p{i}] to stderr" in lines
  assert not err


def test_local_failure_stops_the_others_and_propagates_the_status(tmp_path):
  proc = _launch(tmp_path, "fail")
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 3, (out, err)
  assert "process 1 exited with status 3; stopping the others" in err
  assert "[p0] process 0 of 2" in out and "[p1] process 1 of 2" in out


def test_local_forwards_sigterm_to_every_process(tmp_path):
  proc = _launch(tmp_path, "signal")
  ready = 0
  lines = []
  while ready < 2:
    line = proc.stdout.readline()
    assert line, f"launcher ended early: {lines}"
    lines.append(line)
    ready += line.endswith("] ready\n")
  proc.send_signal(signal.SIGTERM)
  try:
    out, err = proc.communicate(timeout=60)
  except subprocess.TimeoutExpired as e:
    proc.kill()
    pytest.fail(f"the launcher did not stop: {lines}, {e.stdout!r}, {e.stderr!r}")
  assert proc.returncode == 0, (out, err)
  assert "forwarding SIGTERM" in err
  assert "[p0] got SIGTERM, saving" in out and "[p1] got SIGTERM, saving" in out
