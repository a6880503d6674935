"""A sweep's results without its checkpoints, in files a study can commit and carry between
machines: the sweep's sweep.json and, per finished run, RUN.tar.xz holding its config.json,
metrics.jsonl, eval/ (final scores and predictions) and decode_speed.json. Unpacked into a sweep
directory they are what `encdec report` and experiments/*.py read, and `encdec sweep` with the
same --workdir skips the runs there (their final evaluation is there) and trains the rest.

    python -m experiments.run_archive pack runs/study_v2/variants/g2p_cmudict \
        experiments/results/cross_attention_study_v2/archive/variants_g2p_cmudict
    python -m experiments.run_archive unpack \
        experiments/results/cross_attention_study_v2/archive/variants_g2p_cmudict \
        runs/study_v2/variants/g2p_cmudict

One file per run, byte-for-byte reproducible (sorted members, no times or owners): a finished
run's archive never changes, so packing again as a sweep goes on adds files and rewrites none,
and git stores each run once. `unpack` writes no file that exists already (a run directory
present, finished or not, is the directory's own) and names the runs it added.
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import pathlib
import sys
import tarfile
from typing import Mapping

from encdec import sweep
from encdec.errors import ConfigError

RUN_FILES = ("config.json", "metrics.jsonl", "decode_speed.json")
RUN_DIRS = ("eval",)
MANIFEST = "sweep.json"
SUFFIX = ".tar.xz"


def run_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
  """The result files of one run directory (no checkpoints, logs or event files)."""
  files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
  for name in RUN_DIRS:
    files += sorted(p for p in (run_dir / name).glob("*") if p.is_file())
  return files


def finished_runs(directory: pathlib.Path) -> list[str]:
  """Names of the sweep's finished runs (their final evaluation written), in the sweep's order."""
  from encdec.report import discovery  # pylint: disable=import-outside-toplevel (slow: jax)
  manifest, runs = discovery.load_runs(directory)
  if manifest is None:
    raise ConfigError(f"{directory} holds no {MANIFEST}; pass the --workdir of `encdec sweep`")
  return [run.name for run in runs if run.step is not None]


def read_archive(path: pathlib.Path) -> dict[str, bytes]:
  """Member name -> content of one run's archive."""
  try:
    with tarfile.open(path, "r:xz") as tar:
      return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
  except (tarfile.TarError, lzma.LZMAError, EOFError) as e:
    raise ConfigError(f"{path} is not a readable run archive ({e})") from None


def archive_bytes(members: Mapping[str, bytes]) -> bytes:
  """Members in name order, with zeroed times and owners, xz-compressed."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for name in sorted(members):
      info = tarfile.TarInfo(name)
      info.size, info.mode = len(members[name]), 0o644
      tar.addfile(info, io.BytesIO(members[name]))
  return lzma.compress(buffer.getvalue(), preset=9)


def write_atomically(path: pathlib.Path, data: bytes) -> None:
  """Written beside the target and renamed over it: an interrupted pack leaves no torn file."""
  partial = path.with_name(path.name + ".partial")
  partial.write_bytes(data)
  partial.replace(path)


def pack(directory: pathlib.Path, out: pathlib.Path) -> list[str]:
  """OUT/sweep.json and OUT/RUN.tar.xz for each finished run of the sweep directory; returns
  the names of the runs packed."""
  names = finished_runs(directory)
  out.mkdir(parents=True, exist_ok=True)
  write_atomically(out / MANIFEST, (directory / MANIFEST).read_bytes())
  for name in names:
    members = {p.relative_to(directory).as_posix(): p.read_bytes()
               for p in run_files(directory / name)}
    write_atomically(out / f"{name}{SUFFIX}", archive_bytes(members))
  return names


def unpack(archives: pathlib.Path, directory: pathlib.Path) -> list[str]:
  """Writes the runs of ARCHIVES (a pack's OUT) that the directory does not hold yet, and its
  sweep.json if the directory has none; returns the names of the runs written."""
  manifest = archives / MANIFEST
  if not manifest.is_file():
    raise ConfigError(f"{archives} holds no {MANIFEST}; pass the OUT directory of a pack")
  ours = sweep.read_manifest(directory)
  theirs = json.loads(manifest.read_text())
  if ours is not None and ours["runs"] != theirs["runs"]:
    raise ConfigError(f"{directory} holds another sweep than {archives}; use another directory")
  runs = {p.name[:-len(SUFFIX)]: p for p in sorted(archives.glob(f"*{SUFFIX}"))}
  unknown = sorted(set(runs) - set(theirs["runs"]))
  if unknown:
    raise ConfigError(f"{archives} holds runs its {MANIFEST} does not name: {', '.join(unknown)}")
  contents = {name: read_archive(path) for name, path in runs.items()
              if not (directory / name).exists()}      # every archive read before any write
  for name, members in contents.items():
    for member in members:
      if pathlib.PurePosixPath(member).parts[0] != name or ".." in member.split("/"):
        raise ConfigError(f"{runs[name]} has a member outside its run: {member!r}")
  directory.mkdir(parents=True, exist_ok=True)
  if ours is None:
    (directory / MANIFEST).write_bytes(manifest.read_bytes())
  for members in contents.values():
    for member, data in members.items():
      (directory / member).parent.mkdir(parents=True, exist_ok=True)
      (directory / member).write_bytes(data)
  return sorted(contents)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("pack", help="archive a sweep directory's finished runs into OUT")
  p.add_argument("directory", type=pathlib.Path)
  p.add_argument("archive", type=pathlib.Path, metavar="out")
  u = sub.add_parser("unpack", help="write the archived runs into a sweep directory")
  u.add_argument("archive", type=pathlib.Path, metavar="archives")
  u.add_argument("directory", type=pathlib.Path)
  args = parser.parse_args(argv)
  try:
    if args.command == "pack":
      names = pack(args.directory, args.archive)
      size = sum(p.stat().st_size for p in args.archive.glob(f"*{SUFFIX}"))
      print(f"packed {len(names)} finished runs into {args.archive} ({size / 1024:.0f} KiB in all)")
    else:
      names = unpack(args.archive, args.directory)
      print(f"unpacked {len(names)} runs into {args.directory}: {', '.join(names) or 'none new'}")
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
