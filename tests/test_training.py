"""End to end: the model learns, a resumed run equals an uninterrupted one, the CLI works."""
import json
import subprocess
import sys

import numpy as np
import pytest

from encdec import assembly, config, writers
from encdec.train import loop, preemption

FAST = {"eval.every_steps": 10_000, "checkpoint.every_steps": 10_000, "logging.every_steps": 50,
        "eval.final_split": "test", "model.d_model": 64}


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_learns_algorithmic_task_to_99_percent(tmp_path, task):
  cfg = config.load(f"configs/algorithmic.py:task={task}",
                    {**FAST, "task.max_len": 8, "train.num_steps": 600, "eval.every_steps": 300,
                     "eval.extra_final_splits": "test_long"})
  scores = loop.train(cfg, tmp_path)
  assert scores["exact_match"] >= 99.0, scores
  test_long = json.loads((tmp_path / "eval" / "test_long-600.json").read_text())
  assert 0 <= test_long["exact_match"] <= 100 and test_long["num_examples"] > 0
  dev = [r for r in writers.read_metrics(tmp_path) if "eval/loss" in r]
  assert [r["step"] for r in dev] == [300]                      # teacher-forced dev metrics too
  assert dev[0]["eval/accuracy"] > 0.9 and dev[0]["eval/perplexity"] < 2.0


class StopAt:
  """A preemption guard that fires after `step` steps (as SIGTERM would)."""

  def __init__(self, step):
    self.step, self.calls = step, 0

  def should_stop(self):
    self.calls += 1
    return self.calls >= self.step


def small_run_config(**overrides):
  return config.load("configs/algorithmic.py:task=reverse", {
      **FAST, "task.max_len": 6, "train.num_steps": 40, "train.pack": True,
      "model.dropout_rate": 0.1, "logging.every_steps": 5, "checkpoint.every_steps": 15,
      "train.batch_size": 16, "eval.max_examples": 16, **overrides})


def final_params(workdir):
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel
  return run_lib.load(workdir).params


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  cfg = small_run_config()
  loop.train(cfg, tmp_path / "straight")
  trainer = loop.Trainer(cfg, tmp_path / "interrupted")
  with pytest.raises(preemption.Preempted, match="preempted at step 22"):
    trainer.train_until(trainer.initial_state(), 0, StopAt(22))
  loop.train(cfg, tmp_path / "interrupted")          # resumes from step 22, not from 15
  losses = lambda d: {r["step"]: r["train/loss"] for r in writers.read_metrics(d)
                      if "train/loss" in r}
  straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "interrupted")
  assert sorted(resumed) == sorted(straight) and len(straight) == 8
  assert resumed == straight
  a, b = final_params(tmp_path / "straight"), final_params(tmp_path / "interrupted")
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("key", ["eval.split", "eval.final_split", "eval.extra_final_splits"])
def test_unknown_eval_split_is_refused_before_training(tmp_path, key):
  with pytest.raises(config.ConfigError, match=rf"{key}='tset' is not a split of task "
                                               r"'reverse'; valid: train, dev, test, test_long"):
    loop.Trainer(small_run_config(**{key: "tset"}), tmp_path)
  assert not (tmp_path / "checkpoints").exists()


def test_workdir_of_another_model_is_refused(tmp_path):
  loop.prepare_workdir(tmp_path, small_run_config())
  with pytest.raises(config.ConfigError, match=r"config differs .* in model\.d_model="):
    loop.prepare_workdir(tmp_path, small_run_config(**{"model.d_model": 32}))


def test_workdir_saved_before_a_model_option_existed_still_resumes(tmp_path):
  """A key added to config.base() later is compared at its default, not as a difference."""
  loop.prepare_workdir(tmp_path, small_run_config())
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["model"]["cross_window"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loop.prepare_workdir(tmp_path, small_run_config())
  with pytest.raises(config.ConfigError, match=r"model\.cross_window=\d+ \(now 2\)"):
    loop.prepare_workdir(tmp_path, small_run_config(**{"model.cross_window": 2}))


def encdec(*args, stdin=None):
  return subprocess.run([sys.executable, "-m", "encdec", *args], capture_output=True, text=True,
                        input=stdin, timeout=600)


def test_cli_train_resume_eval_decode(tmp_path):
  args = ["train", "--config", "configs/algorithmic.py:task=reverse", "--workdir", str(tmp_path),
          "--config.train.num_steps=30", "--config.task.max_len=6", "--config.model.d_model=32",
          "--config.logging.every_steps=10", "--config.eval.every_steps=1000"]
  first = encdec(*args)
  assert first.returncode == 0, first.stderr
  assert "step 30/30" in first.stderr and "ETA" in first.stderr and "steps/s" in first.stderr
  assert "final test_long @ 30: exact_match" in first.stderr
  assert json.loads((tmp_path / "config.json").read_text())["model"]["d_model"] == 32
  rows = writers.read_metrics(tmp_path)
  assert {"train/loss", "train/accuracy", "train/perplexity"} <= set(rows[0])
  assert list(tmp_path.glob("tensorboard/events.out.tfevents.*"))
  assert (tmp_path / "eval" / "test_long-30.json").exists()

  again = encdec(*args)
  assert again.returncode == 0 and "resumed from step 30" in again.stderr

  evaluated = encdec("eval", "--workdir", str(tmp_path), "--split", "test", "--beam", "2",
                     "--plot-attention", "2")
  assert evaluated.returncode == 0, evaluated.stderr
  scores = json.loads((tmp_path / "eval" / "test-beam2-30.json").read_text())
  assert scores["beam_size"] == 2 and 0 <= scores["exact_match"] <= 100
  assert len(list((tmp_path / "eval" / "attention-test").glob("*.png"))) == 2
  header, *lines = (tmp_path / "eval" / "test-beam2-30-predictions.tsv").read_text().splitlines()
  assert header == "source\treferences\tprediction" and len(lines) == scores["num_examples"]

  decoded = encdec("decode", "--workdir", str(tmp_path), "abc", "hello")
  assert decoded.returncode == 0, decoded.stderr
  outputs = [line.split("\t") for line in decoded.stdout.splitlines()]
  assert [o[0] for o in outputs] == ["abc", "hello"]
  from_stdin = encdec("decode", "--workdir", str(tmp_path), stdin="abc\nhello\n")
  assert from_stdin.stdout == decoded.stdout


def test_decode_length_limit_grows_with_longer_sources_unless_set():
  cfg = small_run_config()                          # max_src_len = max_tgt_len = 6
  assert assembly.decode_max_len(cfg) == assembly.decode_max_len(cfg, 7) == 7
  assert assembly.decode_max_len(cfg, 13) == 13         # test_long: 12 symbols + EOS
  cfg.decode.max_len = 9
  assert assembly.decode_max_len(cfg, 13) == 9


def test_longer_eval_sources_are_decoded_with_room_for_longer_outputs(tmp_path, monkeypatch):
  from encdec import evaluate  # pylint: disable=import-outside-toplevel
  limits = {}
  search = evaluate.decoding.search

  def recording_search(module, variables, src, max_len, **kwargs):
    limits[src.shape[1]] = max_len
    return search(module, variables, src, max_len, **kwargs)

  monkeypatch.setattr(evaluate.decoding, "search", recording_search)
  trainer = loop.Trainer(small_run_config(), tmp_path)   # max_len 6: test_long has 7-12 symbols
  state = trainer.initial_state()
  trainer.evaluate(state, "test", 0)
  trainer.evaluate(state, "test_long", 0)
  assert limits == {7: 7, 13: 13}                        # [B, S] --> up to S outputs, EOS included
