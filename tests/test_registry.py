"""Registries: names are checked without importing; entries import on lookup; tests can patch."""
import subprocess
import sys

import pytest

from encdec.errors import ConfigError
from encdec.registry import Registry

REGISTRY_MODULE_IMPORTS = ("import sys; from encdec.model import schema; "
                           "'mha' in schema.CROSS_ATTENTION; schema.CROSS_ATTENTION.check('mqa'); "
                           "print('flax' in sys.modules); schema.CROSS_ATTENTION['mqa']; "
                           "print('flax' in sys.modules)")


def test_names_are_checked_without_importing_and_imported_on_lookup():
  out = subprocess.run([sys.executable, "-c", REGISTRY_MODULE_IMPORTS], capture_output=True,
                       text=True, check=True).stdout.split()
  assert out == ["False", "True"]


def test_unknown_names_fail_in_one_line_listing_the_valid_ones():
  registry = Registry("thing.kind", {"b": "json:dumps", "a": "json:loads"})
  with pytest.raises(ConfigError, match=r"^unknown thing.kind 'c'; valid: a, b$"):
    registry["c"]
  import json  # pylint: disable=import-outside-toplevel
  assert registry["a"] is json.loads and registry.get("c") is None


def test_monkeypatch_can_register_and_restore(monkeypatch):
  registry = Registry("thing.kind", {"a": "json:loads"})
  with monkeypatch.context() as m:
    m.setitem(registry, "new", len)
    assert registry["new"] is len and sorted(registry) == ["a", "new"]
  assert "new" not in registry and len(registry) == 1
