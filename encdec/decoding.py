"""Autoregressive decoding with caches: greedy, beam search and sampling.

The encoder runs once per source. The first decoder call in decode mode builds the cache:
empty self-attention K/V for `max_len` steps and the cross-attention K/V of each layer,
projected once from the encoder output. Every step then feeds one token per row; step t is
fed at position t and its keys go to cache slot t (the relative position schemes read a key's
position from its slot: encdec/model/positions.py).

Every search returns int32 rows [B, max_len] of the form: tokens, EOS, then PAD. The special
ids are the model's (`module.config`: pad_id, bos_id = the token decoding starts from, eos_id;
they come from the task's tokenizer). PAD and the start token are never valid outputs, so
their log-probabilities are -inf at every step of every search (fairseq does so for PAD):
no search emits them, whatever the model prefers. EOS is never masked, not even where it is
also the start token.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import transformer


def init_cache(module: nn.Module, variables: Any, src: jax.Array, max_len: int,
               encoded: jax.Array | None = None, beams: int = 1) -> Any:
  """The decoding cache for `src` [B, S] and `beams` target rows per source (B*beams rows):
  self-attention K/V for max_len steps per row, cross-attention K/V once per source."""
  if encoded is None:
    encoded = module.apply(variables, src, method=module.encode)           # [B, S, d]
  dummy = jnp.zeros((src.shape[0] * beams, 1), jnp.int32)
  _, state = module.apply(variables, encoded, src, dummy, decode=True, cache_length=max_len,
                          method=module.decode, mutable=["cache"])
  return state["cache"]


def decode_step(module: nn.Module, variables: Any, cache: Any, src: jax.Array,
                tokens: jax.Array, position: jax.Array):
  """One step: tokens [B*G] at `position` --> (log-probs float32 [B*G, V], new cache)."""
  positions = jnp.full((tokens.shape[0], 1), position, jnp.int32)
  logits, state = module.apply({**variables, "cache": cache}, None, src, tokens[:, None],
                               tgt_positions=positions, decode=True, method=module.decode,
                               mutable=["cache"])
  return jax.nn.log_softmax(logits[:, 0]), state["cache"]                  # [B*G, V]


def never_emitted(config: Any, eos_id: int) -> tuple[int, ...]:
  """The ids no search emits: PAD and the decoder start token (one id where they coincide, as
  in T5), except an end token (`eos_id` or the model's), which stays emittable."""
  return tuple(sorted({config.pad_id, config.bos_id} - {config.eos_id, eos_id}))


def next_log_probs(module: nn.Module, variables: Any, cache: Any, src: jax.Array,
                   tokens: jax.Array, position: jax.Array, eos_id: int):
  """`decode_step` with the ids that are never emitted at -inf: (log-probs [B*G, V], cache).

  The other log-probabilities are the model's own (not renormalised), so a search's scores
  stay model log-probabilities."""
  log_probs, cache = decode_step(module, variables, cache, src, tokens, position)
  vocab = jnp.arange(log_probs.shape[-1])
  banned = jnp.isin(vocab, jnp.array(never_emitted(module.config, eos_id)))   # [V], a constant
  return jnp.where(banned, -jnp.inf, log_probs), cache                     # [B*G, V]


def end_id(module: nn.Module, eos_id: int | None) -> int:
  """The id that ends a hypothesis: `eos_id`, or the model's EOS when it is None."""
  return module.config.eos_id if eos_id is None else eos_id


def for_decoding(module: nn.Module, variables: Any) -> tuple[nn.Module, Any]:
  """(module, {"params": ...}) with the layers unrolled: each layer's cache is updated in place
  instead of being sliced out of and restacked into a scanned cache every step."""
  module, params = transformer.unrolled(module, variables["params"])
  return module, {"params": params}


def finalize(tokens: jax.Array, eos_id: int, pad_id: int) -> jax.Array:
  """Everything after the first `eos_id` becomes `pad_id`: [B, L] --> [B, L]."""
  is_eos = tokens == eos_id
  seen_eos = jnp.cumsum(is_eos, axis=1) - is_eos
  return jnp.where(seen_eos > 0, pad_id, tokens)


def go_on(flag: jax.Array, members_axis: str | None) -> jax.Array:
  """A search's "keep going" flag (a bool scalar), or'ed over the members of search_members
  (`members_axis`: its vmap axis). The same flag for every member keeps the search's loop
  unbatched under vmap: a batched loop condition would make XLA select between the old and
  the new carry, the whole cache, at every step."""
  if members_axis is None:
    return flag
  return jax.lax.pmax(flag.astype(jnp.int32), members_axis) > 0


@functools.partial(jax.jit, static_argnames=("module", "max_len", "eos_id", "members_axis"))
def greedy(module: nn.Module, variables: Any, src: jax.Array, max_len: int,
           eos_id: int | None = None, members_axis: str | None = None) -> jax.Array:
  """Greedy decoding: src int32 [B, S] --> int32 [B, max_len] (tokens, EOS, then PAD).

  Stops as soon as every row has produced `eos_id` (default: the model's EOS; -1: never, so
  every row has exactly max_len tokens, e.g. for benchmarks); with `members_axis` (see
  search_members), every row of every member. Rows that are done only add PAD.
  """
  cfg, eos = module.config, end_id(module, eos_id)
  module, variables = for_decoding(module, variables)
  batch = src.shape[0]
  cache = init_cache(module, variables, src, max_len)
  out = jnp.full((batch, max_len), cfg.pad_id, jnp.int32)
  done = jnp.zeros((batch,), bool)

  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_len) & go_on(~jnp.all(done), members_axis)

  def body(carry):
    step, prev, out, done, cache = carry
    log_probs, cache = next_log_probs(module, variables, cache, src, prev, step, eos)
    token = jnp.where(done, cfg.pad_id, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))  # [B]
    out = out.at[:, step].set(token)
    return step + 1, token, out, done | (token == eos), cache

  start = (jnp.array(0), jnp.full((batch,), cfg.bos_id, jnp.int32), out, done, cache)
  _, _, out, _, _ = jax.lax.while_loop(cond, body, start)
  return finalize(out, eos, cfg.pad_id)


# ------------------------------------------------------------------------------ beam search
NEG_INF = -1.0e9


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al., 2016)."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def _gather_beams(x: jax.Array, beam_indices: jax.Array) -> jax.Array:
  """x [B, K_old, ...], beam_indices [B, K_new] --> [B, K_new, ...]."""
  return jnp.take_along_axis(x, beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2)),
                             axis=1)


def reorder_cache(cache: Any, beam_indices: jax.Array, beams: int) -> Any:
  """Select the self-attention cache rows of the surviving beams.

  Self-attention K/V leaves are [..., B*K, H, length, D] (a leading layer axis when scanned);
  the cross-attention K/V (kept at source batch B) and step indices are left untouched.
  beam_indices [B, K] index beams within their source.
  """
  batch = beam_indices.shape[0]
  rows = (jnp.arange(batch)[:, None] * beams + beam_indices).reshape(-1)     # [B*K] flat rows

  def reorder(path, x):
    name = path[-1].key if isinstance(path[-1], jax.tree_util.DictKey) else None
    if name not in ("key", "value"):
      return x
    return jnp.take(x, rows, axis=x.ndim - 4, mode="clip")                 # a row gather
  return jax.tree_util.tree_map_with_path(reorder, cache)


@functools.partial(jax.jit, static_argnames=("module", "beam_size", "max_len", "return_all",
                                             "eos_id", "members_axis"))
def beam_search(module: nn.Module, variables: Any, src: jax.Array, beam_size: int, max_len: int,
                alpha: float = 0.6, return_all: bool = False, eos_id: int | None = None,
                members_axis: str | None = None):
  """Batched beam search with the GNMT length penalty: src [B, S] --> int32 [B, max_len].

  The best hypothesis per source (tokens, EOS, then PAD). With `return_all`, returns
  (tokens [B, K, max_len], scores [B, K]) sorted best first; scores are log P / penalty.
  Cross-attention K/V are computed once per source at batch size B and shared by its beams.
  The search stops once no live beam can beat the finished hypotheses being returned
  (the best one, or all K with `return_all`); a live beam's score can at most reach
  log P / penalty(max_len), since log P only falls as tokens are added. `eos_id` ends a
  hypothesis (default: the model's EOS); -1 never does (benchmarks decode exactly max_len steps).
  `members_axis`: see greedy (steps past a source's own stop cannot change what it returns).
  """
  cfg, eos = module.config, end_id(module, eos_id)
  module, variables = for_decoding(module, variables)
  batch, k = src.shape[0], beam_size
  carry = dict(
      step=jnp.array(0),
      cache=init_cache(module, variables, src, max_len, beams=k),
      live_tokens=jnp.full((batch, k, max_len), cfg.pad_id, jnp.int32),
      # Only beam 0 is live at the start, so the first step does not pick K copies.
      live_logp=jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1)), (batch, 1)),   # [B, K]
      done_tokens=jnp.full((batch, k, max_len), cfg.pad_id, jnp.int32),
      done_scores=jnp.full((batch, k), NEG_INF),                                  # [B, K]
  )

  def can_improve(c):
    bound = c["live_logp"][:, 0] / length_penalty(jnp.array(max_len), alpha)   # [B]
    target = c["done_scores"][:, -1] if return_all else c["done_scores"][:, 0]
    return jnp.any(bound > target)

  def cond(c):
    return (c["step"] < max_len) & go_on(can_improve(c), members_axis)

  def body(c):
    step = c["step"]
    prev = jnp.where(step == 0, cfg.bos_id, c["live_tokens"][:, :, jnp.maximum(step - 1, 0)])
    log_probs, cache = next_log_probs(module, variables, c["cache"], src, prev.reshape(-1), step,
                                      eos)                                 # [B*K, V]
    vocab = log_probs.shape[-1]
    scores = c["live_logp"][:, :, None] + log_probs.reshape(batch, k, vocab)   # [B, K, V]
    top_logp, top_ids = jax.lax.top_k(scores.reshape(batch, k * vocab), 2 * k)  # [B, 2K]
    top_beam, top_token = top_ids // vocab, (top_ids % vocab).astype(jnp.int32)
    top_tokens = _gather_beams(c["live_tokens"], top_beam)                    # [B, 2K, L]
    top_tokens = top_tokens.at[:, :, step].set(top_token)
    is_eos = top_token == eos
    # Finished: EOS among the K best candidates (as fairseq; so beam 1 is greedy), merged
    # into the K best finished hypotheses.
    finishes = is_eos & (jnp.arange(2 * k) < k)
    new_done = jnp.where(finishes, top_logp / length_penalty(step + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([c["done_scores"], new_done], axis=1)        # [B, 3K]
    all_tokens = jnp.concatenate([c["done_tokens"], top_tokens], axis=1)      # [B, 3K, L]
    done_scores, done_idx = jax.lax.top_k(all_scores, k)
    # Live: the K best that did not end.
    live_logp, live_idx = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), k)
    beam_indices = _gather_beams(top_beam[..., None], live_idx)[..., 0]        # [B, K]
    return dict(step=step + 1, cache=reorder_cache(cache, beam_indices, k),
                live_tokens=_gather_beams(top_tokens, live_idx), live_logp=live_logp,
                done_tokens=_gather_beams(all_tokens, done_idx), done_scores=done_scores)

  c = jax.lax.while_loop(cond, body, carry)
  # Sources where no hypothesis finished within max_len fall back to their live beams.
  live_scores = c["live_logp"] / length_penalty(jnp.array(max_len), alpha)
  use_live = c["done_scores"][:, :1] <= NEG_INF / 2                           # [B, 1]
  tokens = jnp.where(use_live[..., None], c["live_tokens"], c["done_tokens"])
  scores = jnp.where(use_live, live_scores, c["done_scores"])
  tokens = finalize(tokens.reshape(batch * k, max_len), eos, cfg.pad_id)
  tokens = tokens.reshape(batch, k, max_len)                                # [B, K, L]
  return (tokens, scores) if return_all else tokens[:, 0]


def search(module: nn.Module, variables: Any, src: jax.Array, max_len: int, *,
           beam_size: int = 1, alpha: float = 0.6, eos_id: int | None = None,
           members_axis: str | None = None) -> jax.Array:
  """Greedy (beam_size 1) or beam search: src [B, S] --> int32 [B, max_len] (`eos_id` and
  `members_axis` as in `greedy`)."""
  if beam_size == 1:
    return greedy(module, variables, src, max_len, eos_id=eos_id, members_axis=members_axis)
  return beam_search(module, variables, src, beam_size, max_len, alpha=alpha, eos_id=eos_id,
                     members_axis=members_axis)


@functools.partial(jax.jit, static_argnames=("module", "max_len", "beam_size", "alpha",
                                             "eos_id"))
def search_members(module: nn.Module, stacked_params: Any, src: jax.Array, max_len: int, *,
                   beam_size: int = 1, alpha: float = 0.6, eos_id: int | None = None
                   ) -> jax.Array:
  """`search` for N models of one architecture (a batch of runs, encdec/train/batched.py) whose
  params are stacked on a leading axis, in one vmapped program: src [B, S] --> [N, B, max_len].
  Each member's rows are its own `search`'s (the same computation, batched)."""
  return jax.vmap(lambda params: search(module, {"params": params}, src, max_len,
                                        beam_size=beam_size, alpha=alpha, eos_id=eos_id,
                                        members_axis="members"),
                  axis_name="members")(stacked_params)


# ---------------------------------------------------------------------------------- sampling
def filter_logits(log_probs: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Temperature, then keep the top_k tokens (0: all) and the smallest set whose probability
  reaches top_p (nucleus sampling, Holtzman et al. 2020). [B, V] --> [B, V] logits."""
  logits = log_probs / max(temperature, 1e-6)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]                           # [B, 1]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]                      # [B, V] descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    kept = jnp.sum(jnp.cumsum(probs, axis=-1) - probs < top_p, axis=-1)     # [B] tokens kept
    cutoff = jnp.take_along_axis(sorted_logits, kept[:, None] - 1, axis=-1)  # [B, 1]
    logits = jnp.where(logits < cutoff, NEG_INF, logits)
  return logits


@functools.partial(jax.jit, static_argnames=("module", "max_len", "temperature", "top_k", "top_p",
                                             "eos_id"))
def sample(module: nn.Module, variables: Any, src: jax.Array, max_len: int, rng: jax.Array, *,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           eos_id: int | None = None) -> jax.Array:
  """Ancestral sampling with temperature / top-k / top-p: src [B, S] --> int32 [B, max_len]
  (tokens, EOS, then PAD; `eos_id` as in `greedy`).

  Deterministic given `rng` (step t draws with fold_in(rng, t)).
  """
  cfg, eos = module.config, end_id(module, eos_id)
  module, variables = for_decoding(module, variables)
  batch = src.shape[0]
  cache = init_cache(module, variables, src, max_len)

  def body(carry, step):
    prev, done, cache = carry
    log_probs, cache = next_log_probs(module, variables, cache, src, prev, step, eos)
    logits = filter_logits(log_probs, temperature=temperature, top_k=top_k, top_p=top_p)
    token = jax.random.categorical(jax.random.fold_in(rng, step), logits).astype(jnp.int32)
    token = jnp.where(done, cfg.pad_id, token)                              # [B]
    return (token, done | (token == eos), cache), token

  start = (jnp.full((batch,), cfg.bos_id, jnp.int32), jnp.zeros((batch,), bool), cache)
  _, tokens = jax.lax.scan(body, start, jnp.arange(max_len))               # [L, B]
  return finalize(tokens.T, eos, cfg.pad_id)
