"""The model's defining properties: causality, padding invariance, caches, gradients."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compiled import Compiled, cached_log_probs
from encdec import decoding, model
from encdec.errors import ConfigError

BASE = dict(src_vocab_size=23, tgt_vocab_size=29, d_model=32, num_heads=4, d_ff=64,
            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0, tie_output=False)
VARIANTS = {
    "scan-pre": {},
    "unrolled-post-learned": dict(scan_layers=False, norm="post", position_encoding="learned",
                                  max_len=16),
    "shared-tied": dict(share_embeddings=True, tie_output=True, src_vocab_size=29),
}


def make(**overrides):
  return _make(tuple(sorted(overrides.items())))


@functools.lru_cache(maxsize=None)
def _make(overrides):
  """(model, variables, src, tgt) of a config, built once per test module."""
  m = model.build({**BASE, **dict(overrides)})
  src = jnp.array([[5, 6, 7, 8, 2, 0], [9, 10, 2, 0, 0, 0]], jnp.int32)   # [B=2, S=6]
  tgt = jnp.array([[1, 11, 12, 13, 14], [1, 15, 16, 0, 0]], jnp.int32)     # [B=2, T=5]
  variables = jax.jit(m.init)(jax.random.key(0), src, tgt)
  return Compiled(m), variables, src, tgt


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_future_targets_leaves_earlier_logits_unchanged(variant):
  m, v, src, tgt = make(**VARIANTS[variant])
  logits = m.apply(v, src, tgt)
  changed = tgt.at[:, 3:].set(20)
  logits2 = m.apply(v, src, changed)
  np.testing.assert_allclose(logits[:, :3], logits2[:, :3], atol=1e-5)
  assert not np.allclose(logits[:, 3:], logits2[:, 3:], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_real_positions(variant):
  m, v, src, tgt = make(**VARIANTS[variant])
  logits = m.apply(v, src, tgt)
  more_src_pad = jnp.pad(src, [(0, 0), (0, 3)])
  more_tgt_pad = jnp.pad(tgt, [(0, 0), (0, 2)])
  logits2 = m.apply(v, more_src_pad, more_tgt_pad)
  np.testing.assert_allclose(logits, logits2[:, :tgt.shape[1]], atol=1e-5)


def test_decoder_reads_the_source():
  m, v, src, tgt = make()
  # Tokens after the first PAD would be ignored; a changed *real* source token is not.
  other = src.at[0, 0].set(19)
  assert not np.allclose(m.apply(v, src, tgt)[0], m.apply(v, other, tgt)[0], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_full_forward(variant):
  m, v, src, tgt = make(**VARIANTS[variant])
  full = jax.nn.log_softmax(m.apply(v, src, tgt))
  cached = cached_log_probs(m, v, src, tgt)
  np.testing.assert_allclose(full[0], cached[0], atol=1e-4)
  np.testing.assert_allclose(full[1, :3], cached[1, :3], atol=1e-4)  # real positions of row 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_equals_argmax_of_full_forward(variant):
  m, v, src, _ = make(**VARIANTS[variant])
  out = decoding.greedy(m.module, v, src, max_len=8)                       # [B, 8]
  assert out.shape == (2, 8) and out.dtype == jnp.int32
  cfg = m.config
  tgt_in = jnp.concatenate([jnp.full((2, 1), cfg.bos_id, jnp.int32), out[:, :-1]], axis=1)
  logits = m.apply(v, src, tgt_in)                                          # [B, 8, V]
  never = list(decoding.never_emitted(cfg, cfg.eos_id))                     # PAD, BOS
  argmax = jnp.argmax(logits.at[..., never].set(-jnp.inf), axis=-1)
  for row in range(2):
    ended = np.flatnonzero(np.asarray(out[row]) == cfg.eos_id)
    n = ended[0] + 1 if len(ended) else 8
    np.testing.assert_array_equal(out[row, :n], argmax[row, :n])
    assert np.all(np.asarray(out[row, n:]) == cfg.pad_id)


def test_greedy_output_is_well_formed_after_eos():
  tokens = jnp.array([[5, 2, 7, 2, 9], [5, 6, 7, 8, 9]])
  np.testing.assert_array_equal(decoding.finalize(tokens, eos_id=2, pad_id=0),
                                [[5, 2, 0, 0, 0], [5, 6, 7, 8, 9]])


def test_gradients_reach_every_parameter():
  m, v, src, tgt = make(dropout_rate=0.1)

  def loss(params):
    logits = m.apply({"params": params}, src, tgt, train=True,
                     rngs={"dropout": jax.random.key(1)})
    return jnp.mean(jax.nn.log_softmax(logits)[..., 4])

  grads = jax.jit(jax.grad(loss))(v["params"])
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f"no gradient reaches {dead}"


@pytest.mark.slow   # 23 s: compiles the scanned model's gradient under each remat policy
@pytest.mark.parametrize("remat, scan", [("dots", True),
                                         pytest.param("full", False, marks=pytest.mark.slow)])
def test_remat_changes_memory_not_the_loss_or_gradients(remat, scan):
  """Same parameters, same dropout masks (recomputed from the same keys), same gradients."""
  def loss_and_grads(**overrides):
    m, v, src, tgt = make(dropout_rate=0.1, scan_layers=scan, **overrides)

    def loss(params):
      logits = m.apply({"params": params}, src, tgt, train=True,
                       rngs={"dropout": jax.random.key(1)})
      return jnp.mean(jax.nn.log_softmax(logits)[..., 4])
    return jax.jit(jax.value_and_grad(loss))(v["params"])

  (plain, plain_grads), (rematted, remat_grads) = loss_and_grads(), loss_and_grads(remat=remat)
  np.testing.assert_allclose(rematted, plain, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                         remat_grads, plain_grads)


def test_dropout_is_active_only_in_training():
  m, v, src, tgt = make(dropout_rate=0.5)
  np.testing.assert_allclose(m.apply(v, src, tgt), m.apply(v, src, tgt))
  a = m.apply(v, src, tgt, train=True, rngs={"dropout": jax.random.key(1)})
  b = m.apply(v, src, tgt, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)


def test_packed_sequences_equal_separate_examples():
  m, v, _, _ = make()
  a_src, a_tgt = jnp.array([5, 6, 2]), jnp.array([1, 11, 12])
  b_src, b_tgt = jnp.array([7, 2]), jnp.array([1, 13])
  packed_src = jnp.concatenate([a_src, b_src])[None]                        # [1, 5]
  packed_tgt = jnp.concatenate([a_tgt, b_tgt])[None]                        # [1, 5]
  seg_src = jnp.array([[1, 1, 1, 2, 2]]); seg_tgt = jnp.array([[1, 1, 1, 2, 2]])
  pos_src = jnp.array([[0, 1, 2, 0, 1]]); pos_tgt = jnp.array([[0, 1, 2, 0, 1]])
  packed = m.apply(v, packed_src, packed_tgt, src_segment_ids=seg_src, src_positions=pos_src,
                   tgt_segment_ids=seg_tgt, tgt_positions=pos_tgt)
  alone_a = m.apply(v, a_src[None], a_tgt[None])
  alone_b = m.apply(v, b_src[None], b_tgt[None])
  np.testing.assert_allclose(packed[0, :3], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(packed[0, 3:], alone_b[0], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  m, v, src, tgt = make(dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(v["params"]))
  logits = m.apply(v, src, tgt)
  assert logits.dtype == jnp.float32
  m32, _, _, _ = make()
  np.testing.assert_allclose(logits, m32.apply(v, src, tgt), atol=0.15)


def test_registry_and_bad_names():
  assert "mha" in model.CROSS_ATTENTION
  with pytest.raises(ConfigError, match="unknown model.cross_attention 'nope'; valid: .*mha"):
    model.build({**BASE, "cross_attention": "nope"})
  with pytest.raises(ValueError, match="unknown model field"):
    model.build({**BASE, "d_modle": 3})
