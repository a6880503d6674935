"""Device mesh, logical-axis rules, and the shardings of the train state and batches.

Parameters carry logical axis names (see model/layers.py). `RULES` maps them to the mesh axes
`data`, `fsdp` and `tensor`: the batch is split over data x fsdp, parameters and optimizer
state over fsdp (ZeRO-3 style, on the embedding dimension) and tensor (heads, MLP, vocab).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from encdec.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("layers", None),
)

# The end of a multi-process run: every process waits at one barrier after its own last piece
# of work (process 0 alone writes the evaluation outputs, the logs, the checkpoints' final
# renames), however long that takes on a busy host; a process that dies fails the barrier
# through the coordination service's heartbeats (100 s), not through this deadline.
END_BARRIER_TIMEOUT_S = 24 * 3600
# Then JAX's own shutdown barrier, reached by every process within milliseconds of the first.
SHUTDOWN_TIMEOUT_S = 300


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, *, auto: bool = False) -> None:
  """Join a multi-process run (before any JAX computation). No-op for a single process.

  Explicit: all three of coordinator_address / num_processes / process_id. `auto`: let
  jax.distributed.initialize() read the cluster environment (SLURM, Cloud TPU VMs, ...).
  CPU processes talk through gloo collectives.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(x is None for x in explicit):
    return
  if not auto and any(x is None for x in explicit):
    raise ConfigError("multi-process runs need all of --coordinator_address, --num_processes "
                      "and --process_id (or --distributed auto)")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Preemption is handled by encdec (train/preemption.py: signals + an allgather at each step);
  # JAX's own preemption service adds a listener thread that must be torn down at shutdown.
  jax.config.update("jax_enable_preemption_service", False)
  if auto:
    jax.distributed.initialize(shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
  _first_collective_in_lockstep()


def _first_collective_in_lockstep(timeout_s: int = 600) -> None:
  """Meet at a coordination-service barrier (long timeout), then run the first collective.

  CPU (gloo) collectives set up their connections on first use with a fixed 30 s deadline;
  processes that reach that point far apart (a busy host) would fail there.
  """
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  distributed.global_state.client.wait_at_barrier("encdec_start", timeout_s * 1000)
  multihost_utils.sync_global_devices("encdec_collectives_ready")


def shutdown_distributed() -> None:
  """Leave a multi-process run together, explicitly (no-op for a single process).

  Call it once every process has finished all of its own work. Each waits at the "encdec_end"
  barrier (END_BARRIER_TIMEOUT_S) until the slowest has finished its own, then all disconnect
  at once, well inside JAX's shutdown barrier (SHUTDOWN_TIMEOUT_S) that aborts a process whose
  peers do not reach it in time. Left to the interpreter's exit hook, the shutdown barrier
  raced with background threads (checkpoint, data, TensorBoard) and a process could miss it.
  """
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  if distributed.global_state.client is None:
    return
  distributed.global_state.client.wait_at_barrier("encdec_end", END_BARRIER_TIMEOUT_S * 1000)
  jax.distributed.shutdown()


def is_secondary_process() -> bool:
  return jax.process_index() > 0


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes from the config; one -1 takes the remaining devices."""
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
  if sizes.count(-1) > 1:
    raise ConfigError(f"at most one mesh axis may be -1, got data={sizes[0]}, fsdp={sizes[1]}, "
                      f"tensor={sizes[2]}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f"{num_devices} devices cannot be split into a mesh with fixed axes "
                        f"of total size {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ConfigError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                      f"{int(np.prod(sizes))} devices, but {num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh. A fully fixed mesh smaller than a single process's
  devices uses the first ones (e.g. data=fsdp=tensor=1: one device)."""
  devices = list(jax.devices() if devices is None else devices)
  fixed = -1 not in (mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor)
  wanted = mesh_cfg.data * mesh_cfg.fsdp * mesh_cfg.tensor
  if fixed and wanted < len(devices) and jax.process_count() == 1:
    devices = devices[:wanted]
  shape = mesh_shape(mesh_cfg, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch-major arrays [B, ...]: rows split over data x fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules=RULES) -> Any:
  """Shardings for a tree whose leaves carry logical names (nn.LogicallyPartitioned).

  A dimension that the mesh axis does not divide (say a 30-token vocabulary over tensor=4)
  stays whole rather than failing.
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_tree), rules)
  shapes = nn.unbox(boxed_tree)
  fitted = jax.tree_util.tree_map(lambda spec, x: _fit_spec(spec, x.shape, mesh), specs, shapes,
                                  is_leaf=lambda x: isinstance(x, P))
  return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), fitted,
                                is_leaf=lambda x: isinstance(x, P))


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  def fits(axes, size):
    axes = axes if isinstance(axes, tuple) else (axes,)
    return size % int(np.prod([mesh.shape[a] for a in axes if a is not None])) == 0
  return P(*[axes if axes is None or fits(axes, size) else None
             for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape)])


def allgather_json(value: Any) -> list[Any]:
  """Every process's JSON-serializable `value`, in process order (one value per process).

  Used for per-process state that must be saved from the primary host, such as each
  process's position in its shard of the data.
  """
  if jax.process_count() == 1:
    return [value]
  import json  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32))   # [P, 1]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  gathered = multihost_utils.process_allgather(padded)                          # [P, max_len]
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths[:, 0])]
