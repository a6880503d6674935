"""A sweep's results without its checkpoints, as one compressed file a study can commit and
carry between machines: every finished run's config.json, metrics.jsonl, eval/ (final scores
and predictions) and decode_speed.json, and the sweep's sweep.json. Unpacked into a sweep
directory it is what `encdec report` and experiments/*.py read, and `encdec sweep` with the
same --workdir skips the runs in it (their final evaluation is there) and trains the rest.

    python -m experiments.run_archive pack runs/study_v2/variants/g2p_cmudict \
        experiments/results/cross_attention_study_v2/runs/variants_g2p_cmudict.tar.xz
    python -m experiments.run_archive unpack \
        experiments/results/cross_attention_study_v2/runs/variants_g2p_cmudict.tar.xz \
        runs/study_v2/variants/g2p_cmudict

`pack` merges: runs already in an existing archive stay there unless the directory holds them
too (then the directory's files win). The archive is byte-for-byte reproducible (sorted members,
no times or owners), so re-packing unchanged runs leaves git with nothing to commit.
`unpack` writes no file that exists already (a run with a checkpoint directory, finished or
not, is the directory's own) and names the runs it added.
"""
from __future__ import annotations

import argparse
import io
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


def run_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
  """The result files of one run directory (no checkpoints, logs or event files)."""
  files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
  for name in RUN_DIRS:
    files += sorted(p for p in (run_dir / name).glob("*") if p.is_file())
  return files


def finished_runs(directory: pathlib.Path) -> list[str]:
  """Names of the sweep's finished runs (their final evaluation written), in the sweep's order."""
  manifest = sweep.read_manifest(directory)
  if manifest is None:
    raise ConfigError(f"{directory} holds no {MANIFEST}; pass the --workdir of `encdec sweep`")
  finished = []
  for name in manifest["runs"]:
    config = directory / name / "config.json"
    if config.is_file() and _is_finished(directory / name):
      finished.append(name)
  return finished


def _is_finished(run_dir: pathlib.Path) -> bool:
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel (slow: jax)
  from encdec.report import discovery  # pylint: disable=import-outside-toplevel
  step, _ = discovery.final_scores(run_dir, run_lib.load_config(run_dir))
  return step is not None


def read_archive(path: pathlib.Path) -> dict[str, bytes]:
  """Member name -> content of an archive (empty when there is none yet)."""
  if not path.exists():
    return {}
  try:
    with tarfile.open(path, "r:xz") as tar:
      return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
  except (tarfile.TarError, lzma.LZMAError, EOFError) as e:
    raise ConfigError(f"{path} is not a readable run archive ({e})") from None


def write_archive(path: pathlib.Path, members: Mapping[str, bytes]) -> None:
  """Members in name order, with zeroed times and owners, xz-compressed; written beside the
  target and renamed over it, so an interrupted pack leaves the old archive whole."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for name in sorted(members):
      info = tarfile.TarInfo(name)
      info.size, info.mode = len(members[name]), 0o644
      tar.addfile(info, io.BytesIO(members[name]))
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  partial.write_bytes(lzma.compress(buffer.getvalue(), preset=9))
  partial.replace(path)


def run_of(member: str) -> str | None:
  """The run a member belongs to (None for the sweep's own files)."""
  return member.split("/", 1)[0] if "/" in member else None


def pack(directory: pathlib.Path, archive: pathlib.Path) -> list[str]:
  """Adds the directory's finished runs to the archive (replacing their earlier copies);
  returns the names of the runs packed from the directory."""
  names = finished_runs(directory)
  members = {m: data for m, data in read_archive(archive).items() if run_of(m) not in names}
  members[MANIFEST] = (directory / MANIFEST).read_bytes()
  for name in names:
    for path in run_files(directory / name):
      members[path.relative_to(directory).as_posix()] = path.read_bytes()
  write_archive(archive, members)
  return names


def unpack(archive: pathlib.Path, directory: pathlib.Path) -> list[str]:
  """Writes the archive's runs that the directory does not hold yet; returns their names."""
  members = read_archive(archive)
  if not members:
    raise ConfigError(f"{archive} does not exist or is empty")
  for name in members:
    if name.startswith("/") or ".." in pathlib.PurePosixPath(name).parts:
      raise ConfigError(f"{archive} has an unsafe member name {name!r}")
  present = {r for r in map(run_of, members) if r and (directory / r).exists()}
  added = sorted({r for r in map(run_of, members) if r and r not in present})
  for name, data in members.items():
    target = directory / name
    if run_of(name) in present or target.exists():
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
  return added


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("pack", help="add a sweep directory's finished runs to an archive")
  p.add_argument("directory", type=pathlib.Path)
  p.add_argument("archive", type=pathlib.Path)
  u = sub.add_parser("unpack", help="write an archive's runs into a sweep directory")
  u.add_argument("archive", type=pathlib.Path)
  u.add_argument("directory", type=pathlib.Path)
  args = parser.parse_args(argv)
  try:
    if args.command == "pack":
      names = pack(args.directory, args.archive)
      print(f"packed {len(names)} finished runs into {args.archive} "
            f"({args.archive.stat().st_size / 1024:.0f} KiB)")
    else:
      names = unpack(args.archive, args.directory)
      print(f"unpacked {len(names)} runs into {args.directory}: {', '.join(names) or 'none new'}")
  except ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
