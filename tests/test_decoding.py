"""Search invariants: beam 1 = greedy, exact search on a tiny space, well-formed outputs."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec import decoding, model

EOS = decoding.EOS


def make(vocab=12, eos_scale=0.3, seed=0, **overrides):
  """A random model whose EOS logit is damped, so hypotheses have varied lengths."""
  m = model.build(dict(src_vocab_size=20, tgt_vocab_size=vocab, d_model=32, num_heads=4,
                       d_ff=64, num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
                       tie_output=False, **overrides))
  src = jnp.array([[5, 6, 7, 2, 0], [5, 2, 0, 0, 0], [8, 9, 10, 11, 2]], jnp.int32)
  v = m.init(jax.random.key(seed), src, src)
  w = v["params"]["decoder"]["logits"]["kernel"]
  w = w.value if hasattr(w, "value") else w
  params = jax.tree_util.tree_map(lambda x: x, v["params"])
  params["decoder"]["logits"]["kernel"] = w.at[:, EOS].multiply(eos_scale)
  return m, {"params": params}, src


def sequence_logp(m, v, src, tokens):
  """Model log P of each row's tokens up to and including its first EOS: [B] float."""
  tgt_in = jnp.concatenate([jnp.ones((tokens.shape[0], 1), jnp.int32), tokens[:, :-1]], 1)
  logp = jax.nn.log_softmax(m.apply(v, src, tgt_in))
  token_logp = jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
  after_eos = (jnp.cumsum(tokens == EOS, 1) - (tokens == EOS)) > 0
  return jnp.sum(jnp.where(after_eos | (tokens == 0), 0.0, token_logp), axis=1)


def test_beam_size_one_equals_greedy():
  m, v, src = make()
  np.testing.assert_array_equal(decoding.beam_search(m, v, src, 1, 10, alpha=0.0),
                                decoding.greedy(m, v, src, 10))


def test_exhaustive_beam_finds_the_exact_best_sequence():
  vocab, max_len = 6, 3
  m, v, src = make(vocab=vocab, eos_scale=1.0, seed=3)
  # Every sequence that ends with EOS within max_len.
  candidates = [seq + (EOS,) + (0,) * (max_len - len(seq) - 1)
                for n in range(max_len) for seq in itertools.product(
                    [t for t in range(vocab) if t != EOS], repeat=n)]
  cands = jnp.array(candidates, jnp.int32)                                # [N, L]
  for row in range(src.shape[0]):
    scores = sequence_logp(m, v, jnp.repeat(src[row:row + 1], len(cands), 0), cands)
    best = cands[int(jnp.argmax(scores))]
    found = decoding.beam_search(m, v, src[row:row + 1], vocab ** (max_len - 1), max_len,
                                 alpha=0.0)
    np.testing.assert_array_equal(found[0], best)
    for k in (1, 2, 4):  # narrower beams never beat exact search
      narrow = decoding.beam_search(m, v, src[row:row + 1], k, max_len, alpha=0.0)
      assert sequence_logp(m, v, src[row:row + 1], narrow)[0] <= scores.max() + 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_wider_beam_scores_at_least_as_high(seed):
  m, v, src = make(seed=seed)
  scores = [sequence_logp(m, v, src, decoding.beam_search(m, v, src, k, 10, alpha=0.0))
            for k in (1, 2, 4, 8)]
  for narrow, wide in zip(scores, scores[1:]):
    assert np.all(np.asarray(wide) >= np.asarray(narrow) - 1e-4)


def test_return_all_beams_sorted_with_matching_scores():
  m, v, src = make()
  tokens, scores = decoding.beam_search(m, v, src, 4, 10, alpha=0.0, return_all=True)
  assert tokens.shape == (3, 4, 10) and scores.shape == (3, 4)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 1e-6)
  for k in range(4):  # alpha = 0: a finished hypothesis' score is its log-probability
    finished = np.any(np.asarray(tokens[:, k]) == EOS, axis=1)
    np.testing.assert_allclose(np.asarray(scores[:, k])[finished],
                               np.asarray(sequence_logp(m, v, src, tokens[:, k]))[finished],
                               atol=1e-4)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_outputs_are_well_formed(search):
  m, v, src = make()
  out = (decoding.greedy(m, v, src, 10) if search == "greedy"
         else decoding.beam_search(m, v, src, 3, 10))
  for row in np.asarray(out):
    eos = np.flatnonzero(row == EOS)
    if len(eos):
      assert np.all(row[eos[0] + 1:] == 0) and np.all(row[:eos[0]] != 0)


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
  m, v, src = make()
  greedy = decoding.greedy(m, v, src, 10)
  np.testing.assert_array_equal(decoding.sample(m, v, src, 10, jax.random.key(0), top_k=1), greedy)
  np.testing.assert_array_equal(
      decoding.sample(m, v, src, 10, jax.random.key(0), temperature=1e-4), greedy)
  a = decoding.sample(m, v, src, 10, jax.random.key(1), temperature=2.0)
  b = decoding.sample(m, v, src, 10, jax.random.key(1), temperature=2.0)
  c = decoding.sample(m, v, src, 10, jax.random.key(2), temperature=2.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
