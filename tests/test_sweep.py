"""`encdec sweep`: grids and run names, validation before anything starts, dry runs (local and
SLURM), a real two-run sweep that is skipped when run again, and failures that do not stop the
other runs."""
import json
import os
import pathlib
import re
import shlex
import signal
import sys
import textwrap
import threading
import time

import pytest

from encdec import cli, config, sweep
from encdec.launch import jobs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"task.max_len": 6, "task.num_train": 500, "task.num_eval": 32, "model.d_model": 16,
        "model.d_ff": 32, "model.num_heads": 2, "model.num_encoder_layers": 1,
        "model.num_decoder_layers": 1, "train.num_steps": 20, "train.batch_size": 16,
        "logging.every_steps": 5, "eval.every_steps": 10, "eval.max_examples": 16,
        "checkpoint.every_steps": 10, "logging.tensorboard": False}


@pytest.fixture(name="config_file")
def fixture_config_file(tmp_path):
  """A tiny copy-task config with a few sweeps."""
  path = tmp_path / "tiny.py"
  path.write_text(textwrap.dedent(f"""
      from encdec import config, sweep

      def get_config(arg=None):
        return config.load({str(ROOT / "configs" / "algorithmic.py") + ":task=copy"!r}, {TINY!r})

      SWEEPS = {{
          "pair": lambda: sweep.grid(seeds=(0,), **{{"model.cross_attention": ["mha", "mqa"]}}),
          "three": lambda: sweep.grid(seeds=(0, 1, 2)),
          "typo": lambda: [{{"model.d_modle": 8}}],
      }}
      """))
  return str(path)


# --- building sweeps and naming runs ------------------------------------------------------------

def test_grid_is_the_product_of_the_axes_with_seeds_fastest():
  runs = sweep.grid(seeds=(0, 1), **{"model.cross_attention": ["mha", "mqa"],
                                     "model.d_model": [16, 32]})
  assert runs == [{"model.cross_attention": a, "model.d_model": d, "train.seed": s}
                  for a in ("mha", "mqa") for d in (16, 32) for s in (0, 1)]
  assert sweep.grid() == [{"train.seed": 0}]


def test_union_keeps_the_first_of_duplicates():
  a = sweep.grid(seeds=(0, 1), **{"model.cross_attention": ["mha"]})
  b = sweep.grid(seeds=(1, 2), **{"model.cross_attention": ["mha"]})
  assert [r["train.seed"] for r in sweep.union(a, b)] == [0, 1, 2]


def test_run_names_are_readable_deterministic_and_unique():
  runs = sweep.grid(seeds=(0, 1), **{"model.cross_attention": ["mha", "mqa"]})
  names = sweep.run_names(runs)
  assert names == ["cross_attention=mha.seed=0", "cross_attention=mha.seed=1",
                   "cross_attention=mqa.seed=0", "cross_attention=mqa.seed=1"]
  assert sweep.run_names(runs) == names
  # The same last component under two sections: the full key.
  assert sweep.run_names([{"train.batch_size": 8, "eval.batch_size": 4}]) == [
      "train.batch_size=8.eval.batch_size=4"]
  # Characters outside [A-Za-z0-9._=-] are replaced; names that then collide get a hash.
  odd = sweep.run_names([{"task.vocab": "a b"}, {"task.vocab": "a_b"}, {"task.vocab": "a/b"}])
  assert len(set(odd)) == 3 and all(set(n) <= set(
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=-") for n in odd)
  long = sweep.run_names([{"optim.learning_rate": 0.001, "task.vocab": "x" * 200}])[0]
  assert len(long) <= sweep.MAX_NAME_LEN and long.startswith("learning_rate=0.001.vocab=xxx")
  assert sweep.run_names([{}]) == ["base"]
  with pytest.raises(config.ConfigError, match="the same overrides twice"):
    sweep.run_names([{"train.seed": 1}, {"train.seed": 1}])


@pytest.mark.parametrize("value", ["mqa", "1", "True", 3, 0.001, True, (1, 2), "a b"])
def test_override_text_reads_back_as_the_same_value(value):
  (arg,) = sweep.override_args({"model.x": value})
  assert config.parse_overrides([arg]) == {"model.x": value}


# --- the command line ---------------------------------------------------------------------------

def test_unknown_sweep_name_lists_the_valid_ones(config_file, tmp_path, capsys):
  code = cli.main(["sweep", "--config", config_file, "--sweep", "nope", "--workdir",
                   str(tmp_path / "s")])
  err = capsys.readouterr().err
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert "unknown sweep 'nope'" in err and "valid: pair, three, typo" in err


def test_a_bad_override_fails_before_any_run_starts(config_file, tmp_path, capsys):
  code = cli.main(["sweep", "--config", config_file, "--sweep", "typo", "--workdir",
                   str(tmp_path / "s")])
  err = capsys.readouterr().err
  assert code == 2 and "run d_modle=8: unknown config key 'model.d_modle'" in err
  assert not (tmp_path / "s").exists()
  code = cli.main(["sweep", "--config", config_file, "--sweep", "pair", "--workdir",
                   str(tmp_path / "s"), "--config.train.num_steps=lots"])
  assert code == 2 and "expects int" in capsys.readouterr().err


def test_local_dry_run_prints_exactly_the_commands(config_file, tmp_path, capsys):
  workdir = tmp_path / "s"
  code = cli.main(["sweep", "--config", config_file, "--sweep", "pair", "--workdir",
                   str(workdir), "--dry-run", "--config.train.num_steps=7"])
  out = capsys.readouterr().out.splitlines()
  assert code == 0
  assert out == [shlex.join([sys.executable, "-m", "encdec", "train", "--config", config_file,
                             "--workdir", str(workdir / f"cross_attention={v}.seed=0"),
                             "--config.train.num_steps=7", f"--config.model.cross_attention={v}",
                             "--config.train.seed=0"]) for v in ("mha", "mqa")]
  assert not workdir.exists()      # a dry run writes nothing


def test_slurm_dry_run_prints_one_sbatch_script_per_run(config_file, tmp_path, capsys):
  workdir = tmp_path / "s"
  code = cli.main(["sweep", "--config", config_file, "--sweep", "pair", "--workdir",
                   str(workdir), "--launcher", "slurm", "--dry-run",
                   "--launcher-args", "--nodes 1 --gpus-per-node 2 --partition gpu"])
  captured = capsys.readouterr()
  assert code == 0
  scripts = captured.out.split("#!/bin/bash\n")[1:]
  assert len(scripts) == 2
  for script, variant in zip(scripts, ("mha", "mqa")):
    name = f"cross_attention={variant}.seed=0"
    assert f"#SBATCH --job-name=pair.{name}\n" in script
    assert "#SBATCH --partition=gpu\n" in script
    assert (f"encdec train --config {config_file} --workdir {workdir / name} "
            f"--config.model.cross_attention={variant} --config.train.seed=0 --distributed auto"
            in script)
    assert f"would write {workdir / 'slurm' / name}.sbatch and run: sbatch" in captured.err
  assert not workdir.exists()


def test_bad_launcher_arguments_fail_before_anything(config_file, tmp_path, capsys):
  code = cli.main(["sweep", "--config", config_file, "--sweep", "pair", "--workdir",
                   str(tmp_path / "s"), "--launcher", "slurm", "--launcher-args", "--nodes 1"])
  assert code == 2 and "bad --launcher-args '--nodes 1' for slurm" in capsys.readouterr().err
  assert not (tmp_path / "s").exists()


def stand_in_for_train(monkeypatch, tmp_path, body: str, extra_args=lambda run: []) -> None:
  """Runs start a script instead of `encdec train` (no training): `body` runs with `path`, the
  run's final evaluation file (writing it marks the run finished), and `sys.argv[2:]`, the
  run's `extra_args`."""
  fake = tmp_path / "fake_train.py"
  fake.write_text("import os, pathlib, sys, time\npath = pathlib.Path(sys.argv[1])\n" + body)
  monkeypatch.setattr(jobs, "local_argv", lambda run: [
      sys.executable, str(fake), str(run.final_eval), *extra_args(run)])


def test_failed_runs_do_not_stop_the_others(config_file, tmp_path, capsys, monkeypatch):
  """Seed 1 fails, the others 'finish'."""
  stand_in_for_train(monkeypatch, tmp_path,
                     "if sys.argv[2] == 'fail': sys.exit(3)\n"
                     "path.parent.mkdir(parents=True); path.write_text('{}')\n",
                     lambda run: ["fail" if run.overrides["train.seed"] == 1 else "ok"])
  workdir = tmp_path / "s"
  argv = ["sweep", "--config", config_file, "--sweep", "three", "--workdir", str(workdir),
          "--jobs", "2"]
  assert cli.main(argv) == 1
  captured = capsys.readouterr()
  assert "3/3 done, 1 failed or incomplete" in captured.out
  assert "2 finished, 0 already finished; not finished: seed=1 (failed, exit 3)" in captured.err
  assert (workdir / "seed=0" / "eval").is_dir() and (workdir / "seed=2" / "eval").is_dir()
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert manifest["runs"] == {"seed=0": {"train.seed": 0}, "seed=1": {"train.seed": 1},
                              "seed=2": {"train.seed": 2}}
  assert manifest["command"] == "encdec " + shlex.join(argv)
  # Again: the two finished runs are skipped, the failed one is retried (from its checkpoints:
  # a part of a run, which the ETA does not take for a whole one).
  (workdir / "seed=1" / "checkpoints").mkdir()
  assert cli.main(argv) == 1
  out = capsys.readouterr().out
  assert out.count("[sweep] skip") == 2 and "start seed=1" in out and "start seed=0" not in out
  assert re.search(r"seed=1 failed \(exit 3\) in \d+s \(resumed\)", out)


def test_cpu_slots_split_the_cpus_into_disjoint_shares():
  assert jobs.cpu_slots([0, 1], 2) == [{0}, {1}]
  assert jobs.cpu_slots([0, 1, 2, 3, 4], 2) == [{0, 1, 2}, {3, 4}]
  assert jobs.cpu_slots([4, 5, 6, 7], 3) == [{4, 5}, {6}, {7}]
  assert jobs.cpu_slots([0, 1], 3) == [] and jobs.cpu_slots([0, 1], 1) == []


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and 2 CPUs")
def test_parallel_runs_are_bound_to_disjoint_cpus_and_the_sweep_shows_its_eta(
    config_file, tmp_path, capsys, monkeypatch):
  """Stand-ins for `encdec train` that overlap in time record the CPUs they may use."""
  stand_in_for_train(monkeypatch, tmp_path,
                     "path.parent.mkdir(parents=True)\n"
                     "path.write_text(' '.join(map(str, sorted(os.sched_getaffinity(0)))))\n"
                     "time.sleep(1)\n")
  workdir = tmp_path / "s"
  assert cli.main(["sweep", "--config", config_file, "--sweep", "three", "--workdir",
                   str(workdir), "--jobs", "2"]) == 0, capsys.readouterr()
  seen = [set(map(int, next((workdir / f"seed={s}" / "eval").iterdir()).read_text().split()))
          for s in (0, 1, 2)]
  ours = set(os.sched_getaffinity(0))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == ours   # the first two ran together
  assert seen[2] in (seen[0], seen[1])                          # the third took a freed share
  out = capsys.readouterr().out
  assert out.count(" on CPUs ") == 3
  assert "1/3 done" in out and "; ETA " in out.split("3/3 done")[0]     # the sweep's ETA


def test_the_sweep_eta_counts_the_runs_in_flight_and_the_jobs():
  # Two at a time; the first run took 100 s, its partner has run 100 s: 45 runs left (the
  # partner included) of 100 s each, 2 at a time, less the partner's 100 s done.
  done = lambda *seconds, resumed=False: [jobs.Outcome("r", "finished", 0, s, resumed)
                                          for s in seconds]
  assert jobs.sweep_eta(done(100.0), [100.0], 45, 2) == pytest.approx((45 * 100 - 100) / 2)
  assert jobs.sweep_eta(done(100.0, 300.0), [], 3, 4) == pytest.approx(3 * 200 / 3)  # < jobs
  assert jobs.sweep_eta(done(50.0), [80.0], 1, 2) == 0.0     # running longer than the mean
  assert jobs.sweep_eta([], [10.0], 5, 2) is None            # nothing finished: no pace yet
  # A run resumed near its end took 20 s of a 100 s run: the pace is the whole runs' only.
  both = done(20.0, resumed=True) + done(100.0)
  assert jobs.sweep_eta(both, [], 4, 2) == pytest.approx(4 * 100 / 2)
  assert jobs.sweep_eta(done(20.0, resumed=True), [], 4, 2) is None  # no whole run's pace yet


@pytest.mark.parametrize("user_cache", [None, "/elsewhere/jax_cache"])
def test_runs_share_a_compilation_cache_in_the_sweep_directory(config_file, tmp_path, capsys,
                                                               monkeypatch, user_cache):
  """A stand-in for `encdec train` records the cache directory it was given."""
  if user_cache:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", user_cache)
  else:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  stand_in_for_train(monkeypatch, tmp_path,
                     "path.parent.mkdir(parents=True)\n"
                     "path.write_text(os.environ['JAX_COMPILATION_CACHE_DIR'])\n")
  workdir = tmp_path / "s"
  assert cli.main(["sweep", "--config", config_file, "--sweep", "three", "--workdir",
                   str(workdir)]) == 0, capsys.readouterr()
  for seed in (0, 1, 2):
    given = next((workdir / f"seed={seed}" / "eval").iterdir()).read_text()
    assert given == (user_cache or str(workdir / jobs.COMPILATION_CACHE))


def test_sigterm_stops_the_running_run_and_starts_no_other(config_file, tmp_path, capsys,
                                                           monkeypatch):
  """The running stand-in gets the SIGTERM (and exits 0, as a preempted `encdec train`)."""
  fake = tmp_path / "fake_train.py"
  fake.write_text("import signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
                  "print('ready', flush=True)\n"
                  "time.sleep(60)\n")
  monkeypatch.setattr(jobs, "local_argv", lambda run: [sys.executable, str(fake)])
  log = tmp_path / "s" / "seed=0" / "train.log"
  def terminate_when_ready():
    deadline = time.monotonic() + 30
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=terminate_when_ready, daemon=True).start()
  start = time.monotonic()
  code = cli.main(["sweep", "--config", config_file, "--sweep", "three", "--workdir",
                   str(tmp_path / "s")])
  assert code == 1 and time.monotonic() - start < 30
  err = capsys.readouterr().err
  assert ("not finished: seed=0 (incomplete), seed=1 (not started), seed=2 (not started)"
          in err)


def test_another_sweep_in_the_same_workdir_is_refused(config_file, tmp_path, capsys,
                                                      monkeypatch):
  monkeypatch.setattr(jobs, "local_argv", lambda run: [sys.executable, "-c", "pass"])
  workdir = str(tmp_path / "s")
  cli.main(["sweep", "--config", config_file, "--sweep", "three", "--workdir", workdir])
  capsys.readouterr()
  assert cli.main(["sweep", "--config", config_file, "--sweep", "pair", "--workdir",
                   workdir]) == 2
  assert "was written for sweep 'three', not 'pair'" in capsys.readouterr().err


def test_batch_dry_run_joins_runs_that_differ_only_in_their_seed(config_file, tmp_path, capsys):
  workdir = tmp_path / "s"
  assert cli.main(["sweep", "--config", config_file, "--sweep", "three", "--workdir",
                   str(workdir), "--dry-run", "--batch", "2", "--config.mesh.data=1"]) == 0
  out = capsys.readouterr().out.splitlines()
  member = lambda seed: str(workdir / f"seed={seed}")
  assert out == [
      shlex.join([sys.executable, "-m", "encdec", "train-batch", "--config", config_file,
                  "--workdir", member(0), "--workdir", member(1), "--seeds", "0,1",
                  "--config.mesh.data=1"]),
      shlex.join([sys.executable, "-m", "encdec", "train", "--config", config_file,
                  "--workdir", member(2), "--config.mesh.data=1", "--config.train.seed=2"])]
  # Other overrides than the seed keep runs apart.
  runs = sweep.plan(config_file, "pair", tmp_path / "p")
  assert sweep.batch_runs(runs, 4, config_file, {}) == runs
  with pytest.raises(config.ConfigError, match="--batch is for --launcher local"):
    sweep.run_sweep(config_file, "three", workdir, batch=2, launcher="slurm")


# --- a real sweep -------------------------------------------------------------------------------

@pytest.mark.slow   # three tiny runs in one process
def test_a_batched_sweep_trains_every_member_and_records_the_batch(config_file, tmp_path, capsys):
  workdir = tmp_path / "sweep"
  argv = ["sweep", "--config", config_file, "--sweep", "three", "--workdir", str(workdir),
          "--batch", "3", "--config.mesh.data=1"]
  assert cli.main(argv) == 0, capsys.readouterr()
  assert all((workdir / f"seed={s}" / "eval" / "test_long-20.json").exists() for s in range(3))
  assert json.loads((workdir / "sweep.json").read_text())["batches"] == [
      ["seed=0", "seed=1", "seed=2"]]
  assert "3 to run (1 at a time), 3 of them in 1 batches" in capsys.readouterr().out
  assert cli.main(argv) == 0
  assert capsys.readouterr().out.count("[sweep] skip") == 3

@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_tiny_sweep_trains_evaluates_and_is_skipped_when_run_again(config_file, tmp_path, capsys):
  workdir = tmp_path / "sweep"
  argv = ["sweep", "--config", config_file, "--sweep", "pair", "--workdir", str(workdir),
          "--jobs", "1"]
  assert cli.main(argv) == 0, capsys.readouterr()
  finals = [workdir / f"cross_attention={v}.seed=0" / "eval" / "test_long-20.json"
            for v in ("mha", "mqa")]
  assert all(p.exists() for p in finals)
  assert json.loads((finals[1].parent.parent / "config.json").read_text())[
      "model"]["cross_attention"] == "mqa"
  assert "2/2 done, 0 failed or incomplete" in capsys.readouterr().out
  mtimes = [p.stat().st_mtime_ns for p in finals]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert out.count("[sweep] skip") == 2 and "0 to run" in out and "[sweep] start" not in out
  assert [p.stat().st_mtime_ns for p in finals] == mtimes


@pytest.mark.parametrize("task", ["g2p_cmudict", "reverse"])
@pytest.mark.parametrize("name", ["variants", "placement"])
def test_the_ablation_study_sweeps_are_valid(tmp_path, task, name):
  spec = f"{ROOT / 'configs' / 'cross_attention_ablation.py'}:task={task}"
  runs = sweep.plan(spec, name, tmp_path)
  assert len({r.name for r in runs}) == len(runs) and len(runs) % 3 == 0
  if name == "variants":
    from encdec import model  # pylint: disable=import-outside-toplevel
    assert {r.overrides["model.cross_attention"] for r in runs} == set(model.CROSS_ATTENTION)
