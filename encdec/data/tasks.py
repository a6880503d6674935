"""The task registry: a task name in the config --> a Task (tokenizers, data, metric family).

    cfg = tasks.default_config("g2p_cmudict")      # every field the task reads, with defaults
    cfg.stress = True
    task = tasks.build(cfg)
    task.train_source("train")[0]                  # {"src": "abbe", "tgt": "AE1 B IY0"}
    task.eval_examples("dev")[0]                   # EvalExample(src="...", refs=("...", ...))

Every task config has `name`, `max_src_len` and `max_tgt_len` (token lengths without BOS/EOS;
longer training examples are dropped and counted by the pipeline). See each task's module for
its fields: g2p.py, algorithmic.py, parallel_text.py, wmt.py, ding.py.
"""
from __future__ import annotations

import ml_collections

from encdec.data.base import EvalExample, Task  # re-exported: pylint: disable=unused-import
from encdec.errors import ConfigError
from encdec.registry import Registry

# One line per task; a task's module is imported when the task is first used.
TASKS = Registry("task.name", {
    "g2p_cmudict": "encdec.data.g2p:G2PTask",
    "copy": "encdec.data.algorithmic:CopyTask",
    "reverse": "encdec.data.algorithmic:ReverseTask",
    "sort": "encdec.data.algorithmic:SortTask",
    "add": "encdec.data.algorithmic:AddTask",
    "parallel_text": "encdec.data.parallel_text:ParallelTextTask",
    "wmt": "encdec.data.wmt:WmtTask",
    "ding_de_en": "encdec.data.ding:DingDeEnTask",
})


def task_class(name: str):
  """The registered class of task `name`; a ConfigError listing the valid names otherwise."""
  return TASKS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """All fields task `name` reads, with their defaults (including `name`)."""
  return ml_collections.ConfigDict({"name": name, **task_class(name).default_config()})


def build(task_cfg) -> Task:
  """The Task described by `task_cfg` (missing fields take their defaults)."""
  if "name" not in task_cfg:
    raise ConfigError(f"task config has no 'name'; set task.name to one of: {', '.join(TASKS)}")
  cfg = default_config(task_cfg["name"])
  unknown = sorted(set(task_cfg.keys()) - set(cfg.keys()))
  if unknown:
    raise ConfigError(f"unknown field(s) {unknown} for task {cfg.name!r}; valid: "
                     f"{', '.join(sorted(cfg.keys()))}")
  for key in task_cfg.keys():
    cfg[key] = task_cfg[key]
  for key in ("max_src_len", "max_tgt_len"):
    if not isinstance(cfg[key], int) or cfg[key] < 1:
      raise ConfigError(f"task.{key}={cfg[key]!r} must be a positive integer")
  cfg.lock()
  return TASKS[cfg.name](cfg)
