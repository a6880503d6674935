"""Initialise parameters from another run's checkpoint (params only, with renames).

    train.init_from = "runs/mha"                 # a run directory of `encdec train`
    train.init_mapping = ("decoder/layers/cross_attention/gate=decoder/layers/cross_attention/out",)

Each parameter of the new model takes the value of the old parameter at the same path — or, if
a mapping rule NEW_REGEX=OLD_TEMPLATE matches its path, at the path the rule gives (re.sub). A
parameter the old run lacks (e.g. a gate an ablation adds) keeps its fresh initialisation; a
shape mismatch is an error. Both lists are logged.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.traverse_util
from absl import logging

from encdec.errors import ConfigError

SEP = "/"


def parse_mapping(rules: Sequence[str]) -> list[tuple[re.Pattern, str]]:
  """("new_regex=old_template", ...) --> compiled rules; a malformed one is a ValueError."""
  parsed = []
  for rule in rules:
    new, sep, old = rule.partition("=")
    if not sep or not new:
      raise ConfigError(f"bad train.init_mapping rule {rule!r}; expected NEW_REGEX=OLD_PATH")
    parsed.append((re.compile(new), old))
  return parsed


def old_path(path: str, rules: list[tuple[re.Pattern, str]]) -> str:
  for pattern, template in rules:
    if pattern.fullmatch(path):
      return pattern.sub(template, path)
  return path


def merge(fresh: Any, old: Any, rules: Sequence[str] = ()) -> tuple[Any, list[str], list[str]]:
  """(params, copied paths, newly initialised paths): `fresh` with values taken from `old`."""
  compiled = parse_mapping(rules)
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep=SEP)
  old_flat = flax.traverse_util.flatten_dict(old, sep=SEP)
  merged, copied, new = {}, [], []
  for path, value in fresh_flat.items():
    source = old_path(path, compiled)
    if source not in old_flat:
      merged[path] = value
      new.append(path)
      continue
    if old_flat[source].shape != value.shape:
      raise ConfigError(f"cannot initialise {path} {tuple(value.shape)} from {source} "
                        f"{tuple(old_flat[source].shape)}: shapes differ; map it elsewhere with "
                        "train.init_mapping or leave it out of the old run")
    merged[path] = old_flat[source].astype(value.dtype)
    copied.append(path)
  logging.info("warm start: %d parameters copied, %d newly initialised%s", len(copied), len(new),
               f": {', '.join(new)}" if new else "")
  return flax.traverse_util.unflatten_dict(merged, sep=SEP), copied, new
