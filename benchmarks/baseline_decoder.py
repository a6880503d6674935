"""The decoding baseline: a straightforward Flax decoder, as in the Flax WMT example.

It caches only the decoder self-attention keys/values. The encoder output is expanded per beam
once with `jnp.repeat` ([B, S, d] --> [B*K, S, d], like the WMT example's
`flat_batch_beam_expand`) and kept in the cache, and at every step each layer re-projects the
cross-attention keys/values from it (K, V = H_enc W_K, H_enc W_V per step, per beam).
encdec instead projects them once per source and shares them across beams.

The baseline is one more cross-attention variant (not registered: a config subclass names
it), so `baseline_for(module)` reads the parameters of an encdec "mha" model unchanged and plugs
into `encdec.decoding.greedy` / `beam_search`: the search code and every other layer are identical,
and a comparison measures only the cross-attention caching.

Decoding runs the layers unrolled, and then XLA may hoist the projection of the (loop-invariant)
encoder output out of the decoding loop, which would turn the baseline into a cached decoder.
The baseline therefore ties the encoder output to each step's queries with an optimization
barrier, so it re-projects at every step as defined. `baseline_for(module, hoistable=True)`
leaves XLA free to hoist: benchmarks/run.py reports that one too, for reference.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from encdec.model import cross_attention, transformer

class RecomputedCrossAttention(cross_attention.MultiHeadCrossAttention):
  """Multi-head cross-attention that projects K/V from the per-beam encoder output at every
  call, decode included. Same parameters (query, kv, out) as MultiHeadCrossAttention."""

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array | None, mask: jax.Array, *,
               deterministic: bool, decode: bool = False) -> jax.Array:
    beams = x.shape[0] // mask.shape[0]
    expand = lambda: jnp.repeat(memory, beams, axis=0)                      # [B*K, S, d]
    encoded = self.variable("cache", "encoded", expand).value if decode else expand()
    if not self.config.hoistable:   # tied to this step's queries: XLA cannot hoist it
      encoded, x = jax.lax.optimization_barrier((encoded, x))
    mask = jnp.repeat(mask, beams, axis=0)                                  # [B*K, 1, 1, S]
    kv = self.project_kv(encoded, mask)                     # every step: [B*K, S, 2, H, D]
    return self.attend(x, kv, mask, None, deterministic)


@dataclasses.dataclass(frozen=True)
class BaselineConfig(transformer.TransformerConfig):
  """An "mha" model config whose cross-attention is the recomputing one. hoistable: without
  the barrier, so XLA may compute the projection once, before the decoding loop."""
  hoistable: bool = False

  @property
  def variant(self) -> type[nn.Module]:
    return RecomputedCrossAttention


def baseline_for(module: transformer.EncoderDecoder,
                 hoistable: bool = False) -> transformer.EncoderDecoder:
  """The baseline model that reads `module`'s parameters (standard multi-head cross-attention)."""
  if module.config.variant is not cross_attention.MultiHeadCrossAttention:
    raise ValueError(f"the decode baseline is standard multi-head cross-attention; got "
                     f"model.cross_attention={module.config.cross_attention!r} (use 'mha')")
  return transformer.EncoderDecoder(
      BaselineConfig(**dataclasses.asdict(module.config), hoistable=hoistable))
