"""Optimizers and learning-rate schedules (optax), chosen by name from the config.

The per-run numbers (HPARAMS: peak learning rate, warm-up, weight decay, clipping norm) may be
Python numbers or traced float32 scalars: `encdec train-batch` vmaps one step over runs that
differ in them (encdec/train/batched.py). A Python number is compiled in exactly as before
(a zero clipping norm or weight decay costs nothing); a traced one is read at run time. Neither
changes the optimizer state's structure, so checkpoints resume either way.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from encdec.config import HPARAM_KEYS
from encdec.errors import ConfigError

# The optim.* keys among the per-run hyperparameters (those that may be traced).
HPARAMS = tuple(key.split(".")[1] for key in HPARAM_KEYS if key.startswith("optim."))

Number = Any   # a Python int/float, or a traced float32 scalar


def _at_least(x: Number, low: Number) -> Number:
  """max(x, low): a Python number for Python numbers (the constants a lone run compiled in
  before), else traced."""
  python = all(isinstance(v, (int, float)) for v in (x, low))
  return max(x, low) if python else jnp.maximum(x, low)


def _ramp(start: Number, end: Number, steps: Number) -> optax.Schedule:
  """optax.linear_schedule(start, end, steps) (its arithmetic exactly) for steps >= 1 that may
  be traced (optax branches on the value of `steps`)."""
  return lambda step: (start - end) * (1 - jnp.clip(step, 0, steps) / steps) + end


def _rsqrt(peak: Number, warmup: Number, total: int) -> optax.Schedule:
  """Linear warmup, then peak * sqrt(warmup / step) (Vaswani et al. 2017)."""
  warmup = _at_least(warmup, 1)
  return optax.join_schedules(
      [_ramp(0.0, peak, warmup),
       lambda since_warmup: peak * jax.lax.rsqrt(jnp.maximum(since_warmup + warmup, 1) / warmup)],
      [warmup])


def _cosine(peak: Number, warmup: Number, total: int) -> optax.Schedule:
  """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, end_value=0), traceable."""
  warmup = _at_least(warmup, 1)
  decay_steps = _at_least(total, warmup + 1) - warmup
  cosine = lambda since_warmup: peak * (0.5 * (1 + jnp.cos(
      jnp.pi * jnp.minimum(since_warmup, decay_steps) / decay_steps)))
  return optax.join_schedules([_ramp(0.0, peak, warmup), cosine], [warmup])


def _linear(peak: Number, warmup: Number, total: int) -> optax.Schedule:
  return optax.join_schedules(
      [_ramp(0.0, peak, _at_least(warmup, 1)),
       _ramp(peak, 0.0, _at_least(total - warmup, 1))], [_at_least(warmup, 1)])


def _constant(peak: Number, warmup: Number, total: int) -> optax.Schedule:
  return optax.join_schedules([_ramp(0.0, peak, _at_least(warmup, 1)), lambda _: peak],
                              [_at_least(warmup, 1)])


SCHEDULES: dict[str, Callable[[Number, Number, int], optax.Schedule]] = {
    "rsqrt": _rsqrt, "cosine": _cosine, "linear": _linear, "constant": _constant,
}


def _with(optim_cfg, hparams: Mapping[str, Number] | None) -> dict[str, Number]:
  """The config's HPARAMS (Python numbers), with those in `hparams` (any subset; other keys
  ignored) replaced."""
  hparams = hparams or {}
  return {name: hparams.get(name, optim_cfg[name]) for name in HPARAMS}


def schedule(optim_cfg, num_steps: int) -> Callable[..., jax.Array]:
  """The learning-rate schedule named by `optim.schedule`: lr(step, hparams=None), where
  `hparams` may replace the config's learning_rate and warmup_steps."""
  if optim_cfg.schedule not in SCHEDULES:
    raise ConfigError(f"unknown optim.schedule {optim_cfg.schedule!r}; "
                      f"valid: {', '.join(sorted(SCHEDULES))}")

  def learning_rate(step, hparams: Mapping[str, Number] | None = None):
    h = _with(optim_cfg, hparams)
    return SCHEDULES[optim_cfg.schedule](h["learning_rate"], h["warmup_steps"], num_steps)(step)
  return learning_rate


def clip_by_global_norm(max_norm: Number) -> optax.GradientTransformation:
  """optax.clip_by_global_norm, where max_norm <= 0 means no clipping (optim.grad_clip_norm=0).

  A Python max_norm picks optax's transform or optax.identity() when the step is built; a
  traced one (a batch member's) clips, then keeps the unclipped updates where it is <= 0.
  Both states are optax.EmptyState.
  """
  if isinstance(max_norm, (int, float)) and max_norm <= 0:
    return optax.identity()
  clip = optax.clip_by_global_norm(max_norm)
  if isinstance(max_norm, (int, float)):
    return clip

  def update(updates, state, params=None):
    clipped, state = clip.update(updates, state, params)
    return jax.tree_util.tree_map(lambda c, u: jnp.where(max_norm > 0, c, u), clipped,
                                  updates), state
  return optax.GradientTransformation(clip.init, update)


def optimizer(optim_cfg, num_steps: int) -> optax.GradientTransformationExtraArgs:
  """AdamW with global-norm clipping; weight decay skips biases and norm scales.

  With `optim.trainable` (a regex searched in "/"-joined parameter paths, e.g.
  "cross_attention" to train only cross-attention as in Gheini et al., 2021), the other
  parameters are frozen: zero updates and no optimizer state (optax.multi_transform).

  update(grads, state, params, hparams=None): `hparams` (any of HPARAMS; Python numbers or
  traced scalars) replaces the config's values for this update. The optax chain is built
  for each update from those values, so its state is the chain's whatever they are: init uses
  the config's. (optax.inject_hyperparams would add them to the state, and so to checkpoints.)
  """
  def chain(hparams: Mapping[str, Number] | None) -> optax.GradientTransformation:
    h = _with(optim_cfg, hparams)
    decay_mask = lambda params: _map_with_names(params, lambda path: path[-1] == "kernel"
                                                or path[-1] == "embedding")
    lr = lambda step: schedule(optim_cfg, num_steps)(step, h)
    adamw = optax.chain(
        clip_by_global_norm(h["grad_clip_norm"]),
        optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                    weight_decay=h["weight_decay"], mask=decay_mask))
    if not optim_cfg.trainable:
      return adamw
    labels = lambda params: jax.tree_util.tree_map(
        lambda train: "train" if train else "freeze", trainable_mask(params, optim_cfg.trainable))
    return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()}, labels)

  def update(updates, state, params=None, *, hparams=None, **extra_args):
    del extra_args
    return chain(hparams).update(updates, state, params)
  return optax.GradientTransformationExtraArgs(chain(None).init, update)


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
