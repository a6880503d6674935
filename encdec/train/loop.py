"""The training loop: wires config -> task -> data -> model -> jitted step -> logs/ckpts/eval.

Each piece lives elsewhere (train/step.py, train/checkpoint.py, data/, evaluate.py); this file
only sequences them. Re-running `train` on the same workdir resumes from its newest checkpoint.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from encdec import assembly, evaluate, files, parallel, threefry, writers
from encdec import config as config_lib, run as run_lib
from encdec.config import ConfigError
from encdec.errors import TrainingDiverged
from encdec.model import schema
from encdec.data import tasks, pipeline
from encdec.train import checkpoint, optim, preemption, progress, state as state_lib, warm_start
from encdec.train import step as step_lib

# Config sections that must match a workdir's saved config to resume from its checkpoints.
RESUME_SECTIONS = ("model", "task")


def prepare_workdir(workdir: str | pathlib.Path, cfg: ml_collections.ConfigDict) -> pathlib.Path:
  """Create the workdir and write config.json; refuse a config that cannot resume its state."""
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"cannot create workdir {workdir}: {e.strerror}") from e
  path = workdir / "config.json"
  new = json.loads(cfg.to_json())
  if path.exists():
    old = config_lib.read_saved(path)
    for section in RESUME_SECTIONS:
      diff = section_differences(section, old.get(section), new.get(section))
      if diff:
        raise ConfigError(f"the config differs from the one in {path} in {diff}; use another "
                          "--workdir or the same config to resume")
  if jax.process_index() == 0:
    files.write_atomically(path, json.dumps(new, indent=2) + "\n")   # other processes read it
  return workdir


def section_differences(section: str, saved: dict[str, Any] | None,
                        current: dict[str, Any] | None) -> str:
  """'' if a saved config section (keys added since filled with defaults) equals the current
  one; otherwise the differing keys, e.g. "model.d_model=64 (now 128)"."""
  if saved is None:
    return ""
  if section == "model":   # "auto" (an imported model's) compares as what it resolves to here
    saved = config_lib.with_defaults(section, saved)
    saved, current = ({**d, "dtype": schema.resolved_dtype(d["dtype"])}
                      if isinstance(d, dict) and "dtype" in d else d
                      for d in (saved, current))
  if not isinstance(saved, dict) or not isinstance(current, dict):
    return "" if saved == current else f"{section}={saved!r} (now {current!r})"
  return ", ".join(f"{section}.{k}={saved.get(k)!r} (now {current.get(k)!r})"
                   for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k))


class NonFiniteSteps:
  """Every train step's `finite` flag, kept on the device until `first` fetches them all.

  The loop adds each step's flag without waiting for it (no host sync per step) and calls
  `first` before anything leaves the step loop (a log line, an evaluation, a checkpoint), so
  a non-finite step is found, by its exact number, before any state after it is used.
  """

  def __init__(self):
    self._pending: list[tuple[int, jax.Array]] = []

  def add(self, step: int, finite: jax.Array) -> None:
    self._pending.append((step, finite))

  def first(self) -> int | None:
    """The first step added since the last call whose flag is False (None: all were True)."""
    pending, self._pending = self._pending, []
    flags = jax.device_get([flag for _, flag in pending])   # one transfer for all of them
    return next((step for (step, _), ok in zip(pending, flags) if not ok), None)


class Trainer:
  """Everything a run needs, built once from the config.

  Process-wide effect, explicit: with `train.cpu_unrolled_threefry` (the default) the trainer
  lowers JAX's Threefry hash unrolled on CPU for the rest of the process (encdec/threefry.py:
  the same random bits, a faster train step). Set it to False to leave JAX's lowering alone.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path):
    if cfg.model.dtype == "auto":   # recorded resolved: a resume elsewhere keeps the dtype
      cfg = cfg.copy_and_resolve_references()
      cfg.model.dtype = schema.resolved_dtype(cfg.model.dtype)
    self.cfg = cfg
    if cfg.train.cpu_unrolled_threefry:
      threefry.unroll_on_cpu()
    self.workdir = prepare_workdir(workdir, cfg)
    self.task = tasks.build(cfg.task)
    assembly.check_splits(cfg, self.task)
    self.module = assembly.build_model(cfg, self.task)
    self.tx = optim.optimizer(cfg.optim, cfg.train.num_steps)
    self.learning_rate = optim.schedule(cfg.optim, cfg.train.num_steps)
    self.batches = pipeline.train_batches(
        self.task, cfg.task, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
        pack=cfg.train.pack, bucket_width=cfg.train.bucket_width,
        bucket_window=cfg.train.bucket_window, shard_index=jax.process_index(),
        shard_count=jax.process_count())
    self.checkpointer = checkpoint.Checkpointer(
        self.workdir, every_steps=cfg.checkpoint.every_steps, keep=cfg.checkpoint.keep,
        async_save=cfg.checkpoint.async_save, config=json.loads(cfg.to_json()))
    self.mesh = parallel.make_mesh(cfg.mesh)
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    self.state_shardings = state_lib.shardings(self.module, self.tx,
                                               *assembly.example_inputs(cfg), self.mesh)
    self.eval_step = step_lib.make_eval_step(self.module,
                                             label_smoothing=cfg.train.label_smoothing)
    self.train_step = step_lib.make_train_step(
        self.module, self.tx, self.learning_rate, label_smoothing=cfg.train.label_smoothing,
        accum_steps=cfg.train.accum_steps, skip_nonfinite=cfg.train.skip_nonfinite,
        state_shardings=self.state_shardings, batch_sharding=self.batch_sharding)
    self.writer = writers.MetricWriter(self.workdir, cfg.logging.tensorboard) \
        if jax.process_index() == 0 else None
    self.rng = jax.random.key(cfg.train.seed)
    self.nonfinite = NonFiniteSteps()
    self.state_is_finite = jax.jit(lambda state: step_lib.all_finite(
        (state.params, state.opt_state)))

  def initial_state(self) -> state_lib.TrainState:
    """The newest checkpoint's state (and data position), or a freshly initialised one."""
    src, tgt = assembly.example_inputs(self.cfg)
    step = self.checkpointer.latest_step()
    if step is None:
      init_rng = jax.random.fold_in(self.rng, 1 << 20)
      state = state_lib.create(self.module, self.tx, init_rng, src, tgt, self.state_shardings)
      return self.warm_start(state) if self.cfg.train.init_from else state
    self.check_compatible(step)
    abstract = state_lib.abstract(self.module, self.tx, src, tgt, self.state_shardings)
    restored, data_state, step = self.checkpointer.restore(abstract)
    self.batches.set_state(self.data_state_of_this_process(data_state))
    logging.info("resumed from step %d (%s)", step, self.checkpointer.directory / str(step))
    return restored

  def check_compatible(self, step: int) -> None:
    """A one-line error if checkpoint `step` was trained with another model config."""
    diff = section_differences("model", self.checkpointer.saved_config(step).get("model"),
                               json.loads(self.cfg.to_json())["model"])
    if diff:
      raise ConfigError(f"checkpoint {self.checkpointer.directory / str(step)} was trained with "
                        f"{diff}; use its config or another --workdir")

  def warm_start(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """Parameters from train.init_from (another run), mapped by train.init_mapping."""
    cfg = self.cfg.train
    source = warm_start.source_run(cfg.init_from, cfg.seed)
    old = run_lib.load(source, cfg.init_from_step or None)
    params, _, _ = warm_start.merge(state.params, old.params, cfg.init_mapping)
    logging.info("initialised from %s step %d", source, old.step)
    return state.replace(params=jax.device_put(params, self.state_shardings.params))

  def data_states(self) -> dict[str, Any]:
    """Every process's data-iterator position (each reads its own shard)."""
    return {"per_process": parallel.allgather_json(self.batches.get_state())}

  def data_state_of_this_process(self, saved: dict[str, Any]) -> dict[str, Any]:
    """This process's saved position. Unpacked streams are at the same position on every
    process, whatever their number, so a run may resume on another process count."""
    states = saved["per_process"]
    if len(states) == jax.process_count():
      return states[jax.process_index()]
    if self.cfg.train.pack:
      raise ConfigError(f"the checkpoint was written by {len(states)} process(es), this run has "
                        f"{jax.process_count()}; packed data resumes only on the same count")
    return states[0]

  def global_batch(self, local: dict[str, Any]) -> dict[str, jax.Array]:
    """This process's rows --> global arrays sharded over the mesh's batch axes."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}

  def log(self, step: int, metrics: dict[str, Any]) -> None:
    if self.writer is not None:
      self.writer.write(step, metrics)

  def run(self) -> dict[str, Any]:
    """Train to cfg.train.num_steps (resuming if possible), then evaluate the final split.

    Every process of a multi-process run takes this same path (the final evaluation included);
    process 0 alone only writes the logs and evaluation outputs.
    """
    cfg = self.cfg
    state = self.initial_state()
    start = int(state.step)
    logging.info("training %s: %s parameters%s, steps %d -> %d, batch %d", cfg.task.name,
                 f"{_num_params(state.params):,}", _trainable_note(state.params, cfg.optim),
                 start, cfg.train.num_steps, cfg.train.batch_size)
    with preemption.PreemptionGuard() as guard:
      state = self.train_until(state, start, guard)
    return self.finish(state)

  def finish(self, state: state_lib.TrainState) -> dict[str, Any]:
    """After the last step: the final checkpoint, then the final evaluation; its scores."""
    self.finish_training(state)
    return self.finish_eval(state)

  def finish_eval(self, state: state_lib.TrainState,
                  decoded: Callable[[str], list] | None = None) -> dict[str, Any]:
    """The final evaluation (`decoded`: see final_eval), then the logs closed; its scores."""
    result = self.final_eval(state, decoded)
    if self.writer is not None:
      self.writer.close()
    return result

  def finish_training(self, state: state_lib.TrainState) -> None:
    """The final checkpoint; the data stream's prefetch threads stopped."""
    self.save(int(state.step), state, force=True)
    self.checkpointer.close()
    self.batches.close()

  def train_until(self, state: state_lib.TrainState, start: int,
                  guard: preemption.PreemptionGuard) -> state_lib.TrainState:
    """Steps start+1 .. num_steps, each followed by `after_step`'s bookkeeping."""
    meter = progress.Progress(start, self.cfg.train.num_steps)
    for step in range(start + 1, self.cfg.train.num_steps + 1):
      local = next(self.batches)
      state, metrics = self.train_step(state, self.global_batch(local), self.rng)
      self.after_step(step, lambda: state, metrics, local, meter)
      if guard.should_stop():
        self.preempted(step, state)
    return state

  def after_step(self, step: int, state_of: Callable[[], state_lib.TrainState],
                 metrics: dict[str, jax.Array], local: dict[str, Any],
                 meter: progress.Progress,
                 eval_scores_of: Callable[[], dict[str, Any]] | None = None) -> None:
    """Logs, evaluations and checkpoints due after train step `step`, each after checking that
    no step so far was non-finite (TrainingDiverged if one was). `state_of()` gives the state
    after the step; it is only called when an evaluation or a checkpoint needs it.
    `eval_scores_of()`, if given, gives the periodic evaluation's scores (a batch of runs
    computes its members' together); else they are `periodic_scores(state_of())`."""
    cfg = self.cfg
    if not cfg.train.skip_nonfinite:
      self.nonfinite.add(step, metrics["finite"])
    meter.add_tokens(float((local["tgt_out"] != self.module.config.pad_id).sum())
                     * jax.process_count())
    if step % cfg.logging.every_steps == 0 or step == cfg.train.num_steps:
      self.check_finite()
      self.report(step, jax.device_get(metrics), meter.report(step))
    if step % cfg.eval.every_steps == 0 and step != cfg.train.num_steps:
      self.check_finite()
      scores = eval_scores_of() if eval_scores_of else self.periodic_scores(state_of())
      self.log_periodic_eval(step, scores)
      meter.restart(step)
    if self.checkpointer.should_save(step):
      self.save(step, state_of())

  def preempted(self, step: int, state: state_lib.TrainState) -> None:
    """Checkpoint `state` (after `step`) and raise Preempted."""
    self.save(step, state, force=True)
    self.checkpointer.close()
    raise preemption.Preempted(f"preempted at step {step}: checkpoint saved in "
                               f"{self.checkpointer.directory / str(step)}; run the same "
                               "command to resume")

  def save(self, step: int, state: state_lib.TrainState, *, force: bool = False) -> None:
    """Checkpoint `state` (after `step`) if `step` is on the interval or `force`: only once
    every step up to it and the state itself are known to be finite (else TrainingDiverged)."""
    if not (force or self.checkpointer.should_save(step)):
      return
    self.check_finite()
    if not bool(self.state_is_finite(state)):
      self.diverged(f"non-finite parameters or optimizer state after step {step}")
    self.checkpointer.save(step, state, self.data_states(), force=force)

  def check_finite(self) -> None:
    """TrainingDiverged, naming the first non-finite step, if any step so far was one."""
    step = self.nonfinite.first()
    if step is not None:
      self.diverged(f"non-finite loss or gradient at step {step}")

  def diverged(self, what: str) -> None:
    """Raise TrainingDiverged: `what`, and the newest checkpoint (each one saved was checked
    finite), after waiting for the writes in flight."""
    self.checkpointer.wait()
    last = self.checkpointer.latest_step()
    raise TrainingDiverged(
        f"{what}; last good checkpoint: "
        f"{'none' if last is None else self.checkpointer.directory / str(last)} (lower "
        "optim.learning_rate, or set train.skip_nonfinite=True to skip such updates)")

  def report(self, step: int, metrics: dict[str, Any], rates: dict[str, float]) -> None:
    logging.info("step %d/%d  loss %.4f  acc %.3f  |g| %.3f  lr %.2e  %.2f steps/s  "
                 "%.0f tok/s  ETA %s", step, self.cfg.train.num_steps, metrics["loss"],
                 metrics["accuracy"], metrics["grad_norm"], metrics["learning_rate"],
                 rates["steps_per_s"], rates["tokens_per_s"],
                 progress.format_duration(rates["eta_s"]))
    self.log(step, {**{f"train/{k}": v for k, v in metrics.items() if k != "finite"},
                    **{f"train/{k}": v for k, v in rates.items()}})

  def decode_options(self, max_examples: int, beam_size: int = 1,
                     score_references: bool = False) -> dict[str, Any]:
    """evaluate.decode_split's options (also decode_split_members')."""
    return dict(batch_size=self.cfg.eval.batch_size, max_examples=max_examples,
                max_len_for=functools.partial(assembly.decode_max_len, self.cfg),
                beam_size=beam_size, alpha=self.cfg.decode.alpha,
                score_references=score_references)

  def decode(self, params, split: str, max_examples: int, beam_size: int = 1,
             score_references: bool = False) -> list:
    """`split`'s predictions (greedy, or beam search with decode.alpha), with their
    references' NLL if `score_references`."""
    return evaluate.decode_split(self.module, params, self.task, self.cfg.task, split,
                                 **self.decode_options(max_examples, beam_size,
                                                       score_references))

  def evaluate(self, state, split: str, max_examples: int, beam_size: int = 1):
    """Decode `split` and score it."""
    predictions = self.decode(state.params, split, max_examples, beam_size)
    return evaluate.score(self.task, predictions), predictions

  def teacher_forced_sums(self, sums_of: Callable[[dict[str, Any]], Any]) -> Any:
    """`sums_of(batch)` (an eval step's statistics of this process's rows), summed over about
    eval.max_examples of the eval split."""
    cfg = self.cfg
    batches = pipeline.train_batches(self.task, cfg.task, split=cfg.eval.split,
                                     batch_size=cfg.train.batch_size, seed=0,
                                     shard_index=jax.process_index(),
                                     shard_count=jax.process_count())
    num_batches = max(1, -(-(cfg.eval.max_examples or 1000) // cfg.train.batch_size))
    sums = None
    for _ in range(num_batches):
      batch_sums = sums_of(next(batches))
      sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
    batches.close()
    return sums

  def teacher_forced_eval(self, state) -> dict[str, float]:
    """Loss, perplexity and token accuracy on about eval.max_examples of the eval split."""
    sums = self.teacher_forced_sums(
        lambda local: self.eval_step(state.params, self.global_batch(local)))
    return teacher_forced_scores(sums)

  def periodic_scores(self, state) -> dict[str, Any]:
    """The periodic evaluation: teacher-forced scores, then greedy decoding's."""
    scores, _ = self.evaluate(state, self.cfg.eval.split, self.cfg.eval.max_examples)
    return {**self.teacher_forced_eval(state), **scores}

  def log_periodic_eval(self, step: int, scores: dict[str, Any]) -> None:
    logging.info("eval %s @ %d: %s", self.cfg.eval.split, step, _fmt(scores))
    self.log(step, {f"eval/{k}": v for k, v in scores.items() if not isinstance(v, str)})

  def final_eval(self, state, decoded: Callable[[str], list] | None = None) -> dict[str, Any]:
    """Decode eval.final_split, then each of eval.extra_final_splits; the first's scores.
    `decoded(split)`, if given, gives a split's predictions (a batch decodes its members'
    together)."""
    return [self.final_eval_split(state, split, decoded(split) if decoded else None)
            for split in assembly.final_splits(self.cfg)][0]

  def final_eval_split(self, state, split: str, predictions: list | None = None
                       ) -> dict[str, Any]:
    """The whole split with the config's search (decode.beam_size; periodic evals are greedy),
    and its references' NLL."""
    step, beam_size = int(state.step), self.cfg.decode.beam_size
    if predictions is None:
      predictions = self.decode(state.params, split, 0, beam_size, score_references=True)
    scores = {**evaluate.score(self.task, predictions), "beam_size": beam_size}
    logging.info("final %s @ %d: %s\n%s", split, step, _fmt(scores),
                 evaluate.format_samples(predictions, self.cfg.eval.num_samples_to_print))
    self.log(step, {f"{split}/{k}": v for k, v in scores.items() if not isinstance(v, str)})
    if jax.process_index() == 0:
      evaluate.write_outputs(self.workdir / "eval", split, step, scores, predictions)
    return scores


def teacher_forced_scores(sums: dict[str, jax.Array]) -> dict[str, float]:
  """Summed eval-step statistics --> loss, nll, accuracy, perplexity (Python floats)."""
  return {k: float(v) for k, v in step_lib.summarize(sums).items() if k != "tokens"}


def _num_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def _trainable_note(params, optim_cfg) -> str:
  if not optim_cfg.trainable:
    return ""
  mask = optim.trainable_mask(params, optim_cfg.trainable)
  trained = sum(x.size for x, m in zip(jax.tree_util.tree_leaves(params),
                                       jax.tree_util.tree_leaves(mask)) if m)
  return f" ({trained:,} trained: optim.trainable={optim_cfg.trainable!r})"


def _fmt(scores: dict[str, Any]) -> str:
  return "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in scores.items() if "signature" not in k)


def train(cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Train (or resume) the run in `workdir`; returns the final split's scores."""
  return Trainer(cfg, workdir).run()
