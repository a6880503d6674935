"""What every task provides (the `Task` protocol) and the small helpers tasks share.

Tasks live in their own modules (g2p.py, algorithmic.py, parallel_text.py, wmt.py) and are
registered by name in tasks.py. A task class has:

  * `default_config() -> dict`: every field it reads (besides `name`), with defaults;
  * `__init__(cfg)`: build from a (complete, validated) task ConfigDict;
  * the attributes and methods of `Task` below.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
from typing import Any, Callable, Protocol, Sequence

from absl import logging

from encdec.errors import ConfigError
from encdec.data.tokenizers import SpecialTokens, Tokenizer


@dataclasses.dataclass(frozen=True)
class EvalExample:
  """One evaluation input and every acceptable reference (G2P: all pronunciations)."""
  src: str
  refs: tuple[str, ...]


class RandomAccessSource(Protocol):
  """A grain random-access data source: len() and indexing, here of {"src": str, "tgt": str}."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, str]: ...


class Task(Protocol):
  name: str
  src_tokenizer: Tokenizer
  tgt_tokenizer: Tokenizer
  metric_family: str            # "g2p" (WER/PER/exact) | "text" (BLEU/chrF) | "exact"
  splits: tuple[str, ...]

  def train_source(self, split: str) -> RandomAccessSource:
    """{"src": str, "tgt": str} examples of `split`, one per (source, target) pair."""

  def eval_examples(self, split: str) -> list[EvalExample]:
    """`split` as (source, all references) in a fixed order, one per distinct source."""

  def normalize_source(self, text: str) -> str:
    """A user's raw input (e.g. typed at inference) in the form the sources have."""


def special_tokens(task: Any) -> SpecialTokens:
  """The special token ids of a task's data and model: its tokenizers' (which must agree, as
  one model reads both sides)."""
  src, tgt = task.src_tokenizer.special, task.tgt_tokenizer.special
  if src != tgt:
    raise ConfigError(f"task {task.name!r} has source special ids {src} but target ones {tgt}; "
                      "its tokenizers must agree")
  return tgt


def check_split(task: Any, split: str) -> None:
  """ConfigError naming the valid splits when `split` is not one of `task.splits`."""
  if split not in task.splits:
    raise ConfigError(f"unknown split {split!r} for task {task.name!r}; valid: "
                      f"{', '.join(task.splits)}")


def default_data_dir() -> str:
  """$ENCDEC_DATA_DIR, else ~/tensorflow_datasets (left unexpanded so configs stay portable)."""
  return os.environ.get("ENCDEC_DATA_DIR", "~/tensorflow_datasets")


def expand(path: str) -> str:
  """`path` with ~ and environment variables expanded."""
  return os.path.expandvars(os.path.expanduser(path))


def decode_text(value: Any) -> str:
  """A TFDS Text value (bytes from array_record sources, str from mocks) as str."""
  return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


class ListSource:
  """A list of examples as a grain random-access source (len + __getitem__)."""

  def __init__(self, examples: Sequence[dict[str, str]]):
    self._examples = examples

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> dict[str, str]:
    return self._examples[index]

  def __repr__(self) -> str:
    return f"ListSource({len(self)} examples)"


def prepared(make: Callable[[], Any], lock: pathlib.Path, note: str):
  """`make()`, a TFDS builder, prepared first if it is not yet.

  Preparation holds the file lock `lock`, so runs started together (a sweep) prepare it once;
  TFDS's progress bars are off meanwhile (`note`: how long it takes, for the log line).
  """
  if make().is_prepared():
    return make()
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel
  lock.parent.mkdir(parents=True, exist_ok=True)
  with open(lock, "w") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    builder = make()
    if not builder.is_prepared():  # another process may have prepared it meanwhile
      logging.info("preparing %s in %s (one-off, %s)", builder.name, builder.data_dir, note)
      was_active = tqdm_utils._active  # pylint: disable=protected-access
      tqdm_utils.display_progress_bar(False)
      try:
        builder.download_and_prepare()
      finally:
        tqdm_utils.display_progress_bar(was_active)
  return make()
