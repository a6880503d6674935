"""End to end: the model learns, a resumed run equals an uninterrupted one, the CLI works."""
import json
import subprocess
import sys

import numpy as np
import pytest

import jax

from encdec import assembly, config, errors, predictions_tsv, writers
from encdec.data import tasks
from encdec.train import loop, preemption, step as step_lib

FAST = {"eval.every_steps": 10_000, "checkpoint.every_steps": 10_000, "logging.every_steps": 50,
        "eval.final_split": "test", "model.d_model": 64}


@pytest.mark.slow   # trains to convergence (~1 min each)
@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_learns_algorithmic_task_to_99_percent(tmp_path, task):
  cfg = config.load(f"configs/algorithmic.py:task={task}",
                    {**FAST, "task.max_len": 8, "train.num_steps": 600, "eval.every_steps": 300,
                     "eval.extra_final_splits": "test_long"})
  scores = loop.train(cfg, tmp_path)
  assert scores["exact_match"] >= 99.0, scores
  test_long = json.loads((tmp_path / "eval" / "test_long-600.json").read_text())
  assert test_long["num_examples"] == len(tasks.build(cfg.task).eval_examples("test_long"))
  assert test_long["exact_match"] == pytest.approx(
      exact_match_of(tmp_path / "eval" / "test_long-600-predictions.tsv"))
  dev = [r for r in writers.read_metrics(tmp_path) if "eval/loss" in r]
  assert [r["step"] for r in dev] == [300]                      # teacher-forced dev metrics too
  assert dev[0]["eval/accuracy"] > 0.9 and dev[0]["eval/perplexity"] < 2.0


def exact_match_of(path) -> float:
  """Exact match (%) recomputed from a predictions TSV: rows whose prediction is a reference."""
  tsv = predictions_tsv.read(path)
  return 100.0 * sum(p in refs for p, refs in zip(tsv.predictions, tsv.refs)) / len(tsv.refs)


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


@pytest.mark.slow   # an integration run (> 10 s); the quick suite covers its parts
@pytest.mark.parametrize("layout", [{}, {"train.pack": False, "train.bucket_width": 2,
                                         "train.bucket_window": 4}], ids=["packed", "bucketed"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, layout):
  cfg = small_run_config(**layout)
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
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_nonfinite_steps_names_the_first_one_since_the_last_check():
  watch = loop.NonFiniteSteps()
  for step, finite in [(1, True), (2, True), (3, False), (4, False)]:
    watch.add(step, jax.numpy.asarray(finite))
  assert watch.first() == 3 and watch.first() is None
  watch.add(5, jax.numpy.asarray(True))
  assert watch.first() is None


def diverge_at(monkeypatch, step: int, *, after: bool = False) -> None:
  """Make the trainer's step `step` diverge (test-only): it starts from NaN parameters, so its
  loss and gradient are NaN; or, with `after`, it returns NaN parameters with finite metrics
  (an update that overflowed)."""
  make_train_step = step_lib.make_train_step
  nan = lambda params: jax.tree_util.tree_map(lambda x: x * np.nan, params)

  def make_diverging(*args, **kwargs):
    train_step = make_train_step(*args, **kwargs)

    def diverging(state, batch, rng):
      if not after and int(state.step) + 1 == step:
        state = state.replace(params=nan(state.params))
      state, metrics = train_step(state, batch, rng)
      if after and int(state.step) == step:
        state = state.replace(params=nan(state.params))
      return state, metrics
    return diverging

  monkeypatch.setattr(step_lib, "make_train_step", make_diverging)


def checkpoint_dirs(workdir) -> list[str]:
  return sorted(p.name for p in (workdir / "checkpoints").iterdir())


def assert_all_finite(tree) -> None:
  leaves = jax_leaves(tree)
  assert leaves and all(np.isfinite(x).all() for x in leaves)


@pytest.mark.parametrize("after, error", [
    pytest.param(False, "non-finite loss or gradient at step 5;", marks=pytest.mark.slow),
    (True, "non-finite parameters or optimizer state after step 6;")])
def test_a_diverged_step_is_named_exactly_and_never_checkpointed(tmp_path, monkeypatch, after,
                                                                  error):
  """Logs every 4 steps, checkpoints every 3. Step 5 diverges (between the checkpoints at 3
  and 6, not a log step), or the state after checkpoint step 6 is NaN with finite metrics: the
  run stops before anything of it is saved or logged and names the last good checkpoint, 3."""
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel
  diverge_at(monkeypatch, 6 if after else 5, after=after)
  cfg = small_run_config(**{"logging.every_steps": 4, "checkpoint.every_steps": 3,
                            "train.num_steps": 12})
  with pytest.raises(errors.TrainingDiverged) as raised:
    loop.train(cfg, tmp_path)
  message = str(raised.value)
  assert error in message and "\n" not in message, message
  assert f"last good checkpoint: {tmp_path.resolve() / 'checkpoints' / '3'} " in message, message
  assert checkpoint_dirs(tmp_path) == ["3"]            # nothing at or after the divergence
  assert_all_finite(run_lib.load(tmp_path, 3).params)
  assert [r["step"] for r in writers.read_metrics(tmp_path) if "train/loss" in r] == [4]


@pytest.mark.slow   # an integration run (> 10 s); the quick suite covers its parts
def test_nonfinite_updates_are_skipped_and_counted_when_asked(tmp_path):
  """train.skip_nonfinite: updates with NaN/Inf gradients (a learning rate of 1e30) are
  skipped and counted, training goes on, and what it saves is finite."""
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel
  cfg = small_run_config(**{"optim.learning_rate": 1e30, "optim.grad_clip_norm": 0.0,
                            "train.skip_nonfinite": True, "train.num_steps": 10,
                            "logging.every_steps": 2, "checkpoint.every_steps": 5})
  trainer = loop.Trainer(cfg, tmp_path)
  trainer.train_until(trainer.initial_state(), 0, StopAt(100))
  trainer.checkpointer.close()
  skipped = [r["train/skipped"] for r in writers.read_metrics(tmp_path) if "train/skipped" in r]
  assert len(skipped) == 5 and 0 < skipped[-1] < 10, skipped
  assert checkpoint_dirs(tmp_path) == ["10", "5"]
  assert_all_finite(run_lib.load(tmp_path).params)


@pytest.mark.parametrize("switch", [True, False])
def test_the_trainer_lowers_threefry_unrolled_on_cpu_only_when_asked(tmp_path, monkeypatch,
                                                                      switch):
  calls = []
  monkeypatch.setattr(loop.threefry, "unroll_on_cpu", lambda: calls.append("unrolled"))
  loop.Trainer(small_run_config(**{"train.cpu_unrolled_threefry": switch}), tmp_path)
  assert calls == (["unrolled"] if switch else [])


@pytest.mark.parametrize("key", ["eval.split", "eval.final_split", "eval.extra_final_splits"])
def test_unknown_eval_split_is_refused_before_training(tmp_path, key):
  with pytest.raises(config.ConfigError, match=rf"{key}='tset' is not a split of task 'reverse'; "
                                               r"valid: train, dev, test, test_long, test_longer"):
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


def test_a_trained_run_is_evaluated_and_decodes(tmp_path):
  """What `encdec eval` and `encdec decode` do, in this process (the slow test below runs the
  command line itself)."""
  from encdec import inference  # pylint: disable=import-outside-toplevel
  loop.train(small_run_config(**{"train.num_steps": 10, "decode.beam_size": 2}), tmp_path)
  scores = inference.evaluate_run(tmp_path, split="test", beam_size=2, max_examples=16)
  assert scores["beam_size"] == 2 and scores["num_examples"] == 16
  assert scores["exact_match"] == pytest.approx(
      exact_match_of(tmp_path / "eval" / "test-beam2-10-predictions.tsv"))
  # The trainer's final eval used the config's search: the same beam-2 outputs.
  final = json.loads((tmp_path / "eval" / "test-10.json").read_text())
  trainer = predictions_tsv.read(tmp_path / "eval" / "test-10-predictions.tsv")
  evaluated = predictions_tsv.read(tmp_path / "eval" / "test-beam2-10-predictions.tsv")
  assert final["beam_size"] == 2
  assert (trainer.sources[:16], trainer.refs[:16], trainer.predictions[:16]) == (
      evaluated.sources, evaluated.refs, evaluated.predictions)
  # Both scored the references: the same NLL per example, and the scores' NLL is their mean.
  np.testing.assert_allclose(trainer.reference_nll[:16], evaluated.reference_nll, rtol=1e-5)
  nll = trainer.reference_nll.sum(0)
  assert final["nll"] == pytest.approx(nll[0] / nll[1], rel=1e-5)
  assert scores["perplexity"] == pytest.approx(np.exp(evaluated.reference_nll[:, 0].sum()
                                                      / evaluated.reference_nll[:, 1].sum()))
  decoded = list(inference.decode_lines(tmp_path, ["abc", "", "hello"]))
  assert [source for source, _ in decoded] == ["abc", "hello"]
  assert all(isinstance(output, str) for _, output in decoded)


@pytest.mark.slow
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
  assert scores["beam_size"] == 2 and scores["exact_match"] == pytest.approx(
      exact_match_of(tmp_path / "eval" / "test-beam2-30-predictions.tsv"))
  assert len(list((tmp_path / "eval" / "attention-test").glob("*.png"))) == 2
  header, *lines = (tmp_path / "eval" / "test-beam2-30-predictions.tsv").read_text().splitlines()
  assert header == "source\treferences\tprediction\treference_nll\treference_tokens"
  assert len(lines) == scores["num_examples"]

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


def test_a_run_records_the_dtype_auto_resolved_to(tmp_path):
  """model.dtype="auto" is written resolved (float32 on CPU), so resuming the run on a GPU keeps
  float32 instead of switching to bfloat16; the caller's config is left as it was."""
  cfg = small_run_config(**{"model.dtype": "auto"})
  trainer = loop.Trainer(cfg, tmp_path / "run")
  assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["dtype"] == "float32"
  assert trainer.cfg.model.dtype == "float32" and cfg.model.dtype == "auto"
