"""Using a trained run: parameters-only restore (onto a mesh), `encdec decode` as a stream."""
import json
import os
import select
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from encdec import assembly, config, inference, run as run_lib
from encdec.errors import CheckpointError, ConfigError
from encdec.train import checkpoint, loop, optim, state as state_lib

TINY = {"task.max_len": 6, "task.num_train": 256, "task.num_eval": 16, "train.num_steps": 4,
        "train.batch_size": 8, "model.d_model": 32, "model.num_heads": 4, "model.d_ff": 64,
        "model.num_encoder_layers": 1, "model.num_decoder_layers": 2,
        "checkpoint.every_steps": 2, "eval.every_steps": 1000, "eval.final_split": "test",
        "eval.max_examples": 8, "logging.every_steps": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 4-step run of the copy task (checkpoints at steps 2 and 4)."""
  workdir = tmp_path_factory.mktemp("run")
  loop.train(config.load("configs/algorithmic.py:task=copy", TINY), workdir)
  return workdir


def full_state(workdir, step):
  """The whole train state of checkpoint `step`, as training restores it."""
  cfg = run_lib.load_config(workdir)
  module = run_lib.load(workdir).module
  tx = optim.optimizer(cfg.optim, cfg.train.num_steps)
  src, tgt = assembly.example_inputs(cfg)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = state_lib.abstract_shapes(module, tx, src, tgt)
  abstract = state_lib.abstract(module, tx, src, tgt, jax.tree_util.tree_map(lambda _: device,
                                                                             shapes))
  ckpt = checkpoint.Checkpointer(workdir, every_steps=1, keep=3, async_save=False)
  try:
    return ckpt.restore(abstract, step)[0]
  finally:
    ckpt.close()


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def drop_optimizer_state(workdir, step):
  """Remove every optimizer-state entry from checkpoint `step`'s tree metadata: a restore that
  reads the optimizer state can no longer find it."""
  path = workdir / "checkpoints" / str(step) / "state" / "_METADATA"
  meta = json.loads(path.read_text())
  kept = {k: v for k, v in meta["tree_metadata"].items() if not k.startswith("('opt_state'")}
  assert 0 < len(kept) < len(meta["tree_metadata"])
  path.write_text(json.dumps({**meta, "tree_metadata": kept}))


def test_only_the_parameters_are_restored(trained, tmp_path):
  reference = full_state(trained, 4)
  run = run_lib.load(trained)
  assert run.step == 4
  assert_trees_equal(run.params, reference.params)
  assert not np.array_equal(*[np.asarray(jax.tree_util.tree_leaves(p)[0]) for p in (
      run.params, run_lib.load(trained, step=2).params)])     # step 2 is another checkpoint
  copy = tmp_path / "run"
  shutil.copytree(trained, copy)
  drop_optimizer_state(copy, 4)
  with pytest.raises(Exception):            # the whole state is no longer readable ...
    full_state(copy, 4)
  again = run_lib.load(copy)                # ... the parameters are, from the same checkpoint
  assert again.step == 4 and (copy / "checkpoints" / "4").exists()
  assert_trees_equal(again.params, reference.params)


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(trained, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(trained, copy)
  (copy / "checkpoints" / "4" / "state" / "_METADATA").write_text("{not json")
  run = run_lib.load(copy)
  assert run.step == 2 and (copy / "checkpoints" / "4.unreadable").exists()
  assert_trees_equal(run.params, run_lib.load(trained, step=2).params)
  (copy / "checkpoints" / "2" / "state" / "_METADATA").write_text("{not json")
  with pytest.raises(CheckpointError, match="no readable checkpoint in"):
    run_lib.load(copy)


def test_a_missing_step_is_a_one_line_error(trained):
  with pytest.raises(CheckpointError, match=r"no checkpoint of step 3 in .*; saved steps: 2, 4$"):
    run_lib.load(trained, step=3)


@pytest.mark.parametrize("overrides, message", [
    ({"model.d_model": 8}, r"only --config.mesh.\* can be set .*; got model.d_model"),
    ({"mesh.fsdq": 2}, r"unknown config key 'mesh.fsdq'; did you mean 'fsdp'\?"),
    ({"mesh.fsdp": 64}, r"--config.mesh.\*: mesh data=1 x fsdp=64 x tensor=1 needs 64 devices"),
])
def test_mesh_overrides_are_checked(overrides, message):
  with pytest.raises(ConfigError, match=message):
    run_lib.make_mesh(run_lib.mesh_config(overrides))


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (simulated) devices")
def test_parameters_load_into_their_shardings_and_evaluate_alike(trained):
  one = run_lib.load(trained)
  sharded = run_lib.load(trained, mesh_overrides={"mesh.fsdp": 2, "mesh.tensor": 2})
  assert_trees_equal(sharded.params, one.params)
  shardings = [x.sharding for x in jax.tree_util.tree_leaves(sharded.params)]
  assert {len(s.device_set) for s in shardings} == {4}
  assert any("fsdp" in str(s.spec) for s in shardings)          # split, not only replicated
  assert any("tensor" in str(s.spec) for s in shardings)
  scores = [inference.evaluate_run(trained, split="test", max_examples=8, mesh_overrides=mesh)
            for mesh in ({}, {"mesh.fsdp": 2, "mesh.tensor": 2})]
  assert_same_scores(*scores)
  assert scores[0]["num_examples"] == 8


def assert_same_scores(got: dict, want: dict) -> None:
  """Equal scores; the references' NLL (float sums, whose last bits depend on the layout)
  equal to 1e-6."""
  nll = [{k: s[k] for k in ("nll", "perplexity")} for s in (got, want)]
  assert nll[0] == pytest.approx(nll[1], rel=1e-6)
  assert {**got, **nll[1]} == want


def test_batches_flush_when_full_when_input_pauses_and_at_the_end():
  lines = ["a", "b", "c", " ", None, None, "d", "e", "f"]
  assert list(inference.batches(lines, 2)) == [["a", "b"], ["c"], ["d", "e"], ["f"]]


def test_decode_lines_yields_each_batch_before_reading_further(trained):
  read = []

  def source():
    for line in ["abc", "ba", "cab", "a"]:
      read.append(line)
      yield line

  outputs = inference.decode_lines(trained, source(), batch_size=2)
  first = next(outputs)
  assert first[0] == "abc" and read == ["abc", "ba"]           # one batch read, not the stream
  rest = list(outputs)
  assert [s for s, _ in rest] == ["ba", "cab", "a"] and read == ["abc", "ba", "cab", "a"]
  whole = list(inference.decode_lines(trained, ["abc", "ba", "cab", "a"], batch_size=4))
  assert [first] + rest == whole                                 # batching changes nothing


def test_stdin_lines_mark_when_no_more_input_is_ready():
  read_end, write_end = os.pipe()
  lines = inference.stdin_lines(read_end)
  assert next(lines) is None                                     # nothing written yet
  os.write(write_end, "ab\ncd\ne".encode())
  assert [next(lines) for _ in range(3)] == ["ab", "cd", None]   # "e" is not a line yet
  os.write(write_end, "f\r\ng".encode())
  os.close(write_end)
  assert list(lines) == ["ef", "g"]                              # the last one without "\n"
  os.close(read_end)


def read_line(stream, timeout_s: float) -> str:
  """The next line of a subprocess's stdout, or '' if none comes within timeout_s."""
  if not select.select([stream], [], [], timeout_s)[0]:
    return ""
  return stream.readline()


def test_decode_answers_each_line_while_the_input_stays_open(trained):
  """`encdec decode` as an interactive filter: batch size 256, yet every line is answered
  before the next is written and stdin is still open."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  proc = subprocess.Popen([sys.executable, "-m", "encdec", "decode", "--workdir", str(trained)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
  try:
    answers = []
    for line in ("abc", "cab"):
      proc.stdin.write(line + "\n")
      proc.stdin.flush()
      answers.append(read_line(proc.stdout, timeout_s=240))
      assert answers[-1].startswith(f"{line}\t"), (answers, proc.poll())
    assert proc.poll() is None                                   # still reading its input
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stdout.read() == ""
  finally:
    if proc.poll() is None:
      proc.kill()
  outputs = dict(inference.decode_lines(trained, ["abc", "cab"]))
  assert answers == [f"abc\t{outputs['abc']}\n", f"cab\t{outputs['cab']}\n"]


def test_eval_on_a_mesh_from_the_command_line(trained, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(trained, copy)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  result = subprocess.run([sys.executable, "-m", "encdec", "eval", "--workdir", str(copy),
                           "--split", "test", "--max-examples", "8", "--config.mesh.fsdp=4"],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  scores = json.loads((copy / "eval" / "test-4.json").read_text())
  assert_same_scores(scores, inference.evaluate_run(trained, split="test", max_examples=8))


def test_plotting_a_variant_without_attention_maps_fails_in_one_line_before_decoding(
    trained, tmp_path):
  """A run of the `none` control: the tiny run with its config switched to `none` (whose
  parameters are a subset of what the run saved)."""
  copy = tmp_path / "run"
  shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("eval"))
  saved = json.loads((copy / "config.json").read_text())
  saved["model"]["cross_attention"] = "none"
  (copy / "config.json").write_text(json.dumps(saved))
  result = subprocess.run([sys.executable, "-m", "encdec", "eval", "--workdir", str(copy),
                           "--plot-attention", "2"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "encdec eval: error: model.cross_attention='none' records no cross-attention weights to "
      "plot (No cross-attention: a control in which the decoder cannot read the source); run "
      "eval without --plot-attention"]
  assert not (copy / "eval").exists()


def test_checkpoint_averaging_is_the_mean_of_the_newest_checkpoints(trained, tmp_path):
  """--average N: the elementwise mean of the N newest checkpoints' params up to --step,
  recorded in the scores and the output names; too few checkpoints is a one-line error."""
  two, four = run_lib.load(trained, 2).params, run_lib.load(trained, 4).params
  averaged = run_lib.load(trained, average=2)
  assert (averaged.step, averaged.averaged_steps) == (4, (2, 4))
  for got, a, b in zip(*map(jax.tree_util.tree_leaves, (averaged.params, two, four))):
    np.testing.assert_allclose(got, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6)
  assert not np.allclose(jax.tree_util.tree_leaves(two)[0], jax.tree_util.tree_leaves(four)[0])
  assert run_lib.load(trained, 4, average=1).averaged_steps == ()
  with pytest.raises(CheckpointError, match="cannot average 2 checkpoints: .* has 1 up to "
                                            "step 2 .*checkpoint.keep"):
    run_lib.load(trained, 2, average=2)
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  scores = inference.evaluate_run(workdir, average=2, max_examples=4)
  assert scores["averaged_steps"] == [2, 4]
  assert json.loads((workdir / "eval" / "test-avg2-4.json").read_text())["averaged_steps"] \
      == [2, 4]
