"""The train state: a pytree of everything that changes during training, and its shardings."""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from encdec import parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: number of updates applied
  params: Any              # float32 parameter pytree
  opt_state: Any           # optax state
  skipped: jax.Array       # int32 scalar: updates skipped for non-finite gradients


def _create_boxed(module: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                  src: jax.Array, tgt_in: jax.Array) -> TrainState:
  """The state with logical-axis metadata still on params and optimizer moments."""
  params = module.init(rng, src, tgt_in)["params"]
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    skipped=jnp.array(0, jnp.int32))


def shardings(module, tx, src, tgt_in, mesh: jax.sharding.Mesh) -> TrainState:
  """A TrainState of NamedShardings: each leaf placed by its logical axes (parallel.RULES)."""
  boxed = jax.eval_shape(lambda: _create_boxed(module, tx, jax.random.key(0), src, tgt_in))
  return parallel.logical_shardings(_without_masked_boxes(boxed), mesh)


def _without_masked_boxes(tree: Any) -> Any:
  """Frozen parameters (optim.trainable) have no optimizer state: optax leaves a MaskedNode
  (no arrays) inside their logical-axis box, which has nothing to shard; the box is dropped."""
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree_util.tree_map(
      lambda x: x.value if is_box(x) and isinstance(x.value, optax.MaskedNode) else x, tree,
      is_leaf=is_box)


def create(module: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
           src: jax.Array, tgt_in: jax.Array, state_shardings: TrainState | None = None,
           ) -> TrainState:
  """Initialise parameters and optimizer state, directly into their shardings if given."""
  init = lambda r: nn.unbox(_create_boxed(module, tx, r, src, tgt_in))
  return jax.jit(init, out_shardings=state_shardings)(rng)


def abstract_shapes(module, tx, src, tgt_in) -> TrainState:
  """ShapeDtypeStructs of the (unboxed) state, without computing it."""
  return jax.eval_shape(lambda: nn.unbox(_create_boxed(module, tx, jax.random.key(0), src,
                                                       tgt_in)))


def abstract(module, tx, src, tgt_in, state_shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs (with shardings) of the state: the target of a checkpoint restore."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_shapes(module, tx, src, tgt_in), state_shardings)
