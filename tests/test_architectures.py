"""Position schemes, norms, MLPs and presets (encdec/model/positions.py, layers.py, presets.py).

The model's properties for each relative position scheme: causality, padding invariance,
cached decoding with beams equal to the full forward pass past the longest position (2 ×
max_len, past T5's relative_max_distance), gradients reach every parameter, packing = separate
examples, cross-attention reads no positions, the encoder does (unless `none`). The quick suite
runs each scheme with `mha` (each also varying the norm, MLP or biases), plus `merged` (which
applies the self-attention positions itself); `-m slow` runs every scheme ×
every variant and every preset. Every model is tiny, and everything the property tests compare
is computed by one compiled function per config (`probe`): compiling dominates on CPU.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec import config, decoding, model
from encdec.errors import ConfigError
from encdec.model import positions, presets, schema

# max_len 8: the relative schemes have no length limit and are decoded to 2 × max_len.
# T5 buckets: 8 (4 per direction in the encoder), the last from distance 12 < 16 on.
BASE = dict(src_vocab_size=23, tgt_vocab_size=29, d_model=32, num_heads=4, d_ff=64,
            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0, tie_output=False,
            cross_kv_heads=2, max_len=8, relative_buckets=8, relative_max_distance=12)
RELATIVE = ("t5_relative", "rope", "alibi", "none")
# The quick configs; each scheme's also varies the blocks, so every norm and MLP runs, and
# half unroll their layers (a faster compile; the bias and the RoPE angles still go through
# nn.scan in the others).
QUICK = {
    ("t5_relative", "mha"): dict(norm_type="rmsnorm", mlp="geglu", attention_bias=True,
                                 embedding_norm=True, logits_bias=True, scale_embeddings=True),
    ("rope", "mha"): dict(mlp="swiglu", mlp_bias=False, scan_layers=False),
    ("alibi", "mha"): dict(mlp="reglu", norm_type="rmsnorm", scan_layers=False),
    ("none", "mha"): dict(norm="post", embedding_norm=True, scan_layers=False),
}
SLOW = [(scheme, variant) for scheme in RELATIVE for variant in sorted(model.CROSS_ATTENTION)
        if (scheme, variant) not in QUICK]
CASES = [pytest.param(*case, id="-".join(case)) for case in QUICK] + [
    pytest.param(*case, id="-".join(case), marks=pytest.mark.slow) for case in SLOW]

LENGTH = 16                                                 # 2 × max_len
SRC = jnp.array([[5, 6, 7, 8, 2, 0], [9, 10, 2, 0, 0, 0]], jnp.int32)      # [B=2, S=6]
SRC_REPEATED = jnp.repeat(SRC, 2, axis=0)                                  # [B*2, S]
# Two target rows per source (beams): row 1 is row 0 with its future from step 3 on changed;
# source 1's rows have 8 real tokens, then padding.
_ROW = 3 + jnp.arange(LENGTH, dtype=jnp.int32) % 26
TGT = jnp.stack([_ROW, _ROW.at[3:].set(20), _ROW[::-1] % 20 + 3,
                 (_ROW[::-1] % 20 + 3).at[1:].set(17)]).at[:, 0].set(1).at[2:, 8:].set(0)
PERMUTATION = jnp.array([3, 0, 5, 2, 1, 4])       # of source positions (padding included)


# Compiling dominates these tests on CPU; XLA's backend optimisations halve it and change no
# result beyond rounding.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def visible(params):
  """Gates opened and biases (T5 tables, logits and projection biases) made large, so that a
  mistake in them shows in the outputs."""
  def change(path, x):
    name = jax.tree_util.keystr(path)
    if "gate" in name:
      return jnp.full_like(x, 0.5)
    if "rel_embedding" in name or "bias" in name:
      return jax.random.normal(jax.random.key(len(name)), x.shape) * 0.5
    return x
  return jax.tree_util.tree_map_with_path(change, params)


def cached_log_probs(m, v, src, tgt, beams):
  """Step-by-step decoding of tgt [B*beams, T] (rows b*beams + g share source b), as
  compiled.cached_log_probs but one scan over the module's functions: [B*G, T, V]."""
  cache = decoding.init_cache(m, v, src, max_len=tgt.shape[1], beams=beams)

  def step(cache, inputs):
    log_probs, cache = decoding.decode_step(m, v, cache, src, *inputs)
    return cache, log_probs
  _, steps = jax.lax.scan(step, cache, (tgt.T, jnp.arange(tgt.shape[1])))
  return steps.swapaxes(0, 1)


def probe(m, everything=True):
  """What the property tests compare, from one compiled function (parameters included);
  without `everything`, the padded, packed and permuted-source runs are left out."""
  def run(key):
    params = visible(m.init(key, SRC, TGT[:2, :5])["params"])
    v = {"params": params}
    log_probs = lambda *args, **kwargs: jax.nn.log_softmax(m.apply(v, *args, **kwargs))
    encoded = m.apply(v, SRC_REPEATED, method=m.encode)
    a_src, b_src = SRC[0, :5], SRC[1, :3]                                  # example a: rows 0
    a_tgt, b_tgt = TGT[0], TGT[2, :8]                                      # and b: row 2 of full
    ones = lambda a, b: jnp.concatenate([jnp.full(len(a), 1), jnp.full(len(b), 2)])[None]
    ranks = lambda a, b: jnp.concatenate([jnp.arange(len(a)), jnp.arange(len(b))])[None]
    out = dict(
        params=params,
        full=log_probs(SRC_REPEATED, TGT),                                 # [4, T, V]
        cached=cached_log_probs(m, v, SRC, TGT, beams=2),
        permuted_encoding=log_probs(encoded[:, PERMUTATION], SRC_REPEATED[:, PERMUTATION], TGT,
                                    method=m.decode))
    if everything:
      out.update(
          padded=log_probs(jnp.pad(SRC_REPEATED, [(0, 0), (0, 3)]),
                           jnp.pad(TGT, [(0, 0), (0, 2)])),
          packed=log_probs(
              jnp.concatenate([a_src, b_src])[None], jnp.concatenate([a_tgt, b_tgt])[None],
              src_segment_ids=ones(a_src, b_src), src_positions=ranks(a_src, b_src),
              tgt_segment_ids=ones(a_tgt, b_tgt), tgt_positions=ranks(a_tgt, b_tgt)),
          permuted_source=log_probs(SRC_REPEATED[:, PERMUTATION], TGT))
    return out
  return compiled(run, jax.random.key(0))


def gradients(m, params):
  """The gradient of a loss over every position and row, with the layers unrolled (a faster
  compile; the same parameters)."""
  unrolled, params = model.transformer.unrolled(m, params)

  def loss(params):
    return jnp.mean(jax.nn.log_softmax(unrolled.apply({"params": params}, SRC_REPEATED, TGT)
                                       )[..., 4])
  return compiled(jax.grad(loss), params)


def build(scheme, variant):
  return model.build({**BASE, **QUICK.get((scheme, variant), {}), "position_encoding": scheme,
                      "cross_attention": variant})


def probed(scheme, variant, everything=False):
  """(model, probe) of a config, once. The quick configs of other variants than mha leave the
  padded, packed and permuted-source runs (and their tests) to the slow suite."""
  return _probed(scheme, variant,
                 everything or variant == "mha" or (scheme, variant) not in QUICK)


@functools.lru_cache(maxsize=None)
def _probed(scheme, variant, everything):
  m = build(scheme, variant)
  return m, probe(m, everything)


# The padding and packing tests: mha's quick, the other variants' slow.
FULL_CASES = [c if c.values[1] == "mha" or c.marks else
              pytest.param(*c.values, id=c.id, marks=pytest.mark.slow) for c in CASES]


# ------------------------------------------------------------------- model properties
@pytest.mark.parametrize("scheme,variant", CASES)
def test_causal(scheme, variant):
  full = probed(scheme, variant)[1]["full"]
  np.testing.assert_allclose(full[0, :3], full[1, :3], atol=1e-5)
  assert not np.allclose(full[0, 3:], full[1, 3:], atol=1e-3)


@pytest.mark.parametrize("scheme,variant", FULL_CASES)
def test_padding_invariant(scheme, variant):
  out = probed(scheme, variant, everything=True)[1]
  np.testing.assert_allclose(out["padded"][:, :LENGTH], out["full"], atol=1e-5)


@pytest.mark.parametrize("scheme,variant", CASES)
def test_cached_decoding_with_beams_equals_the_full_forward_past_max_len(scheme, variant):
  """16 steps (2 × max_len), two rows per source reading its K/V without copies = the full
  forward pass with sources repeated."""
  out = probed(scheme, variant)[1]
  np.testing.assert_allclose(out["cached"], out["full"], atol=1e-4)


def dead_parameters(grads, variant):
  grads = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in grads if not np.any(np.asarray(g) != 0)]
  if variant == "none":   # the control cuts the source off: source-side parameters are idle
    dead = [p for p in dead if not any(k in p for k in ("encoder", "src_embed",
                                                        "cross_attention_residual"))]
  return dead


# One quick config has every new parameter (T5 tables, biases, RMSNorm, gated MLP, embedding
# norm, logits bias); the rest are slow.
@pytest.mark.parametrize("scheme,variant", [
    c if c.values == ("t5_relative", "mha") else pytest.param(*c.values, id=c.id,
                                                              marks=pytest.mark.slow)
    for c in CASES])
def test_gradients_reach_every_parameter(scheme, variant):
  m, out = probed(scheme, variant)
  dead = dead_parameters(gradients(m, out["params"]), variant)
  assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("scheme,variant", FULL_CASES)
def test_packed_sequences_equal_separate_examples(scheme, variant):
  """Two examples in one row (segment ids, per-example positions) = rows 0 and 2 alone."""
  m, out = probed(scheme, variant, everything=True)
  if not m.config.variant.supports_packing:
    pytest.skip("the variant refuses packed batches")
  np.testing.assert_allclose(out["packed"][0, :LENGTH], out["full"][0], atol=1e-5)
  np.testing.assert_allclose(out["packed"][0, LENGTH:], out["full"][2, :8], atol=1e-5)


@pytest.mark.parametrize("scheme,variant", CASES)
def test_cross_attention_reads_no_positions(scheme, variant):
  """Permuting the encoder output's positions (its mask along) changes nothing: cross-attention
  (and `merged`'s source part) gets no position information. `local` predicts positions."""
  out = probed(scheme, variant)[1]
  if variant == "local":
    pytest.skip("local-p attention reads source positions by design")
  np.testing.assert_allclose(out["permuted_encoding"], out["full"], atol=1e-4)


@pytest.mark.parametrize("scheme", RELATIVE)
def test_the_encoder_reads_positions_unless_the_scheme_is_none(scheme):
  out = probed(scheme, "mha")[1]
  same = np.allclose(out["permuted_source"], out["full"], atol=1e-4)
  assert same == (scheme == "none")


@pytest.mark.slow
def test_greedy_and_beam_search_equal_the_full_forward_past_max_len():
  """The searches' own (unrolled, jitted) decoding path."""
  m, out = probed("t5_relative", "mha")
  v = {"params": out["params"]}
  out = decoding.greedy(m, v, SRC, max_len=LENGTH, eos_id=-1)             # [B, 16]
  tgt_in = jnp.concatenate([jnp.full((2, 1), 1, jnp.int32), out[:, :-1]], axis=1)
  logits = m.apply(v, SRC, tgt_in).at[..., [0, 1]].set(-jnp.inf)          # never PAD or BOS
  np.testing.assert_array_equal(out, jnp.argmax(logits, axis=-1))
  tokens, scores = decoding.beam_search(m, v, SRC, beam_size=2, max_len=LENGTH, alpha=0.0,
                                        return_all=True, eos_id=-1)       # [B, 2, 16], [B, 2]
  for beam in range(2):
    tgt_in = jnp.concatenate([jnp.full((2, 1), 1, jnp.int32), tokens[:, beam, :-1]], axis=1)
    log_probs = jax.nn.log_softmax(m.apply(v, SRC, tgt_in))
    total = jnp.take_along_axis(log_probs, tokens[:, beam, :, None], axis=-1).sum((1, 2))
    np.testing.assert_allclose(scores[:, beam], total, atol=1e-3)


# ---------------------------------------------------------------- the schemes themselves
def t5_bucket(relative, bidirectional, num_buckets, max_distance):
  """T5's _relative_position_bucket (mesh_tensorflow / HF modeling_t5), restated per element."""
  n, bucket = -relative, 0
  if bidirectional:
    num_buckets //= 2
    bucket += num_buckets if n < 0 else 0
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return bucket + n
  large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
  return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 12)])
def test_t5_buckets_match_t5s_formula(bidirectional, num_buckets, max_distance):
  relative = np.arange(-300, 301)
  got = positions.relative_bucket(jnp.array(relative), bidirectional=bidirectional,
                                  num_buckets=num_buckets, max_distance=max_distance)
  want = [t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative]
  np.testing.assert_array_equal(got, want)


def bias_of(scheme, causal, q_positions, k_positions=None):
  """The bias [B, H, T, S] a stack's self-attention gets, with T5's table = arange (so a bias
  value is its bucket), for keys at `k_positions` (decoding) or the queries' own positions."""
  cfg = model.TransformerConfig(**{**BASE, "position_encoding": scheme})
  module = positions.RelativePositions(cfg, causal=causal)
  table = jnp.broadcast_to(jnp.arange(8.0)[:, None], (8, 4))
  if k_positions is None:
    return module.apply({"params": {"rel_embedding": table}}, q_positions).bias
  cache = {"key_positions": k_positions}
  return module.apply({"params": {"rel_embedding": table}, "cache": cache}, q_positions,
                      decode=True, mutable=["cache"])[0].bias


def test_t5_bias_is_bidirectional_in_the_encoder_and_causal_in_the_decoder():
  pos = jnp.arange(16)[None]
  relative = np.arange(16)[None, :] - np.arange(16)[:, None]               # [T, S]: j - i
  for causal in (False, True):
    want = np.vectorize(lambda r, c=causal: t5_bucket(r, not c, 8, 12))(relative)
    np.testing.assert_array_equal(bias_of("t5_relative", causal, pos)[0, 2], want)
  # A decoding step at position 13 over cache slots 0..15 = row 13 of the full forward's.
  step = bias_of("t5_relative", True, jnp.array([[13]]), jnp.arange(16)[None])
  np.testing.assert_array_equal(step[0, :, 0], bias_of("t5_relative", True, pos)[0, :, 13])


def test_alibi_slopes_are_the_papers_geometric_sequence():
  np.testing.assert_allclose(positions.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
  np.testing.assert_allclose(positions.alibi_slopes(4), [2.0 ** -(2 * (i + 1)) for i in range(4)])
  # 6 heads: the 4-head sequence, then every other one of the 8-head sequence.
  np.testing.assert_allclose(positions.alibi_slopes(6),
                             [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])


def test_alibi_penalises_distance_in_both_directions_by_each_heads_slope():
  bias = bias_of("alibi", False, jnp.array([[0, 1, 2, 3, 4]]))             # [1, H, 5, 5]
  distance = np.abs(np.arange(5)[None, :] - np.arange(5)[:, None])
  np.testing.assert_allclose(bias[0], -positions.alibi_slopes(4)[:, None, None] * distance)
  # decoding: query at 6 over slots 0..7 (later slots are masked by the cache)
  step = bias_of("alibi", True, jnp.array([[6]]), jnp.arange(8)[None])[0, :, 0]
  np.testing.assert_allclose(step[:, :7], -positions.alibi_slopes(4)[:, None] * (6 - np.arange(7)))


def test_rope_makes_query_key_scores_depend_on_distance_only():
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))            # [B, T, H, D] each
  def score(i, j):
    rotate = lambda x, p: positions.rotate(x, positions.rotary_angles(jnp.array([[p]]), 8, 10.0))
    return float(jnp.sum(rotate(q, i) * rotate(k, j)))
  assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-4)
  assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
  assert score(0, 0) == pytest.approx(float(jnp.sum(q * k)), abs=1e-5)   # position 0: identity


def param_shapes(m) -> dict[str, tuple[int, ...]]:
  """path: shape of m's parameters (traced, nothing computed)."""
  params = jax.eval_shape(m.init, jax.random.key(0), SRC, TGT[:2, :5])["params"]
  return {"/".join(str(k.key) for k in path): tuple(x.shape) for path, x in
          jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]}


def test_relative_schemes_add_nothing_to_the_embeddings_and_t5_one_table_per_stack():
  for scheme in ("rope", "alibi", "none"):
    names = param_shapes(model.build({**BASE, "position_encoding": scheme}))
    assert not [n for n in names if "positions" in n]
  names = param_shapes(model.build({**BASE, "position_encoding": "t5_relative"}))
  assert {n: s for n, s in names.items() if "positions" in n} == {
      "encoder/relative_positions/rel_embedding": (8, 4),
      "decoder/relative_positions/rel_embedding": (8, 4)}


# ---------------------------------------------------------------- norms, MLPs, defaults
def test_rmsnorm_has_no_mean_and_no_bias():
  x = jnp.array([[1.0, 2.0, 3.0, 6.0]])
  norm = model.transformer.layers.norm(jnp.float32, "rmsnorm")
  v = norm.init(jax.random.key(0), x)
  assert set(v["params"]) == {"scale"}
  np.testing.assert_allclose(norm.apply(v, x), x / np.sqrt(np.mean(np.square(x)) + 1e-6),
                             rtol=1e-5)


@pytest.mark.parametrize("kind,activation", [("geglu", jax.nn.gelu), ("swiglu", jax.nn.silu),
                                             ("reglu", jax.nn.relu)])
def test_gated_mlps_put_the_activation_on_the_gate(kind, activation):
  mlp = model.transformer.layers.MLP(6, kind=kind, use_bias=False)
  x = jax.random.normal(jax.random.key(0), (2, 4))
  v = mlp.init(jax.random.key(1), x, deterministic=True)
  p = nn.meta.unbox(v["params"])
  want = (activation(x @ p["wi_0"]["kernel"]) * (x @ p["wi_1"]["kernel"])) @ p["wo"]["kernel"]
  np.testing.assert_allclose(mlp.apply(v, x, deterministic=True), want, rtol=1e-5, atol=1e-6)
  assert set(p) == {"wi_0", "wi_1", "wo"} and "bias" not in p["wo"]


# The default model's parameters (path: shape, layers scanned) as they were before the
# options above existed: defaults must keep old checkpoints loadable.
_LAYER = {"self_attention/qkv/kernel": (32, 3, 4, 8), "self_attention/out/kernel": (4, 8, 32),
          "mlp/wi/kernel": (32, 64), "mlp/wi/bias": (64,), "mlp/wo/kernel": (64, 32),
          "mlp/wo/bias": (32,)}
_NORMS = lambda *names: {f"{n}/norm/{p}": (32,) for n in names for p in ("scale", "bias")}
DEFAULT_TREE = {
    **{f"encoder/layers/{k}": (2, *v) for k, v in {
        **_LAYER, **_NORMS("attention_residual", "mlp_residual")}.items()},
    **{f"decoder/layers/{k}": (2, *v) for k, v in {
        **_LAYER, **_NORMS("self_attention_residual", "cross_attention_residual",
                           "mlp_residual"),
        "cross_attention/query/kernel": (32, 4, 8), "cross_attention/kv/kernel": (32, 2, 4, 8),
        "cross_attention/out/kernel": (4, 8, 32)}.items()},
    "encoder/norm/scale": (32,), "encoder/norm/bias": (32,), "decoder/norm/scale": (32,),
    "decoder/norm/bias": (32,), "src_embed/embedding": (23, 32), "tgt_embed/embedding": (29, 32)}


def test_defaults_keep_the_parameters_of_before():
  fields = {k: v for k, v in BASE.items() if k not in ("max_len", "relative_buckets",
                                                        "relative_max_distance", "tie_output")}
  assert param_shapes(model.build(fields)) == DEFAULT_TREE


def test_block_options_add_their_parameters():
  options = dict(attention_bias=True, mlp_bias=False, embedding_norm=True, logits_bias=True,
                 norm_type="rmsnorm")
  names = param_shapes(model.build({**BASE, **options}))
  layer = "decoder/layers/"
  assert names[layer + "self_attention/qkv/bias"] == (2, 3, 4, 8)        # [L, 3, H, D]
  assert names[layer + "cross_attention/kv/bias"] == (2, 2, 4, 8)
  assert {layer + "cross_attention/query/bias", layer + "cross_attention/out/bias",
          layer + "self_attention/out/bias", "encoder/layers/self_attention/out/bias",
          "decoder/embedding_norm/scale", "encoder/embedding_norm/scale"} <= set(names)
  assert names["decoder/logits_bias"] == (29,)
  assert not [n for n in names if "mlp/" in n and n.endswith("bias")]
  assert not [n for n in names if "norm/bias" in n]                        # RMSNorm: scale only


class Embedded(nn.Module):
  """The embedding stage of a stack (transformer.embed_inputs) alone."""
  fields: tuple

  @nn.compact
  def __call__(self, tokens):
    cfg = model.TransformerConfig(**{**BASE, **dict(self.fields)})
    embed = nn.Embed(cfg.src_vocab_size, cfg.d_model, name="embed")
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.transformer.embed_inputs(cfg, embed, tokens, positions, train=False)


def test_scale_embeddings_multiplies_the_token_embeddings_before_the_positions():
  fields = (("position_encoding", "sinusoidal"),)
  v = Embedded(fields).init(jax.random.key(0), SRC)
  plain = Embedded(fields).apply(v, SRC)
  scaled = Embedded(fields + (("scale_embeddings", True),)).apply(v, SRC)
  table = positions.sinusoidal(jnp.arange(6)[None], 32)
  np.testing.assert_allclose(scaled - table, (plain - table) * math.sqrt(32), rtol=1e-5,
                             atol=1e-5)


def test_embedding_norm_normalises_embeddings_plus_positions():
  module = Embedded((("embedding_norm", True),))
  out = module.apply(module.init(jax.random.key(0), SRC), SRC)             # [B, S, d]
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-3)


# ------------------------------------------------------------------------ presets, errors
def load_preset(preset):
  return config.load(None, {"model.preset": preset, "model.d_model": 32, "model.num_heads": 4,
                            "model.d_ff": 64, "model.num_encoder_layers": 2,
                            "model.num_decoder_layers": 2, "model.dropout_rate": 0.0})


@pytest.mark.parametrize("preset", sorted(presets.PRESETS))
def test_presets_load_and_build(preset):
  cfg = load_preset(preset)
  for name, value in presets.PRESETS[preset].items():
    assert cfg.model[name] == value, name                                 # resolved, saved
  names = param_shapes(model.build(dict(cfg.model, src_vocab_size=23, tgt_vocab_size=29)))
  assert ("decoder/logits_bias" in names) == presets.PRESETS[preset]["logits_bias"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(presets.PRESETS))
def test_presets_have_the_models_properties(preset):
  m = model.build(dict(load_preset(preset).model, src_vocab_size=23, tgt_vocab_size=29))
  out = probe(m)
  np.testing.assert_allclose(out["full"][0, :3], out["full"][1, :3], atol=1e-5)
  np.testing.assert_allclose(out["padded"][:, :LENGTH], out["full"], atol=1e-5)
  np.testing.assert_allclose(out["packed"][0, LENGTH:], out["full"][2, :8], atol=1e-5)
  np.testing.assert_allclose(out["cached"], out["full"], atol=1e-4)
  assert not dead_parameters(gradients(m, out["params"]), "mha")


def test_explicit_overrides_win_over_the_preset():
  cfg = config.load(None, {"model.preset": "t5_v1_1", "model.mlp": "swiglu",
                           "model.position_encoding": "alibi"})
  assert (cfg.model.mlp, cfg.model.position_encoding, cfg.model.norm_type) == (
      "swiglu", "alibi", "rmsnorm")
  built = model.build({**BASE, "preset": "modern", "mlp_bias": True}).config
  assert (built.position_encoding, built.mlp, built.mlp_bias) == ("rope", "swiglu", True)


@pytest.mark.parametrize("overrides,message", [
    ({"model.preset": "gpt"}, "unknown model.preset 'gpt'; valid: vaswani, t5_v1_1, bart"),
    ({"model.position_encoding": "xpos"},
     "unknown model.position_encoding 'xpos'; valid: sinusoidal, learned, t5_relative, rope"),
    ({"model.norm_type": "batchnorm"}, "unknown model.norm_type 'batchnorm'; valid: layernorm"),
    ({"model.mlp": "moe"}, "unknown model.mlp 'moe'; valid: dense, geglu, swiglu, reglu"),
    ({"model.relative_buckets": 0}, "model.relative_buckets must be > 0"),
    ({"model.position_encoding": "rope", "model.num_heads": 4, "model.head_dim": 5},
     "head dimension must be even"),
])
def test_bad_choices_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=message) as e:
    config.load(None, overrides)
  assert "\n" not in str(e.value)


def test_the_schema_lists_every_scheme():
  assert schema.POSITION_ENCODINGS == ("sinusoidal", "learned", "t5_relative", "rope", "alibi",
                                       "none")
  assert set(presets.PRESETS) <= set(schema.PRESETS)


# ------------------------------------------------------------------ PyTorch equivalence
def torch_transformer_with(params, cfg):
  """torch.nn.Transformer holding `params` (the layers unrolled) of a vaswani-preset model with
  attention biases (PyTorch's attention always has them)."""
  import torch  # pylint: disable=import-outside-toplevel
  d, layers = cfg.d_model, cfg.num_encoder_layers
  t = torch.nn.Transformer(d, cfg.num_heads, layers, layers, cfg.d_ff, dropout=0.0,
                           batch_first=True, norm_first=cfg.norm == "pre", layer_norm_eps=1e-6)
  if cfg.norm == "post":   # nn.Transformer ends each stack with a norm; post-LN stacks have none
    t.encoder.norm, t.decoder.norm = torch.nn.Identity(), torch.nn.Identity()
  tensor = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)
  state = {}

  def norm(prefix, tree):
    state[prefix + ".weight"], state[prefix + ".bias"] = tensor(tree["scale"]), tensor(tree["bias"])

  def attention(prefix, tree, in_kernels, in_biases):
    state[prefix + ".in_proj_weight"] = tensor(np.concatenate(
        [np.asarray(k).reshape(d, -1) for k in in_kernels], axis=1).T)
    state[prefix + ".in_proj_bias"] = tensor(np.concatenate(
        [np.asarray(b).reshape(-1) for b in in_biases]))
    state[prefix + ".out_proj.weight"] = tensor(np.asarray(tree["out"]["kernel"]).reshape(d, d).T)
    state[prefix + ".out_proj.bias"] = tensor(tree["out"]["bias"])

  def mlp(prefix, tree):
    for ours, theirs in (("wi", "linear1"), ("wo", "linear2")):
      state[f"{prefix}.{theirs}.weight"] = tensor(np.asarray(tree[ours]["kernel"]).T)
      state[f"{prefix}.{theirs}.bias"] = tensor(tree[ours]["bias"])

  for i in range(layers):
    enc, dec = params["encoder"][f"layer_{i}"], params["decoder"][f"layer_{i}"]
    sa = enc["self_attention"]
    attention(f"encoder.layers.{i}.self_attn", sa, [sa["qkv"]["kernel"]], [sa["qkv"]["bias"]])
    norm(f"encoder.layers.{i}.norm1", enc["attention_residual"]["norm"])
    mlp(f"encoder.layers.{i}", enc["mlp"])
    norm(f"encoder.layers.{i}.norm2", enc["mlp_residual"]["norm"])
    sa, xa = dec["self_attention"], dec["cross_attention"]
    attention(f"decoder.layers.{i}.self_attn", sa, [sa["qkv"]["kernel"]], [sa["qkv"]["bias"]])
    attention(f"decoder.layers.{i}.multihead_attn", xa, [xa["query"]["kernel"], xa["kv"]["kernel"]],
              [xa["query"]["bias"], xa["kv"]["bias"]])
    for j, name in enumerate(("self_attention_residual", "cross_attention_residual",
                              "mlp_residual")):
      norm(f"decoder.layers.{i}.norm{j + 1}", dec[name]["norm"])
    mlp(f"decoder.layers.{i}", dec["mlp"])
  if cfg.norm == "pre":
    norm("encoder.norm", params["encoder"]["norm"])
    norm("decoder.norm", params["decoder"]["norm"])
  missing = set(t.state_dict()) - set(state)
  assert not missing, missing
  t.load_state_dict(state, strict=False)
  return t.eval()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")   # PyTorch's nested-tensor notes
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_vaswani_equals_pytorch_nn_transformer_with_the_same_weights(norm):
  torch = pytest.importorskip("torch")
  m = model.build({**BASE, "preset": "vaswani", "norm": norm, "attention_bias": True,
                   "tie_output": True, "max_len": 512})
  v = m.init(jax.random.key(0), SRC, TGT[:2, :5])
  _, params = model.transformer.unrolled(m, nn.meta.unbox(v["params"]))
  peer = torch_transformer_with(params, m.config)
  src, tgt = SRC, TGT[::2, :8]                                             # [2, 6], [2, 8]
  embed = lambda table, tokens: torch.tensor(np.asarray(
      table[tokens] * math.sqrt(32) + positions.sinusoidal(jnp.arange(tokens.shape[1])[None], 32)))
  src_table, tgt_table = params["src_embed"]["embedding"], params["tgt_embed"]["embedding"]
  padding = torch.tensor(np.asarray(src == 0))
  with torch.no_grad():
    hidden = peer(embed(src_table, src), embed(tgt_table, tgt),
                  tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(8),
                  src_key_padding_mask=padding, memory_key_padding_mask=padding)
    logits = hidden @ torch.tensor(np.asarray(tgt_table)).T / math.sqrt(32)
  np.testing.assert_allclose(m.apply(v, src, tgt), logits.numpy(), atol=1e-4, rtol=1e-4)
