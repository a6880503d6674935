"""Every registered cross-attention variant has the properties of the standard one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec import decoding, model

BASE = dict(src_vocab_size=23, tgt_vocab_size=29, d_model=32, num_heads=4, d_ff=64,
            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0, tie_output=False,
            cross_kv_heads=2)
VARIANTS = sorted(model.CROSS_ATTENTION)
SRC = jnp.array([[5, 6, 7, 8, 2, 0], [9, 10, 2, 0, 0, 0]], jnp.int32)      # [B=2, S=6]
TGT = jnp.array([[1, 11, 12, 13, 14], [1, 15, 16, 0, 0]], jnp.int32)       # [B=2, T=5]


class Jitted:
  """The model with a compiled forward (op-by-op execution of scanned layers is slow)."""

  def __init__(self, module):
    self.module = module
    self.apply = jax.jit(module.apply)
    self.init = module.init


def make(variant):
  m = model.build({**BASE, "cross_attention": variant})
  v = m.init(jax.random.key(0), SRC, TGT)
  # Gates start closed (tanh(0) = 0); open them so the source is actually read.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, 0.5) if "gate" in jax.tree_util.keystr(path) else x,
      v["params"])
  return Jitted(m), {"params": params}


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal(variant):
  m, v = make(variant)
  logits = m.apply(v, SRC, TGT)
  changed = m.apply(v, SRC, TGT.at[:, 3:].set(20))
  np.testing.assert_allclose(logits[:, :3], changed[:, :3], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariant(variant):
  m, v = make(variant)
  logits = m.apply(v, SRC, TGT)
  padded = m.apply(v, jnp.pad(SRC, [(0, 0), (0, 3)]), jnp.pad(TGT, [(0, 0), (0, 2)]))
  np.testing.assert_allclose(logits, padded[:, :TGT.shape[1]], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_full_forward(variant):
  m, v = make(variant)
  full = jax.nn.log_softmax(m.apply(v, SRC, TGT))
  cache = decoding.init_cache(m.module, v, SRC, max_len=TGT.shape[1])
  step_fn = jax.jit(lambda cache, tokens, t: decoding.decode_step(m.module, v, cache, SRC,
                                                                  tokens, t))
  for t in range(TGT.shape[1]):
    step, cache = step_fn(cache, TGT[:, t], jnp.array(t))
    np.testing.assert_allclose(step[0], full[0, t], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
  m, v = make(variant)

  def loss(params):
    return jnp.mean(jax.nn.log_softmax(m.apply({"params": params}, SRC, TGT))[..., 4])

  grads = jax.tree_util.tree_flatten_with_path(jax.grad(loss)(v["params"]))[0]
  dead = [jax.tree_util.keystr(p) for p, g in grads if not np.any(np.asarray(g) != 0)]
  if variant == "none":  # the control cuts the source off: only encoder-side params are idle
    dead = [p for p in dead if not any(k in p for k in ("encoder", "src_embed",
                                                         "cross_attention_residual"))]
  assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_reads_the_source_unless_it_is_the_control(variant):
  m, v = make(variant)
  differs = not np.allclose(m.apply(v, SRC, TGT), m.apply(v, SRC.at[:, 0].set(19), TGT),
                            atol=1e-5)
  assert differs == (variant != "none")


def test_kv_cache_shrinks_with_fewer_kv_heads():
  sizes = {}
  for variant in ("mha", "gqa", "mqa"):
    m, v = make(variant)
    cache = decoding.init_cache(m.module, v, SRC, max_len=4)
    kv = cache["decoder"]["layers"]["cross_attention"]["cached_kv"]
    sizes[variant] = kv.shape[-2]                                   # [L, B, S, 2, Hk, D]
  assert sizes == {"mha": 4, "gqa": 2, "mqa": 1}


def test_gated_starts_closed():
  m = model.build({**BASE, "cross_attention": "gated"})
  v = m.init(jax.random.key(0), SRC, TGT)
  np.testing.assert_allclose(m.apply(v, SRC, TGT), m.apply(v, SRC.at[:, 0].set(19), TGT))
