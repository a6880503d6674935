"""Assembling a run from its config: task -> model config -> model -> example inputs -> state.

A leaf module: training (`train/loop.py`), evaluation and decoding (`run.py`, `inference.py`),
reports and benchmarks all build a run's pieces with these functions, and none of them needs
the training loop to do so.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from encdec import model
from encdec.data import base
from encdec.errors import ConfigError


def model_config(model_cfg: ml_collections.ConfigDict, task) -> dict[str, Any]:
  """cfg.model with what the task decides filled in: vocabulary sizes where they are 0, and the
  special token ids (PAD, BOS, EOS) of the task's tokenizers."""
  values = model_cfg.to_dict()
  for key, tokenizer in (("src_vocab_size", task.src_tokenizer),
                         ("tgt_vocab_size", task.tgt_tokenizer)):
    if values[key] == 0:
      values[key] = tokenizer.vocab_size
    elif values[key] < tokenizer.vocab_size:
      raise ConfigError(f"model.{key}={values[key]} is smaller than the task's vocabulary "
                        f"({tokenizer.vocab_size}); set it to 0 to use the task's")
  if values["share_embeddings"]:
    values["src_vocab_size"] = values["tgt_vocab_size"] = max(values["src_vocab_size"],
                                                              values["tgt_vocab_size"])
  values.update(base.special_tokens(task).model_fields())
  return values


def build_model(cfg: ml_collections.ConfigDict, task) -> model.EncoderDecoder:
  """The run's model (vocabulary and special ids from `task`)."""
  return model.build(model_config(cfg.model, task))


def decode_max_len(cfg: ml_collections.ConfigDict, src_len: int = 0) -> int:
  """decode.max_len if set; else task.max_tgt_len + 1, plus as many steps as sources of
  `src_len` tokens (EOS and padding included) are longer than training's (max_src_len + 1):
  longer inputs, e.g. a test_long split, get room for longer outputs."""
  if cfg.decode.max_len:
    return cfg.decode.max_len
  return cfg.task.max_tgt_len + 1 + max(0, src_len - (cfg.task.max_src_len + 1))


def example_inputs(cfg: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Dummy [1, S] / [1, T] inputs for shape inference (they do not consume any data)."""
  return (jnp.zeros((1, cfg.task.max_src_len + 1), jnp.int32),
          jnp.zeros((1, cfg.task.max_tgt_len + 1), jnp.int32))


def final_splits(cfg: ml_collections.ConfigDict) -> list[str]:
  """eval.final_split, then eval.extra_final_splits (comma-separated)."""
  extra = [s.strip() for s in cfg.eval.extra_final_splits.split(",") if s.strip()]
  return [cfg.eval.final_split] + [s for s in extra if s != cfg.eval.final_split]


def check_splits(cfg: ml_collections.ConfigDict, task) -> None:
  """A one-line error before training if an eval split does not exist for the task."""
  for key, split in [("eval.split", cfg.eval.split)] + [
      ("eval.final_split" if i == 0 else "eval.extra_final_splits", s)
      for i, s in enumerate(final_splits(cfg))]:
    if split not in task.splits:
      raise ConfigError(f"{key}={split!r} is not a split of task {task.name!r}; valid: "
                        f"{', '.join(task.splits)}")
