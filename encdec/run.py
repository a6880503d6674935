"""A run directory as an object: its config, task, model and trained parameters.

Used by `encdec eval` / `encdec decode` to rebuild what `encdec train` trained: only the
parameters are read from a checkpoint (not the optimizer state), straight into their shardings
on a mesh given by --config.mesh.* overrides (by default one device).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import ml_collections

from encdec import assembly, config as config_lib, parallel
from encdec.errors import CheckpointError, ConfigError
from encdec.data import tasks
from encdec.train import checkpoint


@dataclasses.dataclass
class TrainedRun:
  cfg: ml_collections.ConfigDict
  task: Any
  module: Any
  params: Any
  step: int
  averaged_steps: tuple[int, ...] = ()   # with load(average=N): the N steps averaged


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, checked against the current config schema."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise ConfigError(f"{path} does not exist; is {workdir} a run directory of `encdec train`?")
  cfg = config_lib.base()
  saved = config_lib.read_saved(path)
  for section, values in saved.items():
    if section in ("task",):   # task fields depend on the task: take them whole
      cfg[section] = values
      continue
    config_lib.apply_overrides(cfg, {f"{section}.{k}": v for k, v in values.items()})
  return cfg


def load(workdir: str | pathlib.Path, step: int | None = None,
         mesh_overrides: Mapping[str, Any] | None = None, average: int = 1) -> TrainedRun:
  """The run's config, task, model and the parameters of checkpoint `step` (default: the
  newest readable one), placed on the mesh `mesh_overrides` describes (see `mesh_config`).

  Only the parameters are read, not the optimizer state, each directly into its sharding.
  `average` N > 1: the mean of the parameters of the N newest checkpoints up to `step`
  (checkpoint averaging, as in Vaswani et al. 2017 and fairseq); `step` is then the newest.
  """
  if average < 1:
    raise ConfigError(f"--average must be >= 1, got {average}")
  cfg = load_config(workdir)
  mesh = make_mesh(mesh_config(mesh_overrides))
  task = tasks.build(cfg.task)
  module = assembly.build_model(cfg, task)
  ckpt = checkpoint.Checkpointer(workdir, every_steps=1, keep=cfg.checkpoint.keep,
                                 async_save=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {ckpt.directory}; train first with "
                            f"`encdec train --workdir {workdir}`")
    if step is not None and step not in steps:
      raise CheckpointError(f"no checkpoint of step {step} in {ckpt.directory}; saved steps: "
                            f"{', '.join(map(str, steps))}")
    abstract = abstract_params(cfg, module, mesh)
    if average == 1:
      params, step = ckpt.restore_params(abstract, step)
      return TrainedRun(cfg, task, module, params, step)
    averaged = averaged_steps(steps, step, average, ckpt.directory)
    params = average_params(ckpt.restore_params(abstract, s)[0] for s in averaged)
    return TrainedRun(cfg, task, module, params, averaged[-1], tuple(averaged))
  finally:
    ckpt.close()


def averaged_steps(steps: list[int], step: int | None, average: int,
                   directory: pathlib.Path) -> list[int]:
  """The `average` newest of the saved `steps` up to `step` (oldest first)."""
  upto = [s for s in steps if step is None or s <= step]
  if len(upto) < average:
    raise CheckpointError(
        f"cannot average {average} checkpoints: {directory} has {len(upto)} up to step "
        f"{upto[-1] if upto else step} ({', '.join(map(str, upto))}); train with a larger "
        "checkpoint.keep (and a smaller checkpoint.every_steps) to keep more")
  return upto[-average:]


def average_params(trees: Iterable[Any]) -> Any:
  """The elementwise mean of parameter trees, read one at a time (two in memory at once);
  float32 sums in the given order, each leaf keeping its sharding."""
  total, count = None, 0
  for tree in trees:
    total, count = (tree if total is None else _add_trees(total, tree)), count + 1
  return jax.jit(lambda t: jax.tree_util.tree_map(lambda x: x / count, t))(total)


@jax.jit
def _add_trees(a: Any, b: Any) -> Any:
  return jax.tree_util.tree_map(lambda x, y: x + y, a, b)


def mesh_config(overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The mesh section to load a run onto: data = fsdp = tensor = 1 (one device), with
  `overrides` ({"mesh.fsdp": 4, ...}, from --config.mesh.*) applied. Any key outside mesh.* is
  a one-line ConfigError: the model and task are the run's own."""
  overrides = dict(overrides or {})
  others = sorted(k for k in overrides if not k.startswith("mesh."))
  if others:
    raise ConfigError(f"only --config.mesh.* can be set for a trained run (its model and task "
                      f"come from its config.json); got {', '.join(others)}")
  cfg = ml_collections.ConfigDict({"mesh": dict(data=1, fsdp=1, tensor=1)})
  config_lib.apply_overrides(cfg, overrides)
  return cfg.mesh


def make_mesh(mesh_cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """parallel.make_mesh, a mesh the devices cannot form being a one-line ConfigError."""
  try:
    return parallel.make_mesh(mesh_cfg)
  except ValueError as e:
    raise ConfigError(f"--config.mesh.*: {e}") from e


def abstract_params(cfg: ml_collections.ConfigDict, module: Any,
                    mesh: jax.sharding.Mesh) -> Any:
  """ShapeDtypeStructs of the model's parameters, each with the sharding its logical axes get
  on `mesh` (parallel.RULES): the target of a parameters-only restore. Computes nothing."""
  src, tgt = assembly.example_inputs(cfg)
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), src, tgt)["params"])
  return jax.tree_util.tree_map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      nn.unbox(boxed), parallel.logical_shardings(boxed, mesh))
