"""Files written whole or not at all."""
from __future__ import annotations

import os
import pathlib
import tempfile


def write_atomically(path: str | pathlib.Path, data: str | bytes) -> None:
  """Write `data` to a temporary file in `path`'s directory, then rename it onto `path`: a
  reader (another process of the same run, a resumed run after kill -9) sees the old file or
  the new one, never a partial one."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
