"""Search invariants: the output contract for every search and variant, exact search on a tiny
space, beam 1 = greedy, sampling."""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compiled import CORE_VARIANTS
from encdec import decoding, model

VARIANTS = sorted(model.CROSS_ATTENTION)
SRC = jnp.array([[5, 6, 7, 2, 0, 0], [5, 2, 0, 0, 0, 0], [8, 9, 10, 11, 2, 0],
                 [12, 13, 14, 15, 16, 2], [17, 4, 2, 0, 0, 0], [19, 18, 17, 16, 2, 0]],
                jnp.int32)                                                  # [B=6, S=6]
# (pad, start, eos): encdec's own, BART's, T5's (which starts decoding from PAD).
SPECIAL_IDS = {"encdec": (0, 1, 2), "bart": (1, 0, 2), "t5": (0, 0, 1)}
SEARCHES = {
    "greedy": lambda m, v, src, n, **kw: decoding.greedy(m, v, src, n, **kw),
    "beam": lambda m, v, src, n, **kw: decoding.beam_search(m, v, src, 3, n, **kw),
    "sample": lambda m, v, src, n, **kw: decoding.sample(m, v, src, n, jax.random.key(0), **kw),
}


def make(variant="mha", special=SPECIAL_IDS["encdec"], vocab=32, seed=0, scale=2.0,
         favour=3.0, eos_damp=4.0):
  """(module, variables): a random model with sharpened, varied outputs that favours the ids
  no search may emit (PAD and the start token), and ends late.

  Every parameter is multiplied by `scale` (peaked next-token distributions; gates opened).
  Then at every position the logits of PAD and of the start token rise by exactly `favour`, and
  EOS's falls by `eos_damp`. How: the decoder's final LayerNorm output sums to 0 over the
  features (its scale is the same for all of them), so centring each output column changes no
  logit; a LayerNorm bias of 1 then adds each column's sum to its logit: 0 for a centred
  column, s for one that got s / d_model added to each entry.
  """
  pad, bos, eos = special
  m = model.build(dict(src_vocab_size=20, tgt_vocab_size=vocab, d_model=32, num_heads=4,
                       d_ff=64, num_encoder_layers=1, num_decoder_layers=2, dropout_rate=0.0,
                       tie_output=False, cross_kv_heads=2, cross_attention=variant,
                       pad_id=pad, bos_id=bos, eos_id=eos))
  params = jax.jit(m.init)(jax.random.key(seed), SRC, SRC[:, :4])["params"]
  params = jax.tree_util.tree_map_with_path(   # gates open (tanh(0) = 0 would hide the source)
      lambda path, x: jnp.ones_like(x) if "gate" in jax.tree_util.keystr(path) else scale * x,
      nn.unbox(params))
  d = m.config.d_model
  kernel = params["decoder"]["logits"]["kernel"]                          # [d, V]
  kernel = kernel - jnp.mean(kernel, axis=0)
  shift = jnp.zeros(vocab).at[jnp.array(never_valid(m.config))].set(favour).at[eos].add(-eos_damp)
  params["decoder"]["logits"]["kernel"] = kernel + shift / d
  params["decoder"]["norm"]["bias"] = jnp.ones(d)
  return m, {"params": params}


def never_valid(config) -> list[int]:
  """PAD and the start token, unless one is also EOS (the test's own statement of the rule)."""
  return sorted({config.pad_id, config.bos_id} - {config.eos_id})


def tgt_in_of(config, tokens):
  """Teacher-forcing input for output rows [B, L]: the start token, then all but the last."""
  start = jnp.full((tokens.shape[0], 1), config.bos_id, jnp.int32)
  return jnp.concatenate([start, tokens[:, :-1]], axis=1)                 # [B, L]


def first_eos(row, eos):
  ends = np.flatnonzero(row == eos)
  return ends[0] if len(ends) else len(row)


@functools.lru_cache(maxsize=None)
def case(variant="mha", special="encdec", eos_damp=4.0):
  """(module, variables, compiled forward) of `make`, built once per test module."""
  m, v = make(variant, SPECIAL_IDS[special], eos_damp=eos_damp)
  return m, v, jax.jit(m.apply)


def assert_tokens_eos_then_pad(out, config):
  """The contract: no PAD or start token before a row's first EOS (anywhere, if it has none),
  only PAD after it."""
  banned = never_valid(config)
  for row in np.asarray(out):
    n = first_eos(row, config.eos_id)
    assert not np.isin(row[:n], banned).any(), f"PAD/start token {banned} emitted: {row}"
    assert np.all(row[n + 1:] == config.pad_id), f"not PAD after EOS: {row}"


def assert_not_vacuous(forward, v, config, out):
  """The outputs are varied, and at some step of them the model puts at least 10% of its
  probability on PAD and the start token: a search that does not mask them emits them (the
  searches before the mask did so in every case of these tests)."""
  probs = jax.nn.softmax(forward(v, SRC, tgt_in_of(config, out)))           # [B, L, V]
  mass = np.asarray(probs[..., never_valid(config)].sum(-1))                # [B, L]
  out = np.asarray(out)
  upto_eos = np.arange(out.shape[1]) <= np.array([[first_eos(row, config.eos_id)] for row in out])
  assert len(set(out[upto_eos].tolist()) - {config.eos_id}) >= 3, f"too few tokens: {out}"
  assert mass[upto_eos].max() >= 0.1, f"the model does not favour PAD/start: {mass}"


# The quick suite's share of variant x search: latent's beam search (its cache holds latents,
# not the source, and beams reorder it); mha meets every search in
# test_searches_use_the_models_own_special_ids, and the core variants' beam rows are checked
# quick in tests/test_cross_attention.py. The rest of the product is slow.
QUICK_SEARCH = {"latent": "beam"}
assert set(QUICK_SEARCH) <= set(CORE_VARIANTS)


def variant_search_cases():
  return [pytest.param(variant, search, marks=() if QUICK_SEARCH.get(variant) == search
                       else pytest.mark.slow)
          for variant in VARIANTS for search in SEARCHES]


@pytest.mark.parametrize("variant, search", variant_search_cases())
def test_every_search_and_variant_emits_tokens_eos_then_pad(variant, search):
  m, v, forward = case(variant)
  out = SEARCHES[search](m, v, SRC, 10)
  assert out.shape == (6, 10) and out.dtype == jnp.int32
  assert_not_vacuous(forward, v, m.config, out)
  assert_tokens_eos_then_pad(out, m.config)


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("special", [  # bart's ids are another permutation than t5's: slow
    pytest.param(s, marks=pytest.mark.slow) if s == "bart" else s for s in SPECIAL_IDS])
def test_searches_use_the_models_own_special_ids(special, search):
  """Decoding starts from the model's start token, never emits its PAD or start token, and
  fills what follows its EOS with its PAD."""
  m, v, forward = case("mha", special)
  cfg = m.config
  out = SEARCHES[search](m, v, SRC, 10)
  assert_not_vacuous(forward, v, cfg, out)
  assert_tokens_eos_then_pad(out, cfg)
  if search == "greedy":   # the first token is the best allowed one after the start token
    first = forward(v, SRC, jnp.full((6, 1), cfg.bos_id, jnp.int32))[:, 0]    # [B, V]
    np.testing.assert_array_equal(out[:, 0], jnp.argmax(
        first.at[:, never_valid(cfg)].set(-jnp.inf), axis=-1))
  m, v, _ = case("mha", special, eos_damp=-15.0)       # EOS first, whatever else is favoured
  ended = np.asarray(SEARCHES[search](m, v, SRC, 10))
  np.testing.assert_array_equal(ended, [[cfg.eos_id] + [cfg.pad_id] * 9] * 6)


@pytest.mark.parametrize("search", SEARCHES)
def test_eos_id_minus_one_never_finishes_and_never_emits_pad(search):
  """The benchmarks' option: every row has exactly max_len tokens, none of them PAD/start."""
  m, v, _ = case(eos_damp=-3.0)                        # EOS favoured: it would end rows early
  out = np.asarray(SEARCHES[search](m, v, SRC, 10, eos_id=-1))
  assert not np.isin(out, never_valid(m.config)).any(), out
  assert np.any(out[:, :-1] == m.config.eos_id), "no EOS: the test would not show it ignored"


def sequence_logp(forward, v, cfg, src, tokens):
  """Model log P of each row's tokens up to and including its first EOS: [B] float."""
  logp = jax.nn.log_softmax(forward(v, src, tgt_in_of(cfg, tokens)))
  token_logp = jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]   # [B, L]
  after_eos = (jnp.cumsum(tokens == cfg.eos_id, 1) - (tokens == cfg.eos_id)) > 0
  return jnp.sum(jnp.where(after_eos, 0.0, token_logp), axis=1)


def lengths(tokens, eos):
  """Tokens up to and including the first EOS (all if there is none): [B] int."""
  return np.array([min(first_eos(row, eos) + 1, len(row)) for row in np.asarray(tokens)])


@pytest.mark.slow   # 12 s; the quick suite checks beams via test_return_all_beams_sorted_...
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_exhaustive_beam_finds_the_exact_best_sequence(alpha):
  """Beam search with K = (emittable tokens)^L keeps every hypothesis, so it returns the best of
  all sequences that end with EOS within L steps under the GNMT length penalty; no narrower
  beam finishes with a better one. The model favours PAD and its start token, which no
  candidate may contain."""
  vocab, max_len = 7, 3
  m, v = make(vocab=vocab, seed=3, scale=1.0, eos_damp=0.0)
  cfg, forward = m.config, jax.jit(m.apply)
  tokens = [t for t in range(vocab) if t not in never_valid(cfg) and t != cfg.eos_id]
  cands = jnp.array([seq + (cfg.eos_id,) + (cfg.pad_id,) * (max_len - n - 1)
                     for n in range(max_len) for seq in itertools.product(tokens, repeat=n)],
                    jnp.int32)                                            # [N, L]
  score = lambda src, seqs: np.asarray(sequence_logp(forward, v, cfg, src, seqs)) / np.asarray(
      decoding.length_penalty(jnp.asarray(lengths(seqs, cfg.eos_id)), alpha))
  beaten_greedy = False
  for row in range(3):
    src = SRC[row:row + 1]
    scores = score(jnp.repeat(src, len(cands), 0), cands)                 # [N]
    best = cands[int(np.argmax(scores))]
    found, found_scores = decoding.beam_search(m, v, src, (len(tokens) + 1) ** max_len, max_len,
                                               alpha=alpha, return_all=True)
    np.testing.assert_array_equal(found[0, 0], best)
    np.testing.assert_allclose(found_scores[0, 0], scores.max(), rtol=1e-5)
    for k in (1, 2, 4):
      narrow = decoding.beam_search(m, v, src, k, max_len, alpha=alpha)   # [1, L]
      if cfg.eos_id in narrow[0]:                     # finished (else: its live fallback)
        assert score(src, narrow)[0] <= scores.max() + 1e-5
      beaten_greedy |= k == 1 and not np.array_equal(narrow[0], best)
  assert beaten_greedy, "greedy found the best sequence everywhere: a weak test case"


def test_beam_size_one_equals_greedy():
  m, v = make(scale=1.0, eos_damp=-1.0)
  np.testing.assert_array_equal(decoding.beam_search(m, v, SRC, 1, 10, alpha=0.0),
                                decoding.greedy(m, v, SRC, 10))


def test_return_all_beams_sorted_with_matching_scores():
  m, v = make(scale=1.0, eos_damp=-1.0)
  tokens, scores = decoding.beam_search(m, v, SRC, 4, 10, alpha=0.0, return_all=True)
  assert tokens.shape == (6, 4, 10) and scores.shape == (6, 4)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 1e-6)
  eos = m.config.eos_id
  for k in range(4):  # alpha = 0: a finished hypothesis' score is its log-probability
    finished = np.any(np.asarray(tokens[:, k]) == eos, axis=1)
    assert finished.any()
    np.testing.assert_allclose(np.asarray(scores[:, k])[finished],
                               np.asarray(sequence_logp(jax.jit(m.apply), v, m.config, SRC,
                                                        tokens[:, k]))[finished],
                               atol=1e-4)


def test_filter_logits_top_k_and_nucleus():
  log_probs = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda **kw: np.asarray(decoding.filter_logits(log_probs, **kw)[0] > -1e8)
  np.testing.assert_array_equal(kept(top_k=2), [1, 1, 0, 0])
  np.testing.assert_array_equal(kept(top_p=0.7), [1, 1, 0, 0])
  np.testing.assert_array_equal(kept(top_p=0.8), [1, 1, 0, 0])   # 0.5 + 0.3 reaches 0.8
  np.testing.assert_array_equal(kept(top_p=0.81), [1, 1, 1, 0])
  np.testing.assert_array_equal(kept(top_p=0.4), [1, 0, 0, 0])
  np.testing.assert_array_equal(kept(), [1, 1, 1, 1])


def test_sampling_frequencies_follow_the_filtered_distribution():
  log_probs = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  logits = decoding.filter_logits(log_probs, top_p=0.9)                   # keeps 3 tokens
  draws = jax.random.categorical(jax.random.key(0), logits, shape=(20_000, 1))[:, 0]
  freq = np.bincount(np.asarray(draws), minlength=4) / 20_000
  np.testing.assert_allclose(freq, np.array([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=0.015)


def test_sampling_is_reproducible_and_reduces_to_greedy():
  m, v = make()
  greedy = decoding.greedy(m, v, SRC, 10)
  np.testing.assert_array_equal(decoding.sample(m, v, SRC, 10, jax.random.key(0), top_k=1),
                                greedy)
  np.testing.assert_array_equal(
      decoding.sample(m, v, SRC, 10, jax.random.key(0), temperature=1e-4), greedy)
  a = decoding.sample(m, v, SRC, 10, jax.random.key(1), temperature=2.0)
  b = decoding.sample(m, v, SRC, 10, jax.random.key(1), temperature=2.0)
  c = decoding.sample(m, v, SRC, 10, jax.random.key(2), temperature=2.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_go_on_is_one_flag_for_every_member():
  """search_members' loop condition: a member still going keeps every member going (one
  unbatched loop); when none is, all stop; outside a batch the flag is the search's own."""
  go_on = jax.vmap(lambda flag: decoding.go_on(flag, "members"), axis_name="members")
  assert go_on(jnp.array([False, True, False])).tolist() == [True, True, True]
  assert go_on(jnp.array([False, False, False])).tolist() == [False, False, False]
  assert not decoding.go_on(jnp.array(False), None)


@pytest.mark.slow   # compiles 3 models and both searches twice (~15 s)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_search_members_decodes_each_member_as_its_own_search(beam_size):
  """A batch of runs decodes its members together (vmapped over stacked params): each member's
  rows equal its own search's, and the members do differ."""
  models = [make(seed=seed, eos_damp=0.0) for seed in (0, 1, 2)]
  m = models[0][0]
  stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves),
                                   *[v["params"] for _, v in models])
  together = decoding.search_members(m, stacked, SRC, 10, beam_size=beam_size)   # [N, B, L]
  alone = [decoding.search(m, v, SRC, 10, beam_size=beam_size) for _, v in models]
  np.testing.assert_array_equal(together, np.stack(alone))
  assert not np.array_equal(alone[0], alone[1])
