"""Per-device bytes of parameters + optimizer state for a config on several meshes.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/sharding_memory.py \
        --config configs/g2p_cmudict.py:size=base > experiments/results/sharding_memory.md

Builds the sharded train state abstractly (nothing is allocated) and sums, per device, the
bytes of the shards it would hold.
"""
import argparse

import jax
import ml_collections
import numpy as np

from encdec import assembly, config, model, parallel
from encdec.data import tasks
from encdec.train import optim, state as state_lib

MESHES = [(8, 1, 1), (4, 2, 1), (1, 8, 1), (2, 2, 2), (1, 4, 2), (1, 2, 4)]


def bytes_per_device(shardings, shapes) -> int:
  """Largest per-device total over the mesh's devices."""
  per_device = {}
  for sharding, shape in zip(jax.tree_util.tree_leaves(shardings),
                             jax.tree_util.tree_leaves(shapes)):
    for device, index in sharding.devices_indices_map(shape.shape).items():
      size = int(np.prod([len(range(*s.indices(n))) for s, n in zip(index, shape.shape)]))
      per_device[device] = per_device.get(device, 0) + size * shape.dtype.itemsize
  return max(per_device.values())


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/g2p_cmudict.py:size=base")
  args = parser.parse_args()
  cfg = config.load(args.config)
  module = model.build(assembly.model_config(cfg.model, tasks.build(cfg.task)))
  tx = optim.optimizer(cfg.optim, cfg.train.num_steps)
  src, tgt = assembly.example_inputs(cfg)
  shapes = state_lib.abstract_shapes(module, tx, src, tgt)
  total = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
  print(f"`{args.config}`: params + AdamW state = {total / 2**20:.2f} MiB in all\n")
  print("| mesh data×fsdp×tensor | MiB per device | fraction of replicated |")
  print("| --- | --- | --- |")
  for mesh_sizes in MESHES:
    mesh = parallel.make_mesh(ml_collections.ConfigDict(
        dict(zip(("data", "fsdp", "tensor"), mesh_sizes))))
    shardings = state_lib.shardings(module, tx, src, tgt, mesh)
    used = bytes_per_device(shardings, shapes)
    print(f"| {'×'.join(map(str, mesh_sizes))} | {used / 2**20:.2f} | {used / total:.3f} |")


if __name__ == "__main__":
  main()
