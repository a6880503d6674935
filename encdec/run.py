"""A run directory as an object: its config, task, model and trained parameters.

Used by `encdec eval` / `encdec decode` to rebuild what `encdec train` trained.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections

from encdec import assembly, config as config_lib
from encdec.config import ConfigError
from encdec.data import tasks
from encdec.train import checkpoint, optim, state as state_lib


@dataclasses.dataclass
class TrainedRun:
  cfg: ml_collections.ConfigDict
  task: Any
  module: Any
  params: Any
  step: int


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, checked against the current config schema."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise ConfigError(f"{path} does not exist; is {workdir} a run directory of `encdec train`?")
  cfg = config_lib.base()
  saved = json.loads(path.read_text())
  for section, values in saved.items():
    if section in ("task",):   # task fields depend on the task: take them whole
      cfg[section] = values
      continue
    config_lib.apply_overrides(cfg, {f"{section}.{k}": v for k, v in values.items()})
  return cfg


def load(workdir: str | pathlib.Path, step: int | None = None) -> TrainedRun:
  """The run's config, task, model and the parameters of `step` (default: newest)."""
  cfg = load_config(workdir)
  task = tasks.build(cfg.task)
  module = assembly.build_model(cfg, task)
  ckpt = checkpoint.Checkpointer(workdir, every_steps=1, keep=cfg.checkpoint.keep,
                                 async_save=False)
  if (step or ckpt.latest_step()) is None:
    raise ConfigError(f"no checkpoint in {ckpt.directory}; train first with "
                      f"`encdec train --workdir {workdir}`")
  tx = optim.optimizer(cfg.optim, cfg.train.num_steps)
  src, tgt = assembly.example_inputs(cfg)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree_util.tree_map(lambda _: sharding, state_lib.abstract_shapes(
      module, tx, src, tgt))
  restored, _, step = ckpt.restore(state_lib.abstract(module, tx, src, tgt, shardings), step)
  ckpt.close()
  return TrainedRun(cfg, task, module, restored.params, step)
