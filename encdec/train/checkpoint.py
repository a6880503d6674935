"""Orbax checkpoints of the train state and the data iterator: WORKDIR/checkpoints/<step>/."""
from __future__ import annotations

import contextlib
import pathlib
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging

from encdec.errors import CheckpointError


class CheckpointWriteError(CheckpointError):
  """A checkpoint could not be written (e.g. the disk is full). Older checkpoints are intact."""


class Checkpointer:
  """Saves {state, data-iterator position} every `every_steps`, keeps the newest `keep`.

  Writes are atomic (Orbax writes to a temporary directory and renames it), optionally
  asynchronous; the newest finished step is what `restore` reads.
  """

  def __init__(self, workdir: str | pathlib.Path, *, every_steps: int, keep: int,
               async_save: bool = True, config: dict | None = None):
    self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
    self.every_steps = every_steps
    self.config = config or {}
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    # Decided from what this run saved, not by listing the directory: every process must take
    # the same decisions, and a listing races with another process's asynchronous finalize.
    self._saved = set(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `step` is on the save interval (cheap: decide before gathering state)."""
    return step % self.every_steps == 0

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the finished checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict, *, force: bool = False) -> bool:
    """Saves when `step` is on the interval (or `force`); returns whether it saved."""
    if not (force or self.should_save(step)) or step in self._saved:
      return False
    self._saved.add(step)
    with self._write_errors():
      return self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          config=ocp.args.JsonSave(self.config)), force=True)

  @contextlib.contextmanager
  def _write_errors(self):
    """A failed (possibly asynchronous, earlier) write --> one clear CheckpointWriteError."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except (Orbax wraps OS errors variously)
      text = str(e)
      if "No space left" not in text and "os_error_code='28'" not in text:
        raise
      raise CheckpointWriteError(
          f"cannot write a checkpoint in {self.directory}: no space left on "
          f"device; free space and rerun the same command to resume from step "
          f"{self._manager.latest_step()}") from e

  def saved_config(self, step: int) -> dict:
    """The config recorded with checkpoint `step` ({} if it has none or it is unreadable)."""
    path = self.directory / str(step) / "config"
    try:
      return self._manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))["config"] if path.exists() else {}
    except Exception:  # pylint: disable=broad-except (damage is handled by restore())
      return {}

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """(state, data-iterator state, step) of `step`, or of the newest readable checkpoint.

    Without `step`, an unreadable newest checkpoint is reported, moved aside (renamed
    <step>.unreadable, never deleted) and the next older one is tried.
    """
    (state, data), step = self._first_readable(lambda s: self._restore(abstract_state, s), step)
    return state, data, step

  def restore_params(self, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
    """(params, step): the parameters of the saved train state and nothing else (the optimizer
    state is not read), each straight into the sharding of its `abstract_params` leaf
    (ShapeDtypeStructs). `step` and the fallback on damage are as in `restore`."""
    return self._first_readable(lambda s: self._restore_params(abstract_params, s), step)

  def _first_readable(self, read: Callable[[int], Any], step: int | None) -> tuple[Any, int]:
    """(read(step), step); without a step, of the newest checkpoint `read` succeeds on, the
    unreadable newer ones set aside."""
    if step is not None:
      return read(step), step
    for candidate in sorted(self._manager.all_steps(), reverse=True):
      try:
        return read(candidate), candidate
      except Exception as e:  # pylint: disable=broad-except (any damage: fall back)
        self._set_aside(candidate, e)
    raise CheckpointError(f"no readable checkpoint in {self.directory}")

  def _restore(self, abstract_state: Any, step: int) -> tuple[Any, dict]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def _restore_params(self, abstract_params: Any, step: int) -> Any:
    # A partial restore of the item saved with StandardSave(state): only the leaves named in
    # `item` are read (Orbax's PyTreeRestore, partial_restore=True).
    item = {"params": abstract_params}
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))
    return restored["state"]["params"]

  def _set_aside(self, step: int, error: Exception) -> None:
    path = self.directory / str(step)
    aside = path.with_name(f"{step}.unreadable")
    suffix = 1
    while aside.exists():
      aside, suffix = path.with_name(f"{step}.unreadable{suffix}"), suffix + 1
    logging.warning("checkpoint %s is unreadable (%s: %s); moved to %s, trying an older one",
                    path, type(error).__name__, str(error).splitlines()[0][:200], aside.name)
    if jax.process_index() == 0:
      path.rename(aside)
    self._saved.discard(step)
    self._manager.reload()

  def wait(self) -> None:
    with self._write_errors():
      self._manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()

