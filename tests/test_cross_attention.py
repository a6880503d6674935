"""Every registered cross-attention variant has the properties of the standard one."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compiled import CORE_VARIANTS, Compiled, cached_log_probs, structural_quick
from encdec import model

BASE = dict(src_vocab_size=23, tgt_vocab_size=29, d_model=32, num_heads=4, d_ff=64,
            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0, tie_output=False,
            cross_kv_heads=2)
# Every variant; the quick suite runs the core ones (tests/compiled.py), the slow one the rest.
QUICK = structural_quick()
SRC = jnp.array([[5, 6, 7, 8, 2, 0], [9, 10, 2, 0, 0, 0]], jnp.int32)      # [B=2, S=6]
TGT = jnp.array([[1, 11, 12, 13, 14], [1, 15, 16, 0, 0]], jnp.int32)       # [B=2, T=5]


@functools.lru_cache(maxsize=None)
def make(variant):
  """(model, variables) of a variant, built once per test module."""
  m = model.build({**BASE, "cross_attention": variant})
  v = jax.jit(m.init)(jax.random.key(0), SRC, TGT)
  # Gates start closed (tanh(0) = 0); open them so the source is actually read.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, 0.5) if "gate" in jax.tree_util.keystr(path) else x,
      v["params"])
  return Compiled(m), {"params": params}


@pytest.mark.parametrize("variant", QUICK)
def test_causal(variant):
  m, v = make(variant)
  logits = m.apply(v, SRC, TGT)
  changed = m.apply(v, SRC, TGT.at[:, 3:].set(20))
  np.testing.assert_allclose(logits[:, :3], changed[:, :3], atol=1e-5)


@pytest.mark.parametrize("variant", QUICK)
def test_padding_invariant(variant):
  m, v = make(variant)
  logits = m.apply(v, SRC, TGT)
  padded = m.apply(v, jnp.pad(SRC, [(0, 0), (0, 3)]), jnp.pad(TGT, [(0, 0), (0, 2)]))
  np.testing.assert_allclose(logits, padded[:, :TGT.shape[1]], atol=1e-5)


@pytest.mark.parametrize("variant", QUICK)
def test_cached_decoding_equals_full_forward(variant):
  m, v = make(variant)
  full = jax.nn.log_softmax(m.apply(v, SRC, TGT))
  np.testing.assert_allclose(cached_log_probs(m, v, SRC, TGT), full, atol=1e-4)


@pytest.mark.parametrize("variant", QUICK)
def test_beams_read_their_source_without_copies(variant):
  """Two target rows per source (K/V kept at batch B) = the full forward with sources repeated."""
  m, v = make(variant)
  tgt = jnp.stack([TGT, TGT.at[:, 1:].set(17)], axis=1).reshape(-1, TGT.shape[1])  # [B*2, T]
  full = jax.nn.log_softmax(m.apply(v, jnp.repeat(SRC, 2, axis=0), tgt))
  np.testing.assert_allclose(cached_log_probs(m, v, SRC, tgt, beams=2), full, atol=1e-4)


@pytest.mark.parametrize("variant", QUICK)
def test_gradients_reach_every_parameter(variant):
  m, v = make(variant)

  def loss(params):
    return jnp.mean(jax.nn.log_softmax(m.apply({"params": params}, SRC, TGT))[..., 4])

  grads = jax.tree_util.tree_flatten_with_path(jax.jit(jax.grad(loss))(v["params"]))[0]
  dead = [jax.tree_util.keystr(p) for p, g in grads if not np.any(np.asarray(g) != 0)]
  if variant == "none":  # the control cuts the source off: only encoder-side params are idle
    dead = [p for p in dead if not any(k in p for k in ("encoder", "src_embed",
                                                         "cross_attention_residual"))]
  assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("variant", structural_quick((*CORE_VARIANTS, "none")))
def test_reads_the_source_unless_it_is_the_control(variant):
  m, v = make(variant)
  differs = not np.allclose(m.apply(v, SRC, TGT), m.apply(v, SRC.at[:, 0].set(19), TGT),
                            atol=1e-5)
  assert differs == (variant != "none")


def test_kv_cache_shrinks_with_fewer_kv_heads():
  sizes = {}
  for variant in ("mha", "gqa", "mqa"):
    m, v = make(variant)
    cache = m.init_cache(v, SRC, max_len=4)
    kv = cache["decoder"]["layers"]["cross_attention"]["cached_kv"]
    sizes[variant] = kv.shape[-3]                                   # [L, 2, B, Hk, S, D]
  assert sizes == {"mha": 4, "gqa": 2, "mqa": 1}


def test_gated_starts_closed():
  m = Compiled(model.build({**BASE, "cross_attention": "gated"}))
  v = m.init(jax.random.key(0), SRC, TGT)
  np.testing.assert_allclose(m.apply(v, SRC, TGT), m.apply(v, SRC.at[:, 0].set(19), TGT))


@pytest.mark.parametrize("spec,expected", [
    ("all", (1, 1, 1, 1)), ("first", (1, 0, 0, 0)), ("last", (0, 0, 0, 1)),
    ("middle", (0, 0, 1, 0)), ("every:2", (0, 1, 0, 1)), ("0,3", (1, 0, 0, 1))])
def test_cross_attention_layers_places_it_in_those_layers_only(spec, expected):
  cfg = {**BASE, "num_decoder_layers": 4, "cross_attention_layers": spec}
  assert model.TransformerConfig(**cfg).cross_layers() == tuple(map(bool, expected))
  params = jax.eval_shape(model.build(cfg).init, jax.random.key(0), SRC, TGT)["params"]["decoder"]
  if spec == "all":   # one scanned stack
    assert "cross_attention" in params["layers"]
  else:
    assert tuple(int("cross_attention" in params[f"layer_{i}"]) for i in range(4)) == expected


def test_cross_attention_in_some_layers_decodes_like_the_full_forward():
  m = Compiled(model.build({**BASE, "num_decoder_layers": 3, "cross_attention_layers": "last"}))
  v = m.init(jax.random.key(0), SRC, TGT)
  full = jax.nn.log_softmax(m.apply(v, SRC, TGT))
  np.testing.assert_allclose(cached_log_probs(m, v, SRC, TGT), full, atol=1e-4)


@pytest.mark.parametrize("spec", ["some", "every:0", "7", ""])
def test_bad_cross_attention_layers_is_a_clear_error(spec):
  with pytest.raises(ValueError, match="cross_attention_layers"):
    model.TransformerConfig(**{**BASE, "cross_attention_layers": spec})


def test_shared_kv_caches_one_projection_for_all_layers():
  m, v = make("shared_kv")
  cache = m.init_cache(v, SRC, max_len=4)
  assert cache["decoder"]["cross_attention_memory"]["cached_kv"].shape == (2, 2, 4, 6, 8)  # [2, B, H, S, D]
  assert "cached_kv" not in cache["decoder"]["layers"].get("cross_attention", {})


def test_latent_cache_does_not_grow_with_the_source():
  m, v = make("latent")
  for length in (6, 12):
    src = jnp.pad(SRC, [(0, 0), (0, length - SRC.shape[1])])
    kv = m.init_cache(v, src, max_len=4)["decoder"]["layers"]["cross_attention"]
    assert kv["cached_kv"].shape == (2, 2, 2, 4, 16, 8)             # [L, 2, B, H, M, D]


def test_local_attention_stays_within_its_window():
  m = Compiled(model.build({**BASE, "cross_attention": "local", "cross_window": 1}))
  src = jnp.tile(jnp.arange(4, 20, dtype=jnp.int32), (2, 1))       # S = 16
  v = m.init(jax.random.key(0), src, TGT)
  sown = jax.jit(lambda v: m.module.apply(v, src, TGT, mutable=["intermediates"])[1])
  weights = sown(v)["intermediates"]["decoder"]["layers"]["cross_attention"]["weights"][0]
  assert weights.shape[-1] == 16                                   # [L, B, H, T, S]
  assert int(jnp.max(jnp.sum(weights > 1e-6, axis=-1))) <= 3       # |s - centre| <= 1


def test_all_layers_reads_a_mix_of_every_encoder_layer():
  m, v = make("all_layers")
  encoded = m.module.apply(v, SRC, method=m.module.encode)
  assert encoded.shape == (2, 6, BASE["num_encoder_layers"] + 1, BASE["d_model"])
  weights = v["params"]["decoder"]["layers"]["cross_attention"]["layer_weights"].value
  assert weights.shape == (BASE["num_decoder_layers"], BASE["num_encoder_layers"] + 1)


def test_merged_attention_replaces_self_attention():
  m, v = make("merged")
  layer = v["params"]["decoder"]["layers"]
  assert "self_attention" not in layer and "qkv" in layer["cross_attention"]
