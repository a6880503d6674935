"""The pure train step: accumulation, smoothing, skipping, learning, checkpoint round-trip."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from encdec import config, model, threefry
from encdec.train import checkpoint, optim, state as state_lib, step as step_lib

MODEL = dict(src_vocab_size=12, tgt_vocab_size=12, d_model=32, num_heads=4, d_ff=64,
             num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
OPTIM = config.base().optim
OPTIM.update(learning_rate=3e-3, schedule="constant", warmup_steps=10, weight_decay=0.0,
             grad_clip_norm=1.0)


def copy_batch(seed: int, batch: int = 16, length: int = 6):
  """Random sequences over tokens 4..11: src = x + EOS, tgt_in = BOS + x, tgt_out = x + EOS."""
  x = np.random.default_rng(seed).integers(4, 12, (batch, length)).astype(np.int32)
  col = lambda v: np.full((batch, 1), v, np.int32)
  return {"src": np.concatenate([x, col(2)], 1), "tgt_in": np.concatenate([col(1), x], 1),
          "tgt_out": np.concatenate([x, col(2)], 1)}


def setup(accum_steps=1, skip_nonfinite=False, trainable="", **model_overrides):
  m = model.build({**MODEL, **model_overrides})
  optim_cfg = OPTIM.copy_and_resolve_references()
  optim_cfg.trainable = trainable
  tx = optim.optimizer(optim_cfg, 100)
  b = copy_batch(0)
  st = state_lib.create(m, tx, jax.random.key(0), b["src"][:1], b["tgt_in"][:1])
  fn = step_lib.make_train_step(m, tx, optim.schedule(OPTIM, 100), label_smoothing=0.0,
                                accum_steps=accum_steps, skip_nonfinite=skip_nonfinite)
  return m, tx, st, fn


def test_label_smoothing_matches_optax_up_to_its_entropy():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 7))
  targets = jnp.array([[1, 2, 3], [4, 5, 6]])
  loss, nll = step_lib.token_losses(logits, targets, 0.1)
  reference = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(targets, 7),
                                                                      0.1))
  on, off = 0.9 + 0.1 / 7, 0.1 / 7
  entropy = -(on * np.log(on) + 6 * off * np.log(off))
  np.testing.assert_allclose(loss, reference - entropy, atol=1e-5)
  np.testing.assert_allclose(nll, optax.softmax_cross_entropy_with_integer_labels(logits, targets),
                             atol=1e-5)


def test_first_argmax_equals_argmax_ties_included():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 4, (5, 7, 33)).astype(np.float32)      # few values: many tied maxima
  x[0, 0] = 1.0                                              # a row that is all one tie
  np.testing.assert_array_equal(step_lib.first_argmax(jnp.asarray(x)), np.argmax(x, -1))
  assert int(step_lib.first_argmax(jnp.array([1.0, np.nan]))) == -1   # NaN: never "correct"


def test_loss_ignores_padding_tokens():
  m, _, st, _ = setup()
  b = copy_batch(1)
  padded = {k: np.pad(v, [(0, 0), (0, 3)]) for k, v in b.items()}
  sums = jax.jit(lambda batch: step_lib.batch_sums(m, st.params, batch, train=False, rng=None,
                                                   label_smoothing=0.1)[1])
  a, c = sums(b), sums(padded)
  assert float(a["tokens"]) == float(c["tokens"]) == 16 * 7
  np.testing.assert_allclose(a["loss"], c["loss"], rtol=1e-5)


def test_gradient_accumulation_equals_one_big_batch():
  b = copy_batch(2)
  _, _, s1, step1 = setup(accum_steps=1)
  _, _, s4, step4 = setup(accum_steps=4)
  s1, m1 = step1(s1, b, jax.random.key(0))
  s4, m4 = step4(s4, b, jax.random.key(0))
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  for a, c in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s4.params)):
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_train_step_learns_copy():
  _, _, st, fn = setup()
  first = None
  for i in range(150):
    st, metrics = fn(st, copy_batch(i), jax.random.key(0))
    first = first if first is not None else float(metrics["loss"])
  assert int(st.step) == 150
  assert float(metrics["loss"]) < 0.25 * first
  assert float(metrics["accuracy"]) > 0.9


def test_building_and_running_a_train_step_has_no_process_wide_effect(monkeypatch):
  """The CPU Threefry lowering is the trainer's explicit choice, not the step's side effect."""
  monkeypatch.setattr(threefry, "unroll_on_cpu", lambda: pytest.fail("lowering installed"))
  _, _, st, fn = setup()
  fn(st, copy_batch(0), jax.random.key(0))


def test_loss_weights_follow_the_models_pad_id():
  """Targets equal to the model's pad_id (3 here; no input holds a 3) carry no loss and are
  not counted, exactly as PAD 0 targets are for a model whose pad_id is 0."""
  m, _, st, _ = setup()
  m3 = model.build({**MODEL, "pad_id": 3})
  b = copy_batch(1)
  b["tgt_out"][:, -2:] = 3
  as_pad_0 = {**b, "tgt_out": np.where(b["tgt_out"] == 3, 0, b["tgt_out"])}
  sums = jax.jit(lambda module, batch: step_lib.batch_sums(
      module, st.params, batch, train=False, rng=None, label_smoothing=0.0)[1],
                 static_argnums=0)
  got, expected = sums(m3, b), sums(m, as_pad_0)
  assert float(got["tokens"]) == float(expected["tokens"]) == 16 * 5
  np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)


def test_all_finite_sees_any_nan_or_inf_in_floating_leaves():
  tree = {"a": jnp.ones(3), "b": {"c": jnp.zeros((2, 2)), "step": jnp.array(3)}}
  assert bool(step_lib.all_finite(tree))
  for leaf, bad in [("a", jnp.nan), ("a", jnp.inf), ("a", -jnp.inf)]:
    assert not bool(step_lib.all_finite({**tree, leaf: tree[leaf].at[1].set(bad)}))
  assert not bool(step_lib.all_finite({**tree, "b": {**tree["b"], "c": tree["b"]["c"] / 0.0}}))
  assert bool(step_lib.all_finite({"step": jnp.array(1)}))


def test_nonfinite_update_is_skipped_and_counted():
  _, _, st, fn = setup(skip_nonfinite=True)
  poisoned = st.replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, st.params))
  before = jax.tree_util.tree_map(np.asarray, poisoned.params)
  new, metrics = fn(poisoned, copy_batch(0), jax.random.key(0))
  assert not bool(metrics["finite"]) and int(new.skipped) == 1 and int(new.step) == 1
  for a, c in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(new.params)):
    np.testing.assert_array_equal(a, c)   # NaN == NaN under assert_array_equal


@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_checkpoint_round_trip_gives_identical_params_and_losses(tmp_path):
  m, tx, st, fn = setup(dropout_rate=0.1)
  rng = jax.random.key(3)
  for i in range(3):
    st, _ = fn(st, copy_batch(i), rng)
  ckpt = checkpoint.Checkpointer(tmp_path, every_steps=1, keep=2, async_save=True)
  ckpt.save(3, st, {"position": 3})
  ckpt.wait()
  b = copy_batch(0)
  shardings = jax.tree_util.tree_map(lambda x: x.sharding, st)
  abstract = state_lib.abstract(m, tx, b["src"][:1], b["tgt_in"][:1], shardings)
  restored, data_state, step = checkpoint.Checkpointer(
      tmp_path, every_steps=1, keep=2).restore(abstract)
  assert step == 3 and data_state == {"position": 3}
  for a, c in zip(jax.tree_util.tree_leaves(st), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(a, c)
  losses_a, losses_b = [], []
  for i in range(3, 6):
    st, ma = fn(st, copy_batch(i), rng)
    restored, mb = fn(restored, copy_batch(i), rng)
    losses_a.append(float(ma["loss"])); losses_b.append(float(mb["loss"]))
  assert losses_a == losses_b


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_schedules_warm_up_to_the_peak(name):
  cfg = ml_collections.ConfigDict(dict(OPTIM.to_dict(), schedule=name, warmup_steps=10))
  lr = optim.schedule(cfg, 100)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(10)), 3e-3, rtol=1e-5)
  assert float(lr(99)) <= 3e-3 * (1 + 1e-6)


def test_trainable_regex_freezes_every_other_parameter():
  """optim.trainable="cross_attention": only those parameters move (Gheini et al., 2021)."""
  _, _, st, fn = setup(trainable="cross_attention")
  before = jax.device_get(st.params)   # the step donates its input state
  new, _ = fn(st, copy_batch(3), jax.random.key(1))   # learning rate 0 (warm-up starts at 0)
  new, _ = fn(new, copy_batch(4), jax.random.key(2))
  flat = lambda params: jax.tree_util.tree_flatten_with_path(params)[0]
  for (path, before), (_, after) in zip(flat(before), flat(new.params)):
    moved = not np.allclose(before, after)
    assert moved == ("cross_attention" in jax.tree_util.keystr(path)), path
  frozen_state = [x for x in jax.tree_util.tree_leaves(new.opt_state) if np.size(x) > 1]
  assert sum(np.size(x) for x in frozen_state) < 3 * sum(
      np.size(x) for x in jax.tree_util.tree_leaves(new.params))  # no Adam moments for frozen


def test_trainable_regex_that_matches_nothing_is_a_clear_error():
  with pytest.raises(ValueError, match="matches no parameter"):
    setup(trainable="no_such_module")
