"""Registries: a name in the config --> the class (or function) it selects.

    CROSS_ATTENTION = Registry("model.cross_attention", {
        "mha": "encdec.model.cross_attention:MultiHeadCrossAttention", ...})
    "mqa" in CROSS_ATTENTION           # a name check: imports nothing
    CROSS_ATTENTION["mqa"]             # imports encdec.model.cross_attention, returns the class
    CROSS_ATTENTION["mqx"]             # ConfigError: unknown model.cross_attention 'mqx'; valid: ...

Entries are "module:attribute" paths, imported on first lookup, so validating a config's names
imports neither Flax nor TFDS. An entry may also be the object itself (tests register
throwaway variants with `monkeypatch.setitem(CROSS_ATTENTION, "name", cls)`).
"""
from __future__ import annotations

import importlib
from typing import Any, Iterator, MutableMapping

from encdec.errors import ConfigError


class Registry(MutableMapping[str, Any]):
  """Names --> objects, given as "module:attribute" paths and imported when looked up."""

  def __init__(self, key: str, entries: dict[str, Any]):
    self.key = key              # the config key that selects an entry, for error messages
    self._entries = dict(entries)

  def check(self, name: str) -> None:
    """A ConfigError listing the valid names if `name` is not registered (imports nothing)."""
    if name not in self._entries:
      raise ConfigError(f"unknown {self.key} {name!r}; valid: {', '.join(sorted(self))}")

  def __getitem__(self, name: str) -> Any:
    self.check(name)
    entry = self._entries[name]
    if isinstance(entry, str):
      module, _, attribute = entry.partition(":")
      entry = getattr(importlib.import_module(module), attribute)
    return entry

  def get(self, name: str, default: Any = None) -> Any:
    return self[name] if name in self._entries else default

  def __setitem__(self, name: str, entry: Any) -> None:
    self._entries[name] = entry

  def __delitem__(self, name: str) -> None:
    del self._entries[name]

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f"Registry({self.key!r}: {', '.join(self)})"
