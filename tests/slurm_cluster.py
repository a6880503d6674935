"""A one-node SLURM cluster on localhost, for tests of the SLURM launcher with real jobs.

Given the Debian packages `slurm-wlm` and `munge` (.ci/run installs them), `LocalSlurm` writes
a munge key and a minimal slurm.conf into a directory of its own, starts `munged`, `slurmctld`
and `slurmd` there as background processes, waits until `sinfo` shows the node idle, and at
the end cancels what is left of its jobs and stops the daemons by their own pids. Nothing is
written to /etc: the daemons get their files by option (`-f slurm.conf`, `--key-file`, ...)
and every client command finds the cluster through SLURM_CONF.

One node, `localhost`, with 2 CPUs (whatever the hardware: `config_overrides`), each CPU
shared by up to 2 jobs (`OverSubscribe=FORCE:2`), no cgroups (`proctrack/linuxproc`,
`task/none`), no accounting (finished jobs stay visible to `scontrol show job` for
MIN_JOB_AGE_S). slurmd runs as root (it starts jobs as their owner), so the fixture needs root.

    with slurm_cluster.running(tmp_dir) as cluster:   # pytest.skip without SLURM or root
      cluster.run(["sbatch", ...]); cluster.wait_for_job(job_id)
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Iterator, Sequence

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
# The node's name, which always resolves: JAX's coordinator is the first node of the job.
NODE = "localhost"
CPUS = 2
KILL_WAIT_S = 30          # SIGTERM --> SIGKILL when SLURM ends a job: time to save a checkpoint
MIN_JOB_AGE_S = 1800      # finished jobs stay in `scontrol show job` this long
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE")

SLURM_CONF = """\
ClusterName=encdectest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait={kill_wait}
MinJobAge={min_job_age}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
"""


def find(program: str) -> str | None:
  """The program's path: on PATH, or in the sbin directories (daemons, off a user's PATH)."""
  path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
  return shutil.which(program, path=path)


def skip_reason() -> str | None:
  """Why the local cluster cannot run here, or None."""
  missing = [b for b in DAEMONS + CLIENTS if find(b) is None]
  if missing:
    return (f"SLURM is not installed ({', '.join(missing)} not on PATH): "
            "apt-get install slurm-wlm munge, as .ci/run does as root")
  if os.geteuid() != 0:
    return "the local SLURM cluster needs root (slurmd starts jobs as their owner)"
  return None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalSlurm:
  """The daemons of a one-node cluster whose files all live in `directory`."""

  def __init__(self, directory: pathlib.Path):
    self.dir = pathlib.Path(directory).resolve()
    self.host = NODE
    self.conf = self.dir / "slurm.conf"
    self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
    self.procs: list[subprocess.Popen] = []

  # --------------------------------------------------------------------------- set up
  def write_files(self) -> None:
    """The munge key (mode 0600) and slurm.conf, and the directories they name."""
    for sub in ("munge", "state", "spool", "log"):
      (self.dir / sub).mkdir(parents=True, exist_ok=True)
    key = self.dir / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    self.conf.write_text(SLURM_CONF.format(
        host=self.host, dir=self.dir, ctld_port=free_port(), slurmd_port=free_port(),
        cpus=CPUS, kill_wait=KILL_WAIT_S, min_job_age=MIN_JOB_AGE_S))

  def daemon_commands(self) -> list[list[str]]:
    """munged, slurmctld, slurmd: each in the foreground, so that its pid is the one we
    started (munged's `--force`: it runs as root and under a world-writable /tmp)."""
    munge = self.dir / "munge"
    return [[find("munged"), "--foreground", "--force", f"--key-file={munge / 'munge.key'}",
             f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
             f"--seed-file={munge / 'munged.seed'}", f"--log-file={munge / 'munged.log'}"],
            [find("slurmctld"), "-D", "-f", str(self.conf)],
            [find("slurmd"), "-D", "-f", str(self.conf), "-N", NODE]]

  def start(self) -> None:
    """Write the files, start the daemons one after another, wait for an idle node."""
    self.write_files()
    ready = [lambda: (self.dir / "munge" / "munge.socket").exists(),
             lambda: self.run(["scontrol", "ping"], check=False).returncode == 0,
             lambda: self.node_state() == "idle"]
    for argv, is_ready in zip(self.daemon_commands(), ready):
      name = pathlib.Path(argv[0]).name
      with (self.dir / "log" / f"{name}.out").open("w") as out:
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
      self.wait_until(is_ready, f"{name} to be ready")

  def wait_until(self, condition, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll `condition()` until true; a RuntimeError (with the daemons' logs) on a timeout or
    when a daemon has exited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
      dead = [pathlib.Path(p.args[0]).name for p in self.procs if p.poll() is not None]
      if dead or time.monotonic() > deadline:
        raise RuntimeError(f"local SLURM: gave up waiting for {what}"
                           + (f" ({', '.join(dead)} exited)" if dead else "")
                           + f"; logs in {self.dir / 'log'}\n{self.logs_tail()}")
      time.sleep(0.5)

  def logs_tail(self, lines: int = 15) -> str:
    out = []
    for path in sorted((self.dir / "log").glob("*")):
      text = path.read_text(errors="replace").splitlines()[-lines:]
      out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)

  # ------------------------------------------------------------------------- clients
  def run(self, argv: Sequence[str], check: bool = True, timeout_s: float = 60
          ) -> subprocess.CompletedProcess:
    """A SLURM client command against this cluster."""
    result = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    if check and result.returncode:
      raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result

  def node_state(self) -> str:
    result = self.run(["sinfo", "--noheader", "--format=%t"], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""

  def job(self, job_id: str) -> dict[str, str]:
    """`scontrol show job ID` as KEY -> VALUE (JobState, Restarts, Reason, ...)."""
    text = self.run(["scontrol", "show", "job", "--oneliner", str(job_id)]).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))

  def wait_for_job(self, job_id: str, states: Sequence[str] = ENDED, timeout_s: float = 300
                   ) -> dict[str, str]:
    """The job's record once its state is one of `states` (by default: ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
      info = self.job(job_id)
      if info.get("JobState") in states:
        return info
      if time.monotonic() > deadline:
        raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout_s} s: "
                           f"{info}")
      time.sleep(0.5)

  def steps(self, job_id: str) -> list[str]:
    """The job's running steps (`JOBID.0`, ...: what srun started)."""
    out = self.run(["squeue", "--steps", "--noheader", f"--jobs={job_id}", "--format=%i"],
                   check=False).stdout
    return out.split()

  def job_ids(self) -> list[str]:
    """Jobs still pending, running or completing."""
    out = self.run(["squeue", "--noheader", "--format=%i"], check=False).stdout
    return out.split()

  # -------------------------------------------------------------------------- tear down
  def stop(self) -> None:
    """Cancel the jobs left, wait for them to end, stop the daemons (newest first) by pid,
    then end any job step daemon of this cluster that outlived them."""
    if self.procs and self.procs[-1].poll() is None and self.job_ids():
      self.run(["scancel", "--full", *self.job_ids()], check=False)
      with contextlib.suppress(RuntimeError):
        self.wait_until(lambda: not self.job_ids(), "cancelled jobs to end", KILL_WAIT_S + 15)
    for proc in reversed(self.procs):
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
          proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
    self.procs.clear()
    for pid in self.stray_step_daemons():
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)

  def stray_step_daemons(self) -> list[int]:
    """Pids of slurmstepd processes started by this cluster's slurmd (they carry its
    SLURM_CONF in their environment); slurmstepd outlives slurmd by design."""
    pids, marker = [], f"SLURM_CONF={self.conf}".encode()
    for entry in pathlib.Path("/proc").iterdir():
      if not entry.name.isdigit():
        continue
      with contextlib.suppress(OSError):
        if (entry / "comm").read_text().strip() == "slurmstepd" and \
            marker in (entry / "environ").read_bytes().split(b"\0"):
          pids.append(int(entry.name))
    return pids

  def __enter__(self) -> "LocalSlurm":
    try:
      self.start()
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc) -> None:
    self.stop()


@contextlib.contextmanager
def running(directory: pathlib.Path) -> Iterator[LocalSlurm]:
  """A running cluster in `directory` (pytest.skip where it cannot run); SLURM_CONF points at
  it inside, so that encdec's launcher (and sbatch) submit to it."""
  reason = skip_reason()
  if reason:
    pytest.skip(reason)
  previous = os.environ.get("SLURM_CONF")
  with LocalSlurm(directory) as cluster:
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
      yield cluster
    finally:
      if previous is None:
        os.environ.pop("SLURM_CONF", None)
      else:
        os.environ["SLURM_CONF"] = previous
