"""Batched runs (encdec/train/batched.py): a member trained in a batch equals the same run
trained alone, also when the members differ in per-run hyperparameters; configs that differ in
more are refused; a diverging member leaves the batch without stopping the others; preemption
checkpoints every member; sweeps and the command line batch such runs. (Traced
hyperparameters, unit by unit: tests/test_hparams.py.)"""
import json
import os
import signal

import jax
import numpy as np
import pytest

from encdec import config, predictions_tsv, sweep
from encdec.config import ConfigError
from encdec.train import batched, loop, optim, step as step_lib

# Float tolerance between a member's batched step and its lone step: the vmapped step computes
# the same products as batched matmuls, whose summation order XLA may choose differently, so
# values agree to float32 rounding, which a few dozen Adam steps amplify to ~1e-5 relative.
RTOL = 1e-4


TINY = {"task.max_len": 6, "task.num_eval": 24, "model.d_model": 32, "model.d_ff": 64,
        "model.num_heads": 2, "model.num_encoder_layers": 1, "model.num_decoder_layers": 1,
        "model.dropout_rate": 0.1, "train.num_steps": 20, "train.batch_size": 8,
        "logging.every_steps": 5, "eval.every_steps": 10, "eval.max_examples": 8,
        "checkpoint.every_steps": 10, "eval.final_split": "test", "mesh.data": 1}
SPEC = "configs/algorithmic.py:task=reverse"


def tiny(seed: int, **overrides):
  return config.load(SPEC, {**TINY, "train.seed": seed, **overrides})


def losses(workdir, key: str = "train/loss") -> dict[int, float]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in rows if key in r}


def eval_row(workdir, step: int = 10) -> dict[str, float]:
  """The periodic evaluation's logged numbers at `step`."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {k: v for r in rows if r["step"] == step for k, v in r.items() if k.startswith("eval/")}


def assert_same_predictions(got, want, step: int = 20) -> None:
  """Two runs' final evaluations: the same outputs, their references' NLL equal up to RTOL."""
  got, want = (predictions_tsv.read(w / "eval" / f"test-{step}-predictions.tsv")
               for w in (got, want))
  assert (got.sources, got.refs, got.predictions) == (want.sources, want.refs, want.predictions)
  np.testing.assert_allclose(got.reference_nll, want.reference_nll, rtol=RTOL)


@pytest.fixture(scope="module", name="alone")
def fixture_alone(tmp_path_factory):
  """Seeds 0 and 1, each trained alone."""
  root = tmp_path_factory.mktemp("alone")
  for seed in (0, 1):
    loop.train(tiny(seed), root / f"s{seed}")
  return root


def test_the_run_axis_spreads_members_over_the_devices_that_divide_them():
  devices = jax.devices()[:8]   # conftest's 8 CPU devices
  assert len(devices) == 8
  counts = [len(batched.run_sharding(n, devices).device_set) for n in (1, 2, 3, 5, 9, 12, 16)]
  assert counts == [1, 2, 3, 5, 3, 6, 8]
  assert batched.run_sharding(5, devices).spec == jax.sharding.PartitionSpec("runs")


@pytest.mark.slow   # four tiny runs (~30 s); the refusal tests below are quick
def test_a_batched_member_equals_its_lone_run(alone, tmp_path):
  # The two members train on two of conftest's 8 CPU devices, their lone runs on one.
  assert len(batched.run_sharding(2).device_set) == 2
  outcomes = batched.train([tiny(0), tiny(1)], [tmp_path / "s0", tmp_path / "s1"])
  assert [o.error for o in outcomes] == [None, None]
  for seed in (0, 1):
    got, want = losses(tmp_path / f"s{seed}"), losses(alone / f"s{seed}")
    assert list(got) == list(want) == [5, 10, 15, 20]
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=RTOL)
    assert_same_predictions(tmp_path / f"s{seed}", alone / f"s{seed}")
    assert (tmp_path / f"s{seed}" / "checkpoints" / "20").is_dir()
  # The seeds differ (data order, init, dropout): the members are not copies of each other.
  assert losses(tmp_path / "s0")[5] != losses(tmp_path / "s1")[5]


# Seed 1 with every per-run hyperparameter changed from the config's (tiny(0) has: lr 3e-3,
# warm-up 200, weight decay 0, clipping at 1, no label smoothing, dropout 0.1, no attention
# dropout: in the batch, a traced rate of 0 that keeps every value).
VARIED = {"optim.learning_rate": 1e-3, "optim.warmup_steps": 4, "optim.weight_decay": 0.1,
          "optim.grad_clip_norm": 0.0, "train.label_smoothing": 0.2,
          "model.dropout_rate": 0.3, "model.attention_dropout_rate": 0.2}


@pytest.mark.slow   # three tiny runs (~35 s)
def test_members_differing_in_hyperparameters_equal_their_lone_runs(alone, tmp_path):
  cfgs = [tiny(0), tiny(1, **VARIED)]
  loop.train(cfgs[1], tmp_path / "alone1")
  assert sorted(batched.varying_hparams(cfgs)) == sorted(step_lib.HPARAMS)   # all seven traced
  outcomes = batched.train(cfgs, [tmp_path / "s0", tmp_path / "s1"])
  assert [o.error for o in outcomes] == [None, None]
  for seed, want in enumerate([alone / "s0", tmp_path / "alone1"]):
    got = tmp_path / f"s{seed}"
    for key in ("train/loss", "train/grad_norm", "train/learning_rate"):
      assert list(losses(got, key)) == [5, 10, 15, 20]
      np.testing.assert_allclose(list(losses(got, key).values()),
                                 list(losses(want, key).values()), rtol=RTOL)
    assert_same_predictions(got, want)
    # The periodic evaluation at step 10, batched (teacher-forced loss with the member's own
    # label smoothing, accuracy, greedy decoding's scores): every number the lone run logged.
    want_eval, got_eval = eval_row(want), eval_row(got)
    assert sorted(got_eval) == sorted(want_eval) and "eval/loss" in want_eval
    np.testing.assert_allclose([got_eval[k] for k in sorted(want_eval)],
                               [want_eval[k] for k in sorted(want_eval)], rtol=RTOL)
    # Its own learning rate (metrics at step 5: the schedule at step 4).
    assert losses(got, "train/learning_rate")[5] == pytest.approx(
        float(optim.schedule(cfgs[seed].optim, 20)(4)))


def test_members_may_differ_in_seed_and_hyperparameters_only(tmp_path):
  cfgs = [tiny(0), tiny(1, **VARIED), tiny(2, **{"optim.learning_rate": 1e-3})]
  assert batched.differences(cfgs) == []
  hparams = batched.varying_hparams(cfgs)
  assert sorted(hparams) == sorted(step_lib.HPARAMS)
  np.testing.assert_allclose(hparams["learning_rate"], [3e-3, 1e-3, 1e-3])   # [N] float32
  assert hparams["warmup_steps"].dtype == np.float32
  assert sorted(batched.varying_hparams([cfgs[0], cfgs[2]])) == ["learning_rate"]
  assert batched.varying_hparams([tiny(0), tiny(1)]) == {}     # seeds only: all constants
  with pytest.raises(ConfigError, match="differ only in train.seed, optim.learning_rate, .*; "
                                        "these differ: model.d_ff, model.norm"):
    batched.BatchedTrainer([tiny(0), tiny(1, **{"model.d_ff": 32, "model.norm": "post"})],
                           [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(ConfigError, match="its own --workdir"):
    batched.BatchedTrainer([tiny(0), tiny(1)], [tmp_path / "a", tmp_path / "a"])
  with pytest.raises(ConfigError, match="length-bucketed members draw batches of different"):
    batched.BatchedTrainer([tiny(0, **{"train.bucket_width": 4}),
                            tiny(1, **{"train.bucket_width": 4})], [tmp_path / "a", tmp_path / "b"])
  assert not (tmp_path / "a").exists()


def test_a_sweep_batches_runs_that_differ_in_seed_and_hyperparameters(tmp_path, monkeypatch):
  def run(**overrides):
    name = ".".join(f"{k}={v}" for k, v in overrides.items())
    return sweep.Run(name, overrides, tmp_path / name, [], tmp_path / name / "done")
  lr = "optim.learning_rate"
  runs = [run(**{lr: 1e-3, "train.seed": 0}), run(**{lr: 3e-3, "train.seed": 0}),
          run(**{lr: 1e-3, "train.seed": 1, "model.d_ff": 32}), run(**{"train.seed": 2}),
          run(**{lr: 1e-2})]
  first, *rest = sweep.batch_runs(runs, 4, SPEC, {"mesh.data": 1})
  assert first.members == runs[:2]
  assert first.train_args == ["--config", SPEC, "--workdir", str(runs[0].workdir),
                              "--workdir", str(runs[1].workdir), "--seeds", "0,0",
                              "--vary", "optim.learning_rate=0.001,0.003",
                              "--config.mesh.data=1"]
  assert rest == runs[2:]   # another d_ff; no learning-rate override; no seed override
  # `encdec train-batch` reads those arguments back as the members' configs.
  from encdec import cli  # pylint: disable=import-outside-toplevel
  trained = []
  monkeypatch.setattr(batched, "train", lambda cfgs, workdirs: trained.extend(cfgs) or [])
  assert cli.main(["train-batch", *first.train_args]) == 0
  assert [c.optim.learning_rate for c in trained] == [1e-3, 3e-3]
  assert [c.train.seed for c in trained] == [0, 0] and trained[0].mesh.data == 1


def test_train_batch_command_line_refuses_mismatched_seeds_and_workdirs(tmp_path, capsys):
  from encdec import cli  # pylint: disable=import-outside-toplevel
  argv = ["train-batch", "--config", "configs/algorithmic.py", "--workdir", str(tmp_path / "a")]
  assert cli.main([*argv, "--seeds", "0,1"]) == 2
  assert "--seeds lists 2 seeds for 1 --workdir" in capsys.readouterr().err
  assert cli.main([*argv, "--seeds", "zero"]) == 2
  assert "expected integers" in capsys.readouterr().err
  for vary in ("optim.learning_rate=1e-3,3e-3", "model.d_ff=32"):
    assert cli.main([*argv, "--seeds", "0", "--vary", vary]) == 2
    assert "expected KEY=V0,V1,... with one value per seed" in capsys.readouterr().err
  assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_a_diverging_member_leaves_the_batch_and_the_others_finish(alone, tmp_path, monkeypatch):
  trainer = batched.BatchedTrainer([tiny(0), tiny(1)], [tmp_path / "s0", tmp_path / "s1"])
  broken = trainer.members[1]
  fresh = broken.initial_state
  monkeypatch.setattr(broken, "initial_state", lambda: (lambda s: s.replace(
      params=jax_tree_scale(s.params, np.nan)))(fresh()))
  ok, failed = trainer.run()
  assert "non-finite loss or gradient at step 1" in failed.error and failed.scores is None
  assert ok.error is None and ok.scores is not None
  np.testing.assert_allclose(list(losses(tmp_path / "s0").values()),
                             list(losses(alone / "s0").values()), rtol=RTOL)
  assert not (tmp_path / "s1" / "checkpoints" / "10").exists()


def jax_tree_scale(tree, factor):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_map(lambda x: x * factor, tree)


@pytest.mark.slow
def test_sigterm_checkpoints_every_member_and_the_rerun_finishes_like_the_lone_runs(
    alone, tmp_path, monkeypatch):
  workdirs = [tmp_path / "s0", tmp_path / "s1"]
  trainer = batched.BatchedTrainer([tiny(0), tiny(1)], workdirs)
  after_step = loop.Trainer.after_step

  def signal_at_step_7(self, step, *args, **kwargs):
    after_step(self, step, *args, **kwargs)
    if step == 7 and self is trainer.members[1]:
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(loop.Trainer, "after_step", signal_at_step_7)
  with pytest.raises(loop.preemption.Preempted, match="at step 7"):
    trainer.run()
  monkeypatch.setattr(loop.Trainer, "after_step", after_step)
  assert all((w / "checkpoints" / "7").is_dir() for w in workdirs)
  outcomes = batched.train([tiny(0), tiny(1)], workdirs)
  assert [o.error for o in outcomes] == [None, None]
  for seed, workdir in enumerate(workdirs):
    assert_same_predictions(workdir, alone / f"s{seed}")
    np.testing.assert_allclose(losses(workdir)[20], losses(alone / f"s{seed}")[20], rtol=RTOL)


@pytest.mark.slow
def test_train_batch_command_line_trains_every_member(alone, tmp_path):
  from encdec import cli  # pylint: disable=import-outside-toplevel
  overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
  assert cli.main(["train-batch", "--config", SPEC,
                   "--workdir", str(tmp_path / "s1"), "--workdir", str(tmp_path / "s0"),
                   "--seeds", "1,0", *overrides]) == 0
  for seed in (0, 1):
    assert_same_predictions(tmp_path / f"s{seed}", alone / f"s{seed}")
  assert json.loads((tmp_path / "s1" / "config.json").read_text())["train"]["seed"] == 1
