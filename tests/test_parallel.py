"""Meshes and shardings on 8 simulated CPU devices: rules respected, same losses everywhere."""
import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from encdec import config, model, parallel
from encdec.train import optim, state as state_lib, step as step_lib

MODEL = dict(src_vocab_size=16, tgt_vocab_size=16, d_model=32, num_heads=4, d_ff=64,
             num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.1)
OPTIM = config.base().optim
OPTIM.update(learning_rate=1e-3, schedule="constant", warmup_steps=2, weight_decay=0.01,
             grad_clip_norm=1.0)


def mesh_cfg(data, fsdp, tensor):
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def batch(seed, rows=8, length=6):
  x = np.random.default_rng(seed).integers(4, 16, (rows, length)).astype(np.int32)
  return {"src": x, "tgt_in": np.concatenate([np.ones((rows, 1), np.int32), x[:, :-1]], 1),
          "tgt_out": x}


def test_mesh_shape_fills_the_rest_and_rejects_bad_sizes():
  assert parallel.mesh_shape(mesh_cfg(-1, 2, 2), 8) == (2, 2, 2)
  assert parallel.mesh_shape(mesh_cfg(1, -1, 1), 8) == (1, 8, 1)
  with pytest.raises(ValueError, match="needs 6 devices, but 8"):
    parallel.mesh_shape(mesh_cfg(3, 2, 1), 8)
  with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
    parallel.mesh_shape(mesh_cfg(-1, -1, 1), 8)


@functools.lru_cache(maxsize=None)   # (losses, state) of a config, computed once
def train_losses(mesh_sizes, steps=3):
  devices = jax.devices()[:int(np.prod(mesh_sizes))]
  mesh = parallel.make_mesh(mesh_cfg(*mesh_sizes), devices)
  m = model.build(MODEL)
  tx = optim.optimizer(OPTIM, 10)
  b0 = batch(0)
  shardings = state_lib.shardings(m, tx, b0["src"][:1], b0["tgt_in"][:1], mesh)
  st = state_lib.create(m, tx, jax.random.key(0), b0["src"][:1], b0["tgt_in"][:1], shardings)
  fn = step_lib.make_train_step(m, tx, optim.schedule(OPTIM, 10), label_smoothing=0.1,
                                state_shardings=shardings,
                                batch_sharding=parallel.batch_sharding(mesh))
  losses = []
  for i in range(steps):
    b = jax.device_put(batch(i), parallel.batch_sharding(mesh))
    st, metrics = fn(st, b, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return losses, st


def test_every_parameter_follows_the_rules():
  m = model.build(MODEL)
  b = batch(0)
  boxed = jax.eval_shape(lambda: m.init(jax.random.key(0), b["src"][:1], b["tgt_in"][:1]))
  mesh = parallel.make_mesh(mesh_cfg(2, 2, 2))
  rules = dict(parallel.RULES)
  _, st = train_losses((2, 2, 2), steps=1)
  names = jax.tree_util.tree_leaves(nn.get_partition_spec(boxed["params"]),
                                    is_leaf=lambda x: isinstance(x, P))
  arrays = jax.tree_util.tree_leaves(st.params)
  assert len(names) == len(arrays) > 20
  for logical, array in zip(names, arrays):
    for name, axis, size in zip(logical, array.sharding.spec + (None,) * 9, array.shape):
      wanted = rules[name]
      divisible = wanted is None or size % mesh.shape[wanted] == 0
      assert axis == (wanted if divisible else None), (logical, array.sharding.spec)


def test_parameters_are_sharded_by_their_logical_axes():
  _, st = train_losses((2, 2, 2), steps=1)
  params = st.params
  qkv = params["encoder"]["layers"]["self_attention"]["qkv"]["kernel"]   # layers embed qkv heads kv
  assert qkv.sharding.spec == P(None, "fsdp", None, "tensor", None)
  wi = params["decoder"]["layers"]["mlp"]["wi"]["kernel"]                 # layers embed mlp
  assert wi.sharding.spec == P(None, "fsdp", "tensor")
  emb = params["tgt_embed"]["embedding"]                                  # vocab embed
  assert emb.sharding.spec == P("tensor", "fsdp")
  # Adam moments follow their parameters.
  mu = st.opt_state[1][0].mu["decoder"]["layers"]["mlp"]["wi"]["kernel"]
  assert mu.sharding.spec == wi.sharding.spec


@pytest.mark.slow
def test_per_device_memory_shrinks_with_fsdp_and_tensor():
  def bytes_per_device(mesh_sizes):
    _, st = train_losses(mesh_sizes, steps=1)
    leaves = jax.tree_util.tree_leaves((st.params, st.opt_state))
    return sum(x.addressable_shards[0].data.nbytes for x in leaves)
  replicated, fsdp2, fsdp2_tp2 = (bytes_per_device(s) for s in [(8, 1, 1), (4, 2, 1), (2, 2, 2)])
  assert fsdp2 < 0.65 * replicated
  assert fsdp2_tp2 < 0.65 * fsdp2


@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_losses_match_across_meshes():
  reference, _ = train_losses((1, 1, 1))
  for sizes in [(8, 1, 1), (2, 2, 2), (1, 4, 2)]:
    losses, _ = train_losses(sizes)
    np.testing.assert_allclose(losses, reference, rtol=2e-4)
