"""Per-run hyperparameters as traced values (what lets `encdec train-batch` vmap one step over
runs that differ in them): schedules, label smoothing, clipping and weight decay computed from
traced scalars equal today's Python-constant versions, and the optimizer state keeps today's
structure, so checkpoints resume. The batched runs themselves: tests/test_batched.py."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from encdec import config
from encdec.train import optim, step as step_lib

# Traced scalars reach the same numbers through XLA's fused arithmetic (e.g. a division
# rewritten as a multiplication): equal up to a few float32 ulps.
RTOL = 1e-6
STEPS = jnp.arange(0, 260, dtype=jnp.int32)   # 0, the warm-ups, and past every `total`
CASES = [(1e-3, 10, 100), (3e-4, 0, 200), (2e-3, 50, 40)]   # (peak, warmup, total)


def optax_schedule(name, peak, warmup, total):
  """The schedules as optim.py built them from optax before they took traced values."""
  w = max(warmup, 1)
  if name == "rsqrt":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, w),
         lambda s: peak * jax.lax.rsqrt(jnp.maximum(s + w, 1) / w)], [w])
  if name == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, w, max(total, warmup + 1),
                                              end_value=0.0)
  if name == "linear":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, w),
                                 optax.linear_schedule(peak, 0.0, max(total - warmup, 1))], [w])
  return optax.join_schedules([optax.linear_schedule(0.0, peak, w),
                               optax.constant_schedule(peak)], [w])


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_schedules_equal_optax_with_python_and_with_traced_values(name):
  for peak, warmup, total in CASES:
    want = jax.vmap(optax_schedule(name, peak, warmup, total))(STEPS)
    exact = jax.vmap(optim.SCHEDULES[name](peak, warmup, total))(STEPS)
    np.testing.assert_array_equal(exact, want)          # a lone run: bit for bit as before
    traced = jax.jit(lambda p, w, total=total: jax.vmap(
        optim.SCHEDULES[name](p, w, total))(STEPS))(jnp.float32(peak), jnp.float32(warmup))
    np.testing.assert_allclose(traced, want, rtol=RTOL, atol=RTOL * peak)


def test_config_schedule_takes_a_runs_own_peak_and_warmup():
  cfg = config.base().optim
  lr = optim.schedule(cfg, 100)
  np.testing.assert_allclose(lr(20, {"learning_rate": 1e-2, "warmup_steps": 40}), 5e-3)
  assert float(lr(20)) == pytest.approx(cfg.learning_rate * 20 / cfg.warmup_steps)


def test_label_smoothing_traced_equals_the_python_formula():
  logits = np.random.default_rng(0).normal(size=(2, 3, 7)).astype(np.float32)
  targets = np.array([[1, 2, 3], [4, 5, 6]])
  eps = np.array([0.0, 0.1, 0.3], np.float32)
  loss, nll = jax.jit(jax.vmap(lambda e: step_lib.token_losses(logits, targets, e)))(eps)
  log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  want_nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(nll, np.stack([want_nll] * 3), rtol=1e-5)
  np.testing.assert_allclose(loss[0], want_nll, rtol=1e-5)          # a traced 0: no smoothing
  for i, e in enumerate(eps[1:].tolist(), 1):   # the formula as it was (math.log)
    on, off = 1 - e + e / 7, e / 7
    entropy = -(on * math.log(on) + 6 * off * math.log(off))
    want = (1 - e) * want_nll + e * (log_z - logits.mean(-1)) - entropy
    np.testing.assert_allclose(loss[i], want, rtol=1e-5, atol=1e-6)


PARAMS = {"encoder": {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
                      "norm": {"scale": jnp.ones(4)}},
          "cross_attention": {"query": {"kernel": jnp.ones((4, 4))}},
          "embed": {"embedding": jnp.ones((5, 4))}}


def optim_cfg(**overrides):
  cfg = config.base().optim
  cfg.update({"schedule": "cosine", "warmup_steps": 3, **overrides})
  return cfg


def old_optimizer(cfg, num_steps):
  """optim.optimizer before hyperparameters could be traced: what checkpoints hold."""
  decay = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key in ("kernel", "embedding"), params)
  clip = (optax.clip_by_global_norm(cfg.grad_clip_norm) if cfg.grad_clip_norm > 0
          else optax.identity())
  adamw = optax.chain(clip, optax.adamw(optax_schedule(cfg.schedule, cfg.learning_rate,
                                                       cfg.warmup_steps, num_steps),
                                        b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                        weight_decay=cfg.weight_decay, mask=decay))
  if not cfg.trainable:
    return adamw
  labels = lambda params: jax.tree_util.tree_map(
      lambda train: "train" if train else "freeze", optim.trainable_mask(params, cfg.trainable))
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()}, labels)


def shapes(tree):
  return [(np.shape(x), np.asarray(x).dtype) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("overrides", [
    {}, {"grad_clip_norm": 0.0}, {"weight_decay": 0.1}, {"trainable": "cross_attention"}])
def test_optimizer_state_has_the_structure_checkpoints_hold(overrides):
  cfg = optim_cfg(**overrides)
  new, old = optim.optimizer(cfg, 10).init(PARAMS), old_optimizer(cfg, 10).init(PARAMS)
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)
  assert shapes(new) == shapes(old)
  # ... and an update with traced hyperparameters returns that structure again.
  hparams = {"learning_rate": jnp.float32(1e-2), "weight_decay": jnp.float32(0.1),
             "grad_clip_norm": jnp.float32(0.0), "warmup_steps": jnp.float32(2.0)}
  _, after = jax.jit(lambda s, h: optim.optimizer(cfg, 10).update(PARAMS, s, PARAMS,
                                                                  hparams=h))(new, hparams)
  assert jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(old)


def grads(scale):
  return jax.tree_util.tree_map(lambda p: scale * jnp.arange(p.size, dtype=jnp.float32)
                                .reshape(p.shape) / p.size, PARAMS)


@pytest.mark.parametrize("hparams", [
    {"learning_rate": 3e-2, "warmup_steps": 1, "weight_decay": 0.1, "grad_clip_norm": 0.5},
    {"learning_rate": 1e-3, "warmup_steps": 5, "weight_decay": 0.0, "grad_clip_norm": 0.0}])
def test_an_update_with_traced_hyperparameters_equals_the_configs_own(hparams):
  """Weight decay, clipping (0: none, as a Python 0 means) and the schedule, three updates."""
  base = optim_cfg()
  own = optim.optimizer(optim_cfg(**hparams), 10)            # Python constants
  shared = optim.optimizer(base, 10)                         # the same, traced
  traced = {k: jnp.float32(v) for k, v in hparams.items()}
  def three_updates(tx, hparams):
    params, state = PARAMS, tx.init(PARAMS)
    for i in range(3):
      g = grads(10.0 * (i + 1))                              # norms above and below the clip
      updates, state = tx.update(g, state, params, hparams=hparams)
      params = optax.apply_updates(params, updates)
    return params
  params_a = jax.jit(lambda: three_updates(own, None))()
  params_b = jax.jit(lambda h: three_updates(shared, h))(traced)
  for a, b in zip(jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)):
    np.testing.assert_allclose(b, a, rtol=RTOL)


def test_hyperparameters_come_from_the_config_keys_batches_may_differ_in():
  cfg = config.load(None, {"optim.learning_rate": 0.02, "train.label_smoothing": 0.0})
  hparams = step_lib.hyperparameters(cfg)
  assert list(step_lib.HPARAMS.values()) == list(config.HPARAM_KEYS)
  assert hparams["learning_rate"] == 0.02 and hparams["label_smoothing"] == 0.0
  assert hparams["warmup_steps"] == cfg.optim.warmup_steps


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_dropout_with_a_traced_rate_draws_flax_dropouts_masks(rate):
  """layers.Dropout equals nn.Dropout (same keys, same masks) at a Python rate and at a traced
  one; a traced 0 keeps every value."""
  import flax.linen as nn   # pylint: disable=import-outside-toplevel
  from encdec.model import layers   # pylint: disable=import-outside-toplevel
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 50)), jnp.float32)
  apply = lambda layer: layer.apply({}, x, deterministic=False,
                                    rngs={"dropout": jax.random.key(3)})
  want = apply(nn.Dropout(rate))
  np.testing.assert_array_equal(apply(layers.Dropout(rate)), want)
  traced = jax.jit(lambda r: apply(layers.Dropout(r)))(jnp.float32(rate))
  np.testing.assert_allclose(traced, want, rtol=1e-6)
  assert (np.asarray(want) == 0).mean() == pytest.approx(rate, abs=0.1)


@pytest.mark.slow   # four compilations of a small model's gradients (~25 s)
@pytest.mark.parametrize("variant", ["mha", "merged"])   # merged: its own attention dropout
def test_traced_dropout_rates_give_the_static_rates_losses_and_gradients(variant):
  """A batch's step takes the model's dropout rates as traced scalars (step.with_dropout_rates):
  the same masks and values as a model built with each rate, a traced 0 included."""
  from encdec import model   # pylint: disable=import-outside-toplevel
  base = dict(src_vocab_size=11, tgt_vocab_size=13, d_model=16, num_heads=2, d_ff=32,
              num_encoder_layers=1, num_decoder_layers=2, cross_attention=variant)
  rng = np.random.default_rng(0)
  batch = {"src": jnp.asarray(rng.integers(3, 11, (4, 7))),
           "tgt_in": jnp.asarray(rng.integers(3, 13, (4, 6))),
           "tgt_out": jnp.asarray(rng.integers(3, 13, (4, 6)))}
  lead = model.build({**base, "dropout_rate": 0.1})
  params = lead.init(jax.random.key(0), batch["src"], batch["tgt_in"])["params"]
  loss_and_grads = lambda module, hparams: jax.value_and_grad(
      lambda p: step_lib.batch_sums(step_lib.with_dropout_rates(module, hparams), p, batch,
                                    train=True, rng=jax.random.key(7), label_smoothing=0.0),
      has_aux=True)(params)
  rates = [(0.0, 0.0), (0.1, 0.0), (0.3, 0.2)]
  traced = jax.jit(jax.vmap(lambda d, a: loss_and_grads(
      lead, {"dropout_rate": d, "attention_dropout_rate": a})))(
          *map(jnp.float32, zip(*rates)))
  for i, (d, a) in enumerate(rates):
    own = model.build({**base, "dropout_rate": d, "attention_dropout_rate": a})
    want = jax.jit(lambda own=own: loss_and_grads(own, {}))()
    for got_leaf, want_leaf in zip(jax.tree_util.tree_leaves(traced),
                                   jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(got_leaf[i], want_leaf, rtol=1e-4, atol=1e-5)
  losses = traced[0][0]
  assert len(set(np.asarray(losses).tolist())) == 3   # the rates did change the losses
