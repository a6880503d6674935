"""Several runs that share their shapes, trained together by one compiled step.

    encdec train-batch --config configs/algorithmic.py --workdir runs/s0 --workdir runs/s1 \
        --seeds 0,1 [--vary optim.learning_rate=1e-3,3e-3]

Small models leave a CPU (and far more an accelerator) mostly idle; `jax.vmap` over a leading
run axis turns N small train steps into one larger one. Each member stays a normal run: its own
`Trainer` (workdir, config.json, data stream in its seed's order, dropout key, metrics,
TensorBoard, Orbax checkpoints, evaluations, final decoding), so `encdec report`, `eval`,
`decode` and resuming alone or batched work as for any run. The computation is shared: the
members' states are stacked on a leading axis and `train_step_fn` runs under
`jax.jit(jax.vmap(...))`; the periodic evaluations (teacher-forced statistics and greedy
decoding) and the final decoding are vmapped over the members' params the same way
(decoding.search_members), each member then scoring and writing its own. A member's step is
the step it would take alone, computed as one slice of batched matrix products, so its metrics
equal the lone run's up to float reassociation (tests/test_batched.py states the tolerance).

What members may differ in: train.seed, and the per-run hyperparameters of step.HPARAMS
(optim.learning_rate, warmup_steps, weight_decay, grad_clip_norm; train.label_smoothing;
model.dropout_rate, attention_dropout_rate), which change no shape: those the members differ
in go to the step as [N] float32 arrays (`hparams`), those they share stay constants of the
step, as in a lone run. Dropout rates that differ become traced fields of the model's config
(step.with_dropout_rates): every dropout layer then draws its mask, a member's rate of 0
keeping every value, so such a batch pays for masks a lone rate-0 run would not draw.
Everything else must match (a ConfigError names what differs).

Faults: a member whose step is non-finite stops with TrainingDiverged (reported, its last good
checkpoint kept) and leaves the batch; the others go on. SIGTERM checkpoints every member. A
restart resumes every member from its own newest checkpoint; members at different steps are
trained one after another instead.

Devices: each member runs on one device (its config's mesh must be 1); the run axis is a mesh
axis over this process's devices (run_sharding: as many as divide the members evenly), so
on a host with several accelerators the members train side by side, one or more per device.
One process.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from encdec import config as config_lib, evaluate, parallel
from encdec.config import ConfigError
from encdec.errors import TrainingDiverged
from encdec.train import loop, preemption, progress, state as state_lib
from encdec.train import step as step_lib

PER_MEMBER_KEYS = config_lib.PER_MEMBER_KEYS


def differences(cfgs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """Dotted config keys whose values differ between the configs (other than PER_MEMBER_KEYS)."""
  varying = config_lib.differing_keys({str(i): c.to_dict() for i, c in enumerate(cfgs)})["0"]
  return [key for key in varying if key not in PER_MEMBER_KEYS]


def varying_hparams(cfgs: Sequence[ml_collections.ConfigDict]) -> dict[str, jax.Array]:
  """The step.HPARAMS the configs differ in, each as an [N] float32 array (the step's
  `hparams`); those they share are left out, to stay constants of the step."""
  values = [step_lib.hyperparameters(c) for c in cfgs]
  return {name: jnp.asarray([v[name] for v in values], jnp.float32)
          for name in step_lib.HPARAMS if len({v[name] for v in values}) > 1}


def stack(trees: Sequence[Any]) -> Any:
  """Pytrees with equal structure --> one pytree with a leading [N] run axis."""
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def select(tree: Any, indices: Sequence[int]) -> Any:
  """The members `indices` of a stacked pytree, stacked ([N] -> [len(indices)] per leaf)."""
  return jax.tree_util.tree_map(lambda leaf: leaf[np.array(indices, np.int32)], tree)


def run_sharding(num_members: int, devices: Sequence[jax.Device] | None = None
                 ) -> jax.sharding.NamedSharding:
  """The run axis on a mesh axis 'runs': [N, ...] arrays split on their leading axis over the
  most local devices that divide N (whole members per device: N = 5 on 8 devices takes 5,
  N = 6 on 4 takes 3). A member's step needs nothing from another's, so each device runs its
  members' steps alone."""
  devices = list(jax.local_devices() if devices is None else devices)
  count = max(d for d in range(1, min(num_members, len(devices)) + 1) if num_members % d == 0)
  mesh = jax.sharding.Mesh(np.asarray(devices[:count]), ("runs",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))


def member(tree: Any, index: int) -> Any:
  """Slice `index` of a stacked pytree (a new array per leaf: safe to donate the stack after)."""
  return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


@dataclasses.dataclass
class Outcome:
  """What became of one member: its final scores, or the error that stopped it."""
  workdir: str
  scores: dict[str, Any] | None = None
  error: str | None = None


class BatchedTrainer:
  """N `loop.Trainer`s whose configs differ only in PER_MEMBER_KEYS, stepped by one vmapped
  step."""

  def __init__(self, cfgs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]):
    if len(cfgs) != len(workdirs) or not cfgs:
      raise ConfigError("train-batch needs one workdir per seed (and at least one)")
    if len(set(map(str, workdirs))) != len(workdirs):
      raise ConfigError("train-batch: every member needs its own --workdir")
    differ = differences(cfgs)
    if differ:
      raise ConfigError(f"batched runs may differ only in {', '.join(PER_MEMBER_KEYS)}; "
                        f"these differ: {', '.join(differ)}")
    if cfgs[0].train.bucket_width:
      raise ConfigError(f"train.bucket_width={cfgs[0].train.bucket_width}: length-bucketed "
                        "members draw batches of different widths, and padding them to one "
                        "would change their dropout masks; train them one by one (no --batch)")
    devices = parallel.make_mesh(cfgs[0].mesh).size
    if devices > 1 or jax.process_count() > 1:
      raise ConfigError(f"each member of a batch runs on one device (the config's mesh has "
                        f"{devices}); set --config.mesh.data=1 (the members are spread over "
                        "this process's devices instead)")
    self.members = [loop.Trainer(c, w) for c, w in zip(cfgs, workdirs)]
    lead = self.members[0]
    cfg = lead.cfg.train
    pure = step_lib.train_step_fn(lead.module, lead.tx, lead.learning_rate,
                                  label_smoothing=cfg.label_smoothing,
                                  accum_steps=cfg.accum_steps,
                                  skip_nonfinite=cfg.skip_nonfinite)
    self.train_step = jax.jit(jax.vmap(pure), donate_argnums=0)
    # Evaluations: every member's params, one batch of rows they share, their own hparams.
    self.eval_step = jax.jit(jax.vmap(
        step_lib.eval_step_fn(lead.module, label_smoothing=cfg.label_smoothing),
        in_axes=(0, None, 0)))
    self.hparams = varying_hparams(cfgs)    # name -> [N]

  def run(self) -> list[Outcome]:
    """Train every member to num_steps (resuming each), then finish each; one Outcome each."""
    states = [m.initial_state() for m in self.members]
    if len({int(s.step) for s in states}) > 1:
      logging.warning("members resume from different steps (%s): training them one by one",
                      [int(s.step) for s in states])
      return [self._alone(m) for m in self.members]
    outcomes = [Outcome(str(m.workdir)) for m in self.members]
    active = list(range(len(self.members)))
    with preemption.PreemptionGuard() as guard:
      stacked = self.train_together(states, active, outcomes, guard)
    finals = [self.member_state(stacked, slot, i) for slot, i in enumerate(active)]
    for i, state in zip(active, finals):   # every final checkpoint before any decoding
      self.members[i].finish_training(state)
    beam_size = self.members[0].cfg.decode.beam_size
    decoded = functools.cache(lambda split: self.decode(stacked.params, split, 0, beam_size,
                                                         score_references=True))
    for slot, (i, state) in enumerate(zip(active, finals)):
      outcomes[i].scores = self.members[i].finish_eval(
          state, lambda split, slot=slot: decoded(split)[slot])
    return outcomes

  def decode(self, stacked_params: Any, split: str, max_examples: int, beam_size: int = 1,
             score_references: bool = False) -> list[list]:
    """loop.Trainer.decode for every active member at once: one list of predictions each."""
    lead = self.members[0]
    return evaluate.decode_split_members(
        lead.module, stacked_params, lead.task, lead.cfg.task, split,
        **lead.decode_options(max_examples, beam_size, score_references))

  def periodic_scores(self, stacked: state_lib.TrainState, hparams) -> list[dict[str, Any]]:
    """Every active member's periodic evaluation (loop.Trainer.periodic_scores), computed
    together: one vmapped teacher-forced pass, one vmapped greedy decoding."""
    lead = self.members[0]
    sums = lead.teacher_forced_sums(lambda local: self.eval_step(stacked.params, local, hparams))
    predictions = self.decode(stacked.params, lead.cfg.eval.split, lead.cfg.eval.max_examples)
    return [{**loop.teacher_forced_scores(member(sums, slot)),
             **evaluate.score(lead.task, own)} for slot, own in enumerate(predictions)]

  def _alone(self, trainer: loop.Trainer) -> Outcome:
    try:
      return Outcome(str(trainer.workdir), scores=trainer.run())
    except TrainingDiverged as e:
      return Outcome(str(trainer.workdir), error=str(e))

  def train_together(self, states: list[state_lib.TrainState], active: list[int],
                     outcomes: list[Outcome], guard: preemption.PreemptionGuard
                     ) -> state_lib.TrainState:
    """The shared step loop; `active` (member indices still training) shrinks when a member
    diverges. Returns the active members' final states, stacked in `active` order."""
    lead = self.members[0]
    start, end = int(states[0].step), lead.cfg.train.num_steps
    sharding = run_sharding(len(active))
    stacked, rngs, hparams = jax.device_put(
        (stack(states), stack([self.members[i].rng for i in active]),
         select(self.hparams, active)), sharding)
    logging.info("%d members on %d device(s)", len(active), len(sharding.device_set))
    meters = {i: progress.Progress(start, end) for i in active}
    del states
    for step in range(start + 1, end + 1):
      local = [next(self.members[i].batches) for i in active]
      batch = jax.device_put(stack([{k: np.asarray(v) for k, v in b.items()} for b in local]),
                             sharding)
      stacked, metrics = self.train_step(stacked, batch, rngs, hparams)
      scores = functools.cache(lambda: self.periodic_scores(stacked, hparams))   # if due
      failed = []
      for slot, i in enumerate(active):
        state_of = lambda slot=slot, i=i: self.member_state(stacked, slot, i)
        try:
          self.members[i].after_step(step, state_of, member(metrics, slot), local[slot], meters[i],
                                     eval_scores_of=lambda slot=slot: scores()[slot])
        except TrainingDiverged as e:
          logging.error("member %s: %s", self.members[i].workdir, e)
          outcomes[i].error = str(e)
          failed.append(slot)
      if failed:
        keep = [slot for slot in range(len(active)) if slot not in failed]
        active[:] = [active[slot] for slot in keep]
        if not active:
          return None
        sharding = run_sharding(len(active))
        stacked, rngs, hparams = jax.device_put(select((stacked, rngs, hparams), keep), sharding)
      if guard.should_stop():
        self.preempted(step, stacked, active)
    return stacked

  def member_state(self, stacked: state_lib.TrainState, slot: int, index: int
                   ) -> state_lib.TrainState:
    """Member `index`'s state (slot `slot` of the stack), placed as its lone run's would be."""
    return jax.device_put(member(stacked, slot), self.members[index].state_shardings)

  def preempted(self, step: int, stacked: state_lib.TrainState, active: list[int]) -> None:
    """Checkpoint every active member, then raise Preempted."""
    for slot, i in enumerate(active):
      trainer = self.members[i]
      trainer.save(step, self.member_state(stacked, slot, i), force=True)
      trainer.checkpointer.close()
    raise preemption.Preempted(f"preempted at step {step}: every member checkpointed; run the "
                               "same command to resume")


def train(cfgs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> list[Outcome]:
  """Train (or resume) the batch; one Outcome per member, in order."""
  return BatchedTrainer(cfgs, workdirs).run()
