"""Pure train and eval steps: (state, batch, rng[, hparams]) -> (state, metrics). No side effects.

`hparams` are a run's per-run hyperparameters (HPARAMS): the numbers the members of a batch
(encdec/train/batched.py) may differ in, since they change no shape. The step is built with a
value for each (the config's); `hparams` replaces any of them by traced float32 scalars, so
one compiled step serves runs that differ in them. A lone run passes none: its values stay
Python constants, compiled in exactly as before (zero smoothing or clipping costs nothing).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from encdec import config as config_lib
from encdec.train.state import TrainState

MODEL_INPUTS = ("src_segment_ids", "src_positions", "tgt_segment_ids", "tgt_positions")

# Per-run hyperparameters: hparams name -> config key.
HPARAMS = {key.split(".")[1]: key for key in config_lib.HPARAM_KEYS}

# Those that are fields of the model's config, the dropout rates (the rest are the optimizer's
# and the loss's).
DROPOUT_HPARAMS = tuple(name for name, key in HPARAMS.items() if key.startswith("model."))

Hparams = Mapping[str, Any]   # name -> Python number, or float32 scalar (traced in the step)


def hyperparameters(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """A run's HPARAMS, by name, from its config (Python numbers)."""
  return {name: cfg[key.split(".")[0]][name] for name, key in HPARAMS.items()}


def with_dropout_rates(module: nn.Module, hparams: Hparams) -> nn.Module:
  """The model with the dropout rates in `hparams` (traced scalars) in place of its config's:
  a clone holding a config whose rate fields are tracers (layers.Dropout takes them)."""
  rates = {name: hparams[name] for name in DROPOUT_HPARAMS if name in hparams}
  if not rates:
    return module
  return module.clone(config=dataclasses.replace(module.config, **rates))


def token_losses(logits: jax.Array, targets: jax.Array, label_smoothing):
  """Per-token (loss, nll), both [B, T], without materialising one-hot targets.

  With smoothing eps the target is q = (1 - eps) one_hot + eps / V, so the cross-entropy is
  (1 - eps) nll + eps mean_v(-log p_v); its minimum, the entropy of q, is subtracted so a
  perfect prediction scores 0. `label_smoothing` may be traced (xlogy: 0 log 0 = 0); a Python
  0 skips the smoothing term.
  """
  log_z = jax.nn.logsumexp(logits, axis=-1)                                # [B, T]
  nll = log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if isinstance(label_smoothing, (int, float)) and label_smoothing == 0:
    return nll, nll
  vocab, eps = logits.shape[-1], label_smoothing
  on, off = 1.0 - eps + eps / vocab, eps / vocab
  xlogx = lambda x: jax.scipy.special.xlogy(x, x)
  entropy = -(xlogx(on) + (vocab - 1) * xlogx(off))
  loss = (1.0 - eps) * nll + eps * (log_z - jnp.mean(logits, axis=-1))
  return loss - entropy, nll


def first_argmax(x: jax.Array) -> jax.Array:
  """jnp.argmax(x, -1) (the first index of the maximum), from two plain reductions.

  XLA:CPU runs argmax's joint (value, index) reduction as scalar code: 18 ms of a 1.2 s bench
  train step over [16, 64, 8192] logits. A max, then the smallest index holding it, vectorise
  (the max is shared with the loss's logsumexp): the step is 3% faster. A NaN row gives -1.
  """
  size = x.shape[-1]
  is_max = x == jnp.max(x, axis=-1, keepdims=True)
  first = jnp.min(jnp.where(is_max, jnp.arange(size), size), axis=-1)
  return jnp.where(first == size, -1, first)


def teacher_forced(module: nn.Module, params: Any, batch: dict[str, jax.Array], *, train: bool,
                   rng: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(logits [B, T, V], targets [B, T], weights [B, T]: 1 on real target tokens, those that
  are not the model's PAD id) of a batch under teacher forcing."""
  extra = {k: batch[k] for k in MODEL_INPUTS if k in batch}
  logits = module.apply({"params": params}, batch["src"], batch["tgt_in"], train=train,
                        rngs={"dropout": rng} if train else None, **extra)   # [B, T, V]
  targets = batch["tgt_out"]
  return logits, targets, (targets != module.config.pad_id).astype(jnp.float32)


def batch_sums(module: nn.Module, params: Any, batch: dict[str, jax.Array], *, train: bool,
               rng: jax.Array | None, label_smoothing) -> tuple[jax.Array, dict]:
  """Summed loss over real target tokens, and summed statistics for logging."""
  logits, targets, weights = teacher_forced(module, params, batch, train=train, rng=rng)
  loss, nll = token_losses(logits, targets, label_smoothing)
  correct = (first_argmax(logits) == targets).astype(jnp.float32)
  sums = {"loss": jnp.sum(loss * weights), "nll": jnp.sum(nll * weights),
          "correct": jnp.sum(correct * weights), "tokens": jnp.sum(weights)}
  return sums["loss"], sums


def summarize(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Sums over tokens --> per-token means (loss, nll, accuracy, perplexity)."""
  tokens = jnp.maximum(sums["tokens"], 1.0)
  nll = sums["nll"] / tokens
  return {"loss": sums["loss"] / tokens, "nll": nll, "accuracy": sums["correct"] / tokens,
          "perplexity": jnp.exp(nll), "tokens": sums["tokens"]}


def _split_microbatches(batch: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
  """[B, ...] --> [num, B / num, ...]."""
  return jax.tree_util.tree_map(lambda x: x.reshape(num, x.shape[0] // num, *x.shape[1:]), batch)


def accumulated_grads(module, params, batch, rng, *, accum_steps: int, label_smoothing):
  """Gradients of the summed loss over `accum_steps` micro-batches (lax.scan) and sums."""
  grad_fn = jax.grad(lambda p, b, r: batch_sums(module, p, b, train=True, rng=r,
                                                label_smoothing=label_smoothing), has_aux=True)
  if accum_steps == 1:
    return grad_fn(params, batch, rng)

  def body(carry, xs):
    micro, index = xs
    grads, sums = grad_fn(params, micro, jax.random.fold_in(rng, index))
    return jax.tree_util.tree_map(jnp.add, carry, (grads, sums)), None

  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "nll", "correct", "tokens")}
  (grads, sums), _ = jax.lax.scan(body, (zeros, zero_sums),
                                  (_split_microbatches(batch, accum_steps),
                                   jnp.arange(accum_steps)))
  return grads, sums


def train_step_fn(module: nn.Module, tx: optax.GradientTransformationExtraArgs,
                  learning_rate: Callable[[jax.Array, Hparams], jax.Array], *,
                  label_smoothing: float, accum_steps: int = 1, skip_nonfinite: bool = False):
  """train_step(state, batch, rng, hparams) -> (state, metrics): one optimizer update, pure,
  not jitted (make_train_step jits it; encdec/train/batched.py vmaps it over runs first).

  `tx` and `learning_rate` are optim.optimizer's and optim.schedule's: they hold the config's
  optimizer HPARAMS, `label_smoothing` is the run's. `hparams` replaces any of those values
  ({} for none; a batch passes those its members differ in, each [N] before vmap).
  `rng` is the run's dropout key; the step folds in its own step number, so a resumed run
  draws exactly the masks of an uninterrupted one. Gradients are per real target token.
  With `skip_nonfinite`, an update with a NaN/Inf gradient is skipped (and counted).
  `metrics["finite"]` says whether this step's loss and gradient were finite (the loop checks
  it for every step); `metrics["learning_rate"]` is this run's.
  """
  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                 hparams: Hparams):
    smoothing = hparams.get("label_smoothing", label_smoothing)
    step_rng = jax.random.fold_in(rng, state.step)
    grads, sums = accumulated_grads(with_dropout_rates(module, hparams), state.params, batch,
                                    step_rng, accum_steps=accum_steps, label_smoothing=smoothing)
    grads = jax.tree_util.tree_map(lambda g: g / jnp.maximum(sums["tokens"], 1.0), grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, hparams=hparams)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums["loss"])
    if skip_nonfinite:
      new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new,
                                   state.replace(step=state.step + 1, skipped=state.skipped + 1))
    metrics = {**summarize(sums), "grad_norm": grad_norm, "finite": finite,
               "learning_rate": learning_rate(state.step, hparams), "skipped": new.skipped}
    return new, metrics

  return train_step


def make_train_step(module: nn.Module, tx: optax.GradientTransformationExtraArgs,
                    learning_rate: Callable[[jax.Array, Hparams], jax.Array], *,
                    label_smoothing: float,
                    accum_steps: int = 1, skip_nonfinite: bool = False,
                    state_shardings: TrainState | None = None,
                    batch_sharding: jax.sharding.NamedSharding | None = None):
  """train_step_fn's step for a lone run, train_step(state, batch, rng): its hyperparameters
  are the ones given here, compiled in (hparams={}). Jitted with the state donated; with
  shardings, compiled for them (metrics replicated). Building it changes nothing
  process-wide (the trainer chooses the CPU Threefry lowering: encdec/threefry.py)."""
  pure = train_step_fn(module, tx, learning_rate, label_smoothing=label_smoothing,
                       accum_steps=accum_steps, skip_nonfinite=skip_nonfinite)
  train_step = lambda state, batch, rng: pure(state, batch, rng, {})
  if state_shardings is None:
    return jax.jit(train_step, donate_argnums=0)
  replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
  return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding, replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)


def all_finite(tree: Any) -> jax.Array:
  """A boolean scalar: whether every floating-point value in `tree` is finite (jit it)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def eval_step_fn(module: nn.Module, *, label_smoothing: float):
  """eval_step(params, batch, hparams) -> summed statistics (add them over batches, then
  summarize); pure. `hparams` may replace label_smoothing (the loss reported), as in training."""
  def eval_step(params, batch, hparams: Hparams):
    return batch_sums(module, params, batch, train=False, rng=None,
                      label_smoothing=hparams.get("label_smoothing", label_smoothing))[1]
  return eval_step


def row_nll(module: nn.Module, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """[B, 2]: per row, the NLL (nats) of its target tokens under teacher forcing, summed, and
  how many there are; pure (no smoothing, no dropout)."""
  logits, targets, weights = teacher_forced(module, params, batch, train=False, rng=None)
  nll = token_losses(logits, targets, 0)[1]                                # [B, T]
  return jnp.stack([jnp.sum(nll * weights, axis=-1), jnp.sum(weights, axis=-1)], axis=-1)


def make_eval_step(module: nn.Module, *, label_smoothing: float):
  """eval_step_fn's step for a lone run, eval_step(params, batch), jitted."""
  pure = eval_step_fn(module, label_smoothing=label_smoothing)
  return jax.jit(lambda params, batch: pure(params, batch, {}))
