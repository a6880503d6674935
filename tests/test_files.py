import os

import pytest

from encdec import files


def test_write_atomically_replaces_the_whole_file(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("old")
  files.write_atomically(path, "new\n")
  assert path.read_text() == "new\n"
  files.write_atomically(path, b"\x00bytes")
  assert path.read_bytes() == b"\x00bytes"
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_an_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "config.json"
  path.write_text('{"old": 1}')
  seen_during_write = []

  def interrupted(src, dst):   # a reader between writing and renaming sees the old file whole
    seen_during_write.append(path.read_text())
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "replace", interrupted)
  with pytest.raises(KeyboardInterrupt):
    files.write_atomically(path, '{"new": 2}')
  assert seen_during_write == ['{"old": 1}']
  assert path.read_text() == '{"old": 1}'
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
