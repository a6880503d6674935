"""What a run's model holds, from its config alone: parameters (all, and cross-attention's) and
the decode-time K/V cache per source token. Nothing is computed or trained."""
from __future__ import annotations

import functools
import json


@functools.lru_cache(maxsize=None)
def _abstract_params(model_json: str, task_json: str):
  """The abstract parameters (shapes only) of a run's model."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from encdec import assembly, model  # pylint: disable=import-outside-toplevel
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel
  model_cfg = ml_collections.ConfigDict(json.loads(model_json))
  module = model.build(assembly.model_config(model_cfg, tasks.build(json.loads(task_json))))
  tokens = jnp.zeros((1, 8), jnp.int32)
  return jax.eval_shape(
      lambda: nn.unbox(module.init(jax.random.key(0), tokens, tokens)["params"]))


def param_counts(cfg) -> tuple[int, int]:
  """(all parameters, those under a module whose name contains "cross_attention"), counted on
  the model the config builds (vocabulary sizes from its task)."""
  import jax  # pylint: disable=import-outside-toplevel
  params = _abstract_params(json.dumps(cfg.model.to_dict(), sort_keys=True),
                            json.dumps(cfg.task.to_dict(), sort_keys=True))
  total = cross = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    total += leaf.size
    if any("cross_attention" in str(getattr(k, "key", k)) for k in path):
      cross += leaf.size
  return total, cross


def cache_bytes_per_source_token(cfg) -> float:
  """Decode-time cache bytes that grow with the source, per source token, all layers: the
  variant's own account (`cache_bytes` of its class, which tests check against the cache
  decoding allocates for every registered variant)."""
  from encdec import model  # pylint: disable=import-outside-toplevel
  schema = model.TransformerConfig(**cfg.model.to_dict())
  variant = schema.variant
  return float(variant.cache_bytes(schema, 2) - variant.cache_bytes(schema, 1))
