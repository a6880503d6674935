"""Batched runs (encdec/train/batched.py): a member trained in a batch equals the same run
trained alone; configs that differ in more than the seed are refused; a diverging member
leaves the batch without stopping the others; preemption checkpoints every member."""
import json
import os
import signal

import numpy as np
import pytest

from encdec import config
from encdec.config import ConfigError
from encdec.train import batched, loop

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


def losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def predictions(workdir, step: int = 20) -> str:
  return (workdir / "eval" / f"test-{step}-predictions.tsv").read_text()


@pytest.fixture(scope="module", name="alone")
def fixture_alone(tmp_path_factory):
  """Seeds 0 and 1, each trained alone."""
  root = tmp_path_factory.mktemp("alone")
  for seed in (0, 1):
    loop.train(tiny(seed), root / f"s{seed}")
  return root


@pytest.mark.slow   # four tiny runs (~30 s); the refusal test below is quick
def test_a_batched_member_equals_its_lone_run(alone, tmp_path):
  outcomes = batched.train([tiny(0), tiny(1)], [tmp_path / "s0", tmp_path / "s1"])
  assert [o.error for o in outcomes] == [None, None]
  for seed in (0, 1):
    got, want = losses(tmp_path / f"s{seed}"), losses(alone / f"s{seed}")
    assert list(got) == list(want) == [5, 10, 15, 20]
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=RTOL)
    assert predictions(tmp_path / f"s{seed}") == predictions(alone / f"s{seed}")
    assert (tmp_path / f"s{seed}" / "checkpoints" / "20").is_dir()
  # The seeds differ (data order, init, dropout): the members are not copies of each other.
  assert losses(tmp_path / "s0")[5] != losses(tmp_path / "s1")[5]


def test_members_must_differ_only_in_their_seed(tmp_path):
  with pytest.raises(ConfigError, match="differ only in train.seed; these differ: "
                                        "optim.learning_rate"):
    batched.BatchedTrainer([tiny(0), tiny(1, **{"optim.learning_rate": 1e-2})],
                           [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(ConfigError, match="its own --workdir"):
    batched.BatchedTrainer([tiny(0), tiny(1)], [tmp_path / "a", tmp_path / "a"])
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

  def signal_at_step_7(self, step, *args):
    after_step(self, step, *args)
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
    assert predictions(workdir) == predictions(alone / f"s{seed}")
    np.testing.assert_allclose(losses(workdir)[20], losses(alone / f"s{seed}")[20], rtol=RTOL)


def test_train_batch_command_line_refuses_mismatched_seeds_and_workdirs(tmp_path, capsys):
  from encdec import cli  # pylint: disable=import-outside-toplevel
  argv = ["train-batch", "--config", "configs/algorithmic.py", "--workdir", str(tmp_path / "a")]
  assert cli.main([*argv, "--seeds", "0,1"]) == 2
  assert "--seeds lists 2 seeds for 1 --workdir" in capsys.readouterr().err
  assert cli.main([*argv, "--seeds", "zero"]) == 2
  assert "expected integers" in capsys.readouterr().err
  assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_train_batch_command_line_trains_every_member(alone, tmp_path):
  from encdec import cli  # pylint: disable=import-outside-toplevel
  overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
  assert cli.main(["train-batch", "--config", SPEC,
                   "--workdir", str(tmp_path / "s1"), "--workdir", str(tmp_path / "s0"),
                   "--seeds", "1,0", *overrides]) == 0
  for seed in (0, 1):
    assert predictions(tmp_path / f"s{seed}") == predictions(alone / f"s{seed}")
  assert json.loads((tmp_path / "s1" / "config.json").read_text())["train"]["seed"] == 1
