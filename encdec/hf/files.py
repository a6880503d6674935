"""Reading and writing the files of a Hugging Face checkpoint directory, without torch.

A directory holds config.json and its weights as `model.safetensors` (or shards listed in
`model.safetensors.index.json`). `pytorch_model.bin` is a pickle that only torch reads; it is
refused with the command that converts it.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from encdec.errors import CheckpointError, ConfigError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def read_config(directory: str | pathlib.Path) -> dict[str, Any]:
  """DIR/config.json as a dict; a one-line ConfigError if it is missing or not JSON."""
  path = pathlib.Path(directory) / CONFIG
  if not path.is_file():
    raise ConfigError(f"{path} not found; is {directory} a Hugging Face checkpoint directory "
                      "(huggingface-cli download MODEL --local-dir DIR)?")
  try:
    config = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from e
  if not isinstance(config, dict):
    raise ConfigError(f"{path} holds no config (a JSON object was expected)")
  return config


def weight_files(directory: str | pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files of a checkpoint: one file, or the shards its index lists."""
  directory = pathlib.Path(directory)
  if (directory / WEIGHTS).is_file():
    return [directory / WEIGHTS]
  if (directory / SHARD_INDEX).is_file():
    index = json.loads((directory / SHARD_INDEX).read_text())
    return [directory / name for name in sorted(set(index["weight_map"].values()))]
  if (directory / "pytorch_model.bin").is_file():
    raise CheckpointError(
        f"{directory / 'pytorch_model.bin'} is a torch pickle, which encdec does not read; "
        "convert it once where torch is installed: python -c \"import transformers as t; "
        f"t.AutoModelForSeq2SeqLM.from_pretrained('{directory}').save_pretrained("
        f"'{directory}', safe_serialization=True)\"")
  raise CheckpointError(f"no {WEIGHTS} (or {SHARD_INDEX}) in {directory}; download the "
                        "checkpoint's safetensors weights")


def read_tensors(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
  """{name: array} of every weight in the checkpoint, as float32 numpy arrays."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  tensors = {}
  for path in weight_files(directory):
    try:
      loaded = load_file(str(path))
    except Exception as e:  # pylint: disable=broad-except (safetensors raises several kinds)
      raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0]}") from e
    tensors.update({name: np.asarray(value, np.float32) for name, value in loaded.items()})
  return tensors


def write_checkpoint(directory: str | pathlib.Path, config: dict[str, Any],
                     tensors: dict[str, np.ndarray]) -> pathlib.Path:
  """Write DIR/config.json and DIR/model.safetensors (float32, contiguous)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  save_file({name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()},
            str(directory / WEIGHTS), metadata={"format": "pt"})
  return directory
