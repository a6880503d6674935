"""Initialise parameters from another run's checkpoint (params only, with renames).

    train.init_from = "runs/mha"                 # a run directory of `encdec train`
    train.init_from = "runs/pretrain/seed={seed}"  # {seed}: this run's train.seed
    train.init_mapping = ("decoder/layers/cross_attention/gate=decoder/layers/cross_attention/out",)

`{seed}` in the path stands for the run's own train.seed, so the seeds of a sweep (whose
overrides must not differ by more than the seed) each start from their own pretrained run.
Each parameter of the new model takes the value of the old parameter at the same path — or, if
a mapping rule NEW_REGEX=OLD_TEMPLATE matches its path, at the path the rule gives (re.sub). A
parameter the old run lacks (e.g. a gate an ablation adds) keeps its fresh initialisation; a
shape mismatch is an error, except for cross-attention K/V heads: a `gqa`/`mqa` model started
from a multi-head one gets each K/V head as the mean of the heads of its group (Ainslie et al.
2023's uptraining recipe; with as many K/V heads as before it is a plain copy). Scanned layers
(a stacked 'layers' subtree) are read per layer when the new model unrolls them, e.g. with
`model.cross_attention_layers` placing cross-attention in some layers only: the others' are
then dropped. Both lists are logged.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.traverse_util
from absl import logging

from encdec.errors import ConfigError

SEP = "/"


def source_run(init_from: str, seed: int) -> str:
  """train.init_from with `{seed}` replaced by the run's seed."""
  return init_from.replace("{seed}", str(seed))


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
  old_flat = flax.traverse_util.flatten_dict(unrolled_like(fresh, old), sep=SEP)
  merged, copied, new = {}, [], []
  for path, value in fresh_flat.items():
    source = old_path(path, compiled)
    if source not in old_flat:
      merged[path] = value
      new.append(path)
      continue
    if old_flat[source].shape != value.shape and not _poolable_kv(path, old_flat[source], value):
      raise ConfigError(f"cannot initialise {path} {tuple(value.shape)} from {source} "
                        f"{tuple(old_flat[source].shape)}: shapes differ; map it elsewhere with "
                        "train.init_mapping or leave it out of the old run")
    merged[path] = pool_kv_heads(old_flat[source], value.shape).astype(value.dtype)
    copied.append(path)
  logging.info("warm start: %d parameters copied, %d newly initialised%s", len(copied), len(new),
               f": {', '.join(new)}" if new else "")
  return flax.traverse_util.unflatten_dict(merged, sep=SEP), copied, new


def _poolable_kv(path: str, old: Any, new: Any) -> bool:
  """A cross-attention K/V kernel or bias ([..., Hk, D]) whose head axis shrank by a whole
  factor, every other axis equal."""
  if "cross_attention" not in path or not re.search(r"(^|/)kv/(kernel|bias)$", path):
    return False
  o, n = old.shape, new.shape
  return (len(o) == len(n) >= 2 and o[:-2] == n[:-2] and o[-1] == n[-1] and n[-2] > 0
          and o[-2] % n[-2] == 0)


def pool_kv_heads(old: Any, shape: tuple[int, ...]) -> Any:
  """K/V [..., H, D] --> [..., Hk, D]: head g is the mean of heads g*H/Hk .. (g+1)*H/Hk - 1,
  the query heads that share K/V head g (attention.weighted_values). Unchanged if the shapes
  already agree."""
  if tuple(old.shape) == tuple(shape):
    return old
  heads, depth = old.shape[-2], old.shape[-1]
  kv_heads = shape[-2]
  grouped = old.reshape(old.shape[:-2] + (kv_heads, heads // kv_heads, depth))
  return grouped.mean(axis=-2)                                    # [..., Hk, D]


def unrolled_like(fresh: Any, old: Any) -> Any:
  """`old` with each scanned stack ('layers', stacked on axis 0) unrolled into layer_0,
  layer_1, ... where `fresh` unrolls that stack."""
  if not isinstance(old, dict) or not isinstance(fresh, dict):
    return old
  out = {k: unrolled_like(fresh.get(k), v) for k, v in old.items() if k != "layers"}
  if "layers" in old:
    if "layers" in fresh or not any(k.startswith("layer_") for k in fresh):
      out["layers"] = old["layers"]
    else:
      from encdec.model import transformer  # pylint: disable=import-outside-toplevel (flax)
      out.update(transformer.unstack_layers({"layers": old["layers"]}))
  return out
