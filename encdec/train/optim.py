"""Optimizers and learning-rate schedules (optax), chosen by name from the config."""
from __future__ import annotations

import re
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from encdec.errors import ConfigError


def _rsqrt(peak: float, warmup: int, total: int) -> optax.Schedule:
  """Linear warmup, then peak * sqrt(warmup / step) (Vaswani et al. 2017)."""
  warmup = max(warmup, 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       lambda since_warmup: peak * jax.lax.rsqrt(jnp.maximum(since_warmup + warmup, 1) / warmup)],
      [warmup])


def _cosine(peak: float, warmup: int, total: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), max(total, warmup + 1),
                                            end_value=0.0)


def _linear(peak: float, warmup: int, total: int) -> optax.Schedule:
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)),
       optax.linear_schedule(peak, 0.0, max(total - warmup, 1))], [max(warmup, 1)])


def _constant(peak: float, warmup: int, total: int) -> optax.Schedule:
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
      [max(warmup, 1)])


SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
    "rsqrt": _rsqrt, "cosine": _cosine, "linear": _linear, "constant": _constant,
}


def schedule(optim_cfg, num_steps: int) -> optax.Schedule:
  """The learning-rate schedule named by `optim.schedule`."""
  if optim_cfg.schedule not in SCHEDULES:
    raise ConfigError(f"unknown optim.schedule {optim_cfg.schedule!r}; "
                      f"valid: {', '.join(sorted(SCHEDULES))}")
  return SCHEDULES[optim_cfg.schedule](optim_cfg.learning_rate, optim_cfg.warmup_steps, num_steps)


def optimizer(optim_cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; weight decay skips biases and norm scales.

  With `optim.trainable` (a regex searched in "/"-joined parameter paths, e.g.
  "cross_attention" to train only cross-attention as in Gheini et al., 2021), the other
  parameters are frozen: zero updates and no optimizer state (optax.multi_transform).
  """
  decay_mask = lambda params: _map_with_names(params, lambda path: path[-1] == "kernel"
                                              or path[-1] == "embedding")
  clip = (optax.clip_by_global_norm(optim_cfg.grad_clip_norm) if optim_cfg.grad_clip_norm > 0
          else optax.identity())
  adamw = optax.chain(
      clip,
      optax.adamw(schedule(optim_cfg, num_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
                  eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay, mask=decay_mask))
  if not optim_cfg.trainable:
    return adamw
  labels = lambda params: jax.tree_util.tree_map(
      lambda train: "train" if train else "freeze", trainable_mask(params, optim_cfg.trainable))
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()}, labels)


def trainable_mask(params, pattern: str):
  """A tree of bools: which parameters `pattern` (optim.trainable; "" = all) selects."""
  if not pattern:
    return jax.tree_util.tree_map(lambda _: True, params)
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise ConfigError(f"optim.trainable={pattern!r} is not a regular expression: {e}") from e
  mask = _map_with_names(params, lambda path: regex.search("/".join(path)) is not None)
  if not any(jax.tree_util.tree_leaves(mask)):
    some = jax.tree_util.tree_leaves(_map_with_names(params, "/".join))
    raise ConfigError(f"optim.trainable={pattern!r} matches no parameter; paths look like "
                      f"{', '.join(some[:3])}")
  return mask


def _map_with_names(tree, fn):
  """A tree of fn(path-of-key-names) with the structure of `tree`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: fn(tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))),
      tree)
