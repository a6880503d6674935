"""Peer: the Flax WMT example's beam search (google/flax `examples/wmt`), run unmodified.

    python -m benchmarks.run --flax_wmt /path/to/flax/examples/wmt ...

Nothing of the example is in this repository. Its `models.py` and `decode.py` are imported at
benchmark time from a checkout's `examples/wmt` directory (each under a private module name, so
nothing on sys.path changes), and driven as its `train.py`'s `predict_step` drives them: encode
once, expand the encoder output and the inputs per beam (`decode.flat_batch_beam_expand`), then
`decode.beam_search` with a `tokens_ids_to_logits` closure over `models.Transformer.decode`,
whose cross-attention re-projects the encoder output's keys and values at every step.

The model is built at the bench config's shapes (shared, tied embeddings; pre-LN), randomly
initialised: speed does not depend on the weights, because both searches run all `steps` steps
(no end-of-sequence id can occur: eos_id = -1).
"""
from __future__ import annotations

import importlib.util
import pathlib
import types

import jax
import jax.numpy as jnp

REQUIRED = ("models.py", "decode.py")


def load(directory: str | pathlib.Path) -> tuple[types.ModuleType, types.ModuleType]:
  """(models, decode) modules from a checkout's examples/wmt directory."""
  directory = pathlib.Path(directory)
  missing = [name for name in REQUIRED if not (directory / name).is_file()]
  if missing:
    raise FileNotFoundError(f"{directory} has no {', '.join(missing)}: pass the examples/wmt "
                            "directory of a google/flax checkout")
  modules = []
  for name in REQUIRED:
    spec = importlib.util.spec_from_file_location(f"_flax_wmt_{name[:-3]}", directory / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    modules.append(module)
  return modules[0], modules[1]


def beam_search(models, decode, *, vocab: int, d_model: int, num_heads: int, num_layers: int,
                d_ff: int, src: jax.Array, steps: int, beam_size: int = 4, seed: int = 0):
  """A jitted `search(src) -> [batch, beam, steps + 1] tokens` of the example's beam search on
  `src` [batch, length], with its model at the given shapes (random parameters)."""
  config = models.TransformerConfig(
      vocab_size=vocab, output_vocab_size=vocab, share_embeddings=True,
      logits_via_embedding=True, emb_dim=d_model, num_heads=num_heads, num_layers=num_layers,
      qkv_dim=d_model, mlp_dim=d_ff, max_len=max(src.shape[1], steps + 1), deterministic=True)
  predict_config = config.replace(decode=True)
  target_shape = (src.shape[0], steps + 1)
  params = models.Transformer(config).init(jax.random.key(seed), src,
                                           jnp.ones(target_shape, jnp.int32))["params"]
  cache = models.Transformer(predict_config).init(
      jax.random.key(0), jnp.ones(src.shape, jnp.float32),
      jnp.ones(target_shape, jnp.float32))["cache"]

  def search(inputs):
    model = models.Transformer(predict_config)
    encoded = decode.flat_batch_beam_expand(
        model.apply({"params": params}, inputs, method=model.encode), beam_size)
    raw_inputs = decode.flat_batch_beam_expand(inputs, beam_size)

    def tokens_ids_to_logits(flat_ids, flat_cache):
      logits, new_vars = model.apply({"params": params, "cache": flat_cache}, encoded,
                                     raw_inputs, flat_ids, mutable=["cache"],
                                     method=model.decode)
      return logits.squeeze(axis=1), new_vars["cache"]             # [batch * beam, vocab]

    sequences, _ = decode.beam_search(inputs, cache, tokens_ids_to_logits, beam_size=beam_size,
                                      alpha=0.6, eos_id=-1, max_decode_len=steps + 1)
    return sequences

  return jax.jit(search)
