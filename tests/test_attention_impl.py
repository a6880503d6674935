"""model.attention_impl: jax.nn.dot_product_attention ("jax"; "cudnn"/"auto" on a GPU) gives
the numbers of our own einsum path ("xla") on CPU, through every caller of
attention.dot_product_attention: encoder, decoder self-attention (causal, cached), the
cross-attention variants, beams folded onto a shared source. Also model.dtype="auto".

Each model configuration is compiled once per implementation, computing all its cases (plain
and packed batches; greedy and beam decoding) in one program. The quick suite runs one
configuration (relative bias, GQA, packing: the most arguments at once) and the unit checks;
the other schemes, cached decoding and gradients are slow (about 10-25 s each on 2 cores).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec import decoding, model
from encdec.errors import ConfigError
from encdec.model import attention

BASE = dict(src_vocab_size=20, tgt_vocab_size=24, d_model=32, num_heads=4, d_ff=64,
            num_encoder_layers=1, num_decoder_layers=2, dropout_rate=0.0, tie_output=False,
            cross_kv_heads=2)
SRC = jnp.array([[5, 6, 7, 8, 9, 2, 0], [10, 11, 2, 0, 0, 0, 0],
                 [12, 13, 14, 15, 16, 17, 2]], jnp.int32)                   # [B=3, S=7]
TGT = jnp.array([[1, 5, 6, 7, 8, 0], [1, 9, 0, 0, 0, 0], [1, 10, 11, 12, 13, 14]],
                jnp.int32)                                                  # [B=3, T=6]
# Packed: two examples in row 0, one (with padding) in row 1; segment 0 = padding.
PACKED = dict(
    src=jnp.array([[5, 6, 2, 7, 8, 9, 2], [10, 11, 12, 2, 0, 0, 0]], jnp.int32),
    src_segment_ids=jnp.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 0, 0, 0]], jnp.int32),
    src_positions=jnp.array([[0, 1, 2, 0, 1, 2, 3], [0, 1, 2, 3, 0, 0, 0]], jnp.int32),
    tgt=jnp.array([[1, 5, 1, 6, 7, 0], [1, 8, 9, 10, 0, 0]], jnp.int32),
    tgt_segment_ids=jnp.array([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]], jnp.int32),
    tgt_positions=jnp.array([[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 0]], jnp.int32))
# One position scheme each; MHA, GQA (2 K/V heads for 4 query heads) and the latent variant,
# which calls dot_product_attention itself.
CONFIGS = {
    "sinusoidal-mha": dict(position_encoding="sinusoidal", cross_attention="mha"),
    "t5_relative-gqa": dict(position_encoding="t5_relative", cross_attention="gqa"),
    "alibi-mha": dict(position_encoding="alibi", cross_attention="mha"),
    "rope-latent": dict(position_encoding="rope", cross_attention="latent", cross_latents=4),
}
QUICK = "t5_relative-gqa"
DECODE_LEN = 5


def build(overrides, impl):
  return model.build({**BASE, **overrides, "attention_impl": impl})


@functools.lru_cache(maxsize=None)
def params_of(name):
  m = build(CONFIGS[name], "xla")
  return jax.jit(m.init)(jax.random.key(0), SRC, TGT)["params"]


@functools.partial(jax.jit, static_argnums=0)
def forward(m, params):
  """Teacher-forced logits of the plain and the packed batch: [B, T, V] each."""
  packed = {k: v for k, v in PACKED.items() if k not in ("src", "tgt")}
  return (m.apply({"params": params}, SRC, TGT),
          m.apply({"params": params}, PACKED["src"], PACKED["tgt"], **packed))


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == QUICK else pytest.mark.slow)
                                  for n in CONFIGS])
def test_jax_attention_gives_our_logits(name):
  params = params_of(name)
  ours = forward(build(CONFIGS[name], "xla"), params)
  theirs = forward(build(CONFIGS[name], "jax"), params)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


@functools.partial(jax.jit, static_argnums=0)
def decode(m, params):
  """Cached decoding: greedy tokens [B, L], the cache's log-probs along them [L, B, V], and
  beam search's tokens (2 beams folded onto each source)."""
  variables = {"params": params}
  tokens = decoding.greedy(m, variables, SRC, DECODE_LEN, eos_id=-1)
  unrolled, v = decoding.for_decoding(m, variables)
  cache = decoding.init_cache(unrolled, v, SRC, DECODE_LEN)
  previous = jnp.concatenate([jnp.full((SRC.shape[0], 1), m.config.bos_id), tokens[:, :-1]], 1)

  def step(cache, inputs):
    log_probs, cache = decoding.decode_step(unrolled, v, cache, SRC, *inputs)
    return cache, log_probs
  _, log_probs = jax.lax.scan(step, cache, (previous.T, jnp.arange(DECODE_LEN)))
  beams = decoding.beam_search(m, variables, SRC, 2, DECODE_LEN)
  return tokens, log_probs, beams


@pytest.mark.slow
def test_cached_decoding_is_the_same():
  """Greedy and beam search over the caches (T5 bias over cache slots, GQA cross K/V cached
  once per source, beams folded onto it) decode the same tokens with the same scores."""
  name = "t5_relative-gqa"
  params = params_of(name)
  ours = decode(build(CONFIGS[name], "xla"), params)
  theirs = decode(build(CONFIGS[name], "jax"), params)
  np.testing.assert_array_equal(theirs[0], ours[0])
  np.testing.assert_allclose(theirs[1], ours[1], atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(theirs[2], ours[2])


@pytest.mark.slow
def test_gradients_are_the_same():
  name = "alibi-mha"
  params = params_of(name)

  def grads(impl):
    m = build(CONFIGS[name], impl)

    def loss(p):   # the packed batch: segment and padding masks, several examples a row
      packed = {k: v for k, v in PACKED.items() if k not in ("src", "tgt")}
      logits = m.apply({"params": p}, PACKED["src"], PACKED["tgt"], **packed)
      return jnp.mean(jax.nn.log_softmax(logits)[..., 3])
    return jax.jit(jax.grad(loss))(params)
  ours, theirs = grads("xla"), grads("jax")
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4), ours, theirs)


def test_cudnn_without_a_gpu_is_a_config_error():
  with pytest.raises(ConfigError, match="attention_impl='cudnn'.*'cpu'") as error:
    build({}, "cudnn")
  assert "\n" not in str(error.value)
  with pytest.raises(ConfigError, match="attention_impl"):
    build({}, "flash")


def test_which_calls_go_to_jax():
  """Dropout and attention weights stay on our path; "auto" is ours on CPU; "jax" is
  jax.nn's XLA implementation."""
  q, k = jnp.zeros((1, 4, 4, 8), jnp.bfloat16), jnp.zeros((1, 6, 2, 8), jnp.bfloat16)
  assert attention.jax_implementation("xla", q, k, serveable=True) is None
  assert attention.jax_implementation("jax", q, k, serveable=True) == "xla"
  assert attention.jax_implementation("jax", q, k, serveable=False) is None
  assert attention.jax_implementation("cudnn", q, k, serveable=False) is None
  assert attention.jax_implementation("auto", q, k, serveable=True) is None   # CPU


@pytest.mark.slow   # 14 s; the quick suite checks which calls go to JAX and its logits
def test_cudnn_arguments_give_our_numbers(monkeypatch):
  """What the cuDNN call gets (mask and bias broadcast to [.., T, S], is_causal, GQA heads),
  run by jax.nn's XLA implementation instead: our numbers. (cuDNN itself needs a GPU.)"""
  received = []

  def as_xla(*args, implementation, **kwargs):
    received.append((implementation, *(None if x is None else x.shape for x in args[3:5]),
                     kwargs["is_causal"]))
    return original(*args, implementation="xla", **kwargs)
  original = jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention", as_xla)
  q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 6, 4, 8))
  k, v = k[:, :, :2], v[:, :, :2]                                          # [B, S, Hk=2, D]
  bias = jax.random.normal(jax.random.key(2), (2, 4, 6, 6))
  mask = attention.decoder_mask(6, jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]]))
  cudnn_args = jax.jit(attention.jax_attention, static_argnums=(5, 6))
  ours = jax.jit(attention.dot_product_attention)(q, k, v, mask, bias=bias)
  cudnn = cudnn_args(q, k, v, mask, bias, True, "cudnn")
  np.testing.assert_allclose(cudnn, ours, atol=1e-6)
  assert received == [("cudnn", (2, 4, 6, 6), (2, 1, 6, 6), True)]
  padding = attention.key_padding_mask(jnp.array([[True] * 4 + [False] * 2] * 2))  # [B,1,1,S]
  np.testing.assert_allclose(cudnn_args(q, k, v, padding, None, False, "cudnn"),
                             jax.jit(attention.dot_product_attention)(q, k, v, padding),
                             atol=1e-6)
  assert received[1] == ("cudnn", None, (2, 1, 6, 6), False)


def test_auto_dtype_is_float32_on_cpu():
  """model.dtype="auto" (the default): bfloat16 on GPU/TPU, float32 here; params float32."""
  config = model.TransformerConfig(**BASE)
  assert config.dtype == "auto" and config.compute_dtype == jnp.float32
  assert model.TransformerConfig(**BASE, dtype="bfloat16").compute_dtype == jnp.bfloat16
