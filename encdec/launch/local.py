"""Run one multi-process `encdec train` on this machine: N processes that join through a
coordinator on localhost (with K simulated CPU devices each, for testing multi-host code).

    python -m encdec.launch.local --num-processes 2 --devices-per-process 4 [--port P] \
        [--dry-run] -- --config configs/algorithmic.py --workdir runs/mp

Process i runs `python -m encdec train ARGS --coordinator_address localhost:P
--num_processes N --process_id i`. Every output line is prefixed `[pI] `. The launcher waits
for all processes and exits with the first failure's status; when one process fails the others
are stopped (SIGTERM, then SIGKILL after a grace period). SIGTERM / SIGINT sent to the launcher
are forwarded to every process, so `encdec train` saves a checkpoint and exits cleanly (a
second Ctrl-C aborts, as in `encdec train` itself).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Iterator, Mapping, Sequence

from encdec.launch import common

COORDINATOR_HOST = "localhost"
FORCE_DEVICES_FLAG = "--xla_force_host_platform_device_count"
TERMINATE_GRACE_S = 10.0   # after a failure: SIGTERM the others, SIGKILL what is left after this
POLL_S = 0.1


def _port(text: str) -> int:
  port = common.positive_int(text)
  if port > 65535:
    raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
  return port


def build_parser() -> argparse.ArgumentParser:
  """This launcher's command line (its own flags; `encdec train`'s go after `--`)."""
  parser = argparse.ArgumentParser(
      prog="python -m encdec.launch.local", description=__doc__.split("\n\n")[0],
      usage="%(prog)s --num-processes N [--devices-per-process K] [--port P] [--dry-run] "
            "-- ENCDEC_TRAIN_ARGS...")
  parser.add_argument("--num-processes", type=common.positive_int, required=True,
                      help="number of processes of `encdec train`")
  parser.add_argument("--devices-per-process", type=common.positive_int, default=None,
                      metavar="K", help="simulate K CPU devices per process (sets XLA_FLAGS and "
                      "JAX_PLATFORMS=cpu); default: the environment decides the devices")
  parser.add_argument("--port", type=_port, default=None,
                      help="coordinator port on localhost (default: a free port)")
  common.add_dry_run(parser)
  # Tests only: a stand-in for `python -u -m encdec train` (a shell-quoted command line).
  parser.add_argument("--program", default=None, help=argparse.SUPPRESS)
  return parser


def free_port() -> int:
  """A TCP port that is free on localhost right now."""
  with socket.socket() as s:
    s.bind((COORDINATOR_HOST, 0))
    return s.getsockname()[1]


def process_env(devices_per_process: int | None,
                environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """The environment variables the launcher sets (on top of `environ`) in every process."""
  if devices_per_process is None:
    return {}
  kept = [f for f in environ.get("XLA_FLAGS", "").split() if not f.startswith(FORCE_DEVICES_FLAG)]
  return {"XLA_FLAGS": " ".join([*kept, f"{FORCE_DEVICES_FLAG}={devices_per_process}"]),
          "JAX_PLATFORMS": "cpu"}


def commands(num_processes: int, port: int, train_args: Sequence[str],
             program: Sequence[str]) -> list[list[str]]:
  """The argv of each process, in process order."""
  coordinator = f"{COORDINATOR_HOST}:{port}"
  return [common.train_argv(train_args, ["--coordinator_address", coordinator,
                                         "--num_processes", str(num_processes),
                                         "--process_id", str(i)], program)
          for i in range(num_processes)]


def _pump(stream: IO[str], prefix: str, lock: threading.Lock) -> None:
  """Copy a process's output to our stdout line by line, each line prefixed."""
  for line in stream:
    with lock:
      sys.stdout.write(prefix + line.rstrip("\n") + "\n")
      sys.stdout.flush()
  stream.close()


def _send(procs: Sequence[subprocess.Popen], signum: int) -> None:
  for p in procs:
    if p.poll() is None:
      with contextlib.suppress(ProcessLookupError):
        p.send_signal(signum)


def _kill_groups(procs: Sequence[subprocess.Popen]) -> None:
  """SIGKILL each still-running process and its own children (each leads a process group)."""
  for p in procs:
    if p.poll() is None:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)


@contextlib.contextmanager
def _catching_signals(received: list[int]) -> Iterator[None]:
  """While inside, SIGTERM / SIGINT to the launcher are appended to `received` (and nothing
  else: the wait loop forwards them, so no process is signalled from inside a handler)."""
  signals = (signal.SIGTERM, signal.SIGINT)
  in_main_thread = threading.current_thread() is threading.main_thread()
  def catch(signum, frame):  # pylint: disable=unused-argument
    received.append(signum)
  previous = {s: signal.signal(s, catch) for s in signals} if in_main_thread else {}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _wait(procs: Sequence[subprocess.Popen], received: list[int]) -> int:
  """Wait for every process, forwarding each signal in `received` to them; on the first failure
  stop the others. Returns the exit status."""
  failure, kill_at, forwarded = None, None, 0
  while True:
    for signum in received[forwarded:]:
      print(f"[launch] forwarding {signal.Signals(signum).name} to the processes", file=sys.stderr,
            flush=True)
      _send(procs, signum)
      forwarded += 1
    codes = [p.poll() for p in procs]
    if failure is None:
      failed = next(((i, c) for i, c in enumerate(codes) if c), None)
      if failed is not None:
        failure = common.exit_status(failed[1])
        print(f"[launch] process {failed[0]} exited with status {failure}; stopping the others",
              file=sys.stderr, flush=True)
        _send(procs, signal.SIGTERM)
        kill_at = time.monotonic() + TERMINATE_GRACE_S
    if all(c is not None for c in codes):
      return failure or 0
    if kill_at is not None and time.monotonic() > kill_at:
      _kill_groups(procs)
      kill_at = None
    time.sleep(POLL_S)


def run_processes(argvs: Sequence[Sequence[str]], env: Mapping[str, str]) -> int:
  """Start one process per argv (each in its own process group, so a terminal's Ctrl-C reaches
  them only through the launcher, once), stream their prefixed output, return the status."""
  received: list[int] = []
  with _catching_signals(received):  # from before the first start: no signal is missed
    procs: list[subprocess.Popen] = []
    try:
      for argv in argvs:
        procs.append(subprocess.Popen(list(argv), env={**os.environ, **env},
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace",
                                      start_new_session=True))
    except OSError as e:
      print(f"error: cannot start {shlex.join(argv)}: {e}", file=sys.stderr)
      _kill_groups(procs)
      return 127
    lock = threading.Lock()
    pumps = [threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", lock), daemon=True)
             for i, p in enumerate(procs)]
    for pump in pumps:
      pump.start()
    status = _wait(procs, received)
  for pump in pumps:
    pump.join()
  return status


@common.returns_exit_code
def main(argv: Sequence[str] | None = None) -> int:
  """Parse the command line, then print (--dry-run) or run the processes."""
  args, train_args = common.parse(build_parser(), argv)
  program = (shlex.split(args.program) if args.program
             else common.python_train(sys.executable, "-u"))  # -u: stream output unbuffered
  argvs = commands(args.num_processes, args.port or free_port(), train_args, program)
  env = process_env(args.devices_per_process)
  if args.dry_run:
    for argv_i in argvs:
      print(common.shell_line(argv_i, env))
    return 0
  return run_processes(argvs, env)


if __name__ == "__main__":
  sys.exit(main())
