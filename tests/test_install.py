"""A non-editable install (a wheel) carries the packaged configs and runs the main command."""
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # builds a wheel, trains in a subprocess (~1.5 min)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """encdec installed from a freshly built wheel into its own directory (dependencies from this
  environment), so nothing is read from the source checkout."""
  tmp = tmp_path_factory.mktemp("wheel")
  source = tmp / "source"     # a copy: building in place would leave build/ in the checkout
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--quiet", "-w", str(tmp / "dist"), str(source)], check=True, timeout=300)
  wheel, = (tmp / "dist").glob("encdec-*.whl")
  target = tmp / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                  str(target), str(wheel)], check=True, timeout=300)
  # PYTHONPATH entries are not site directories: the checkout's editable-install hook (a .pth
  # file in this environment's site-packages) is not run, so `encdec` comes from the wheel.
  env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin",
         "HOME": str(tmp), "ENCDEC_HUGEPAGES": "0", "JAX_PLATFORMS": "cpu"}
  return target, env, tmp


def run(installed, *args, timeout=600):
  _, env, cwd = installed
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                        cwd=cwd, timeout=timeout)


def test_the_wheel_ships_the_configs_and_is_what_runs(installed):
  target, _, _ = installed
  assert (target / "encdec" / "configs" / "g2p_cmudict.py").is_file()
  result = run(installed, "-c", "import encdec, encdec.config as c; print(encdec.__file__); "
               "print(c.load().task.name, c.load('algorithmic:task=sort').task.name)")
  assert result.returncode == 0, result.stderr
  module_file, names = result.stdout.splitlines()
  assert module_file.startswith(str(target)) and names == "g2p_cmudict sort"


def test_the_installed_command_trains_a_packaged_config(installed):
  _, _, cwd = installed
  result = run(installed, "-m", "encdec", "train", "--config", "algorithmic:task=copy",
               "--workdir", str(cwd / "run"), "--config.train.num_steps=2",
               "--config.task.num_eval=8", "--config.checkpoint.async_save=False")
  assert result.returncode == 0, result.stderr[-2000:]
  assert (cwd / "run" / "eval" / "test_long-2.json").is_file()


def test_the_installed_package_plans_a_slurm_sweep(installed):
  """No checkout beside the install (no experiments/, no configs/): the launchers and the
  packaged configs come with the package."""
  target, _, cwd = installed
  assert not (target / "experiments").exists() and (target / "encdec" / "launch" / "slurm.py").exists()
  workdir = cwd / "xattn"
  result = run(installed, "-c", "import encdec, sys; print(encdec.__file__, file=sys.stderr); "
               "from encdec.__main__ import main; sys.exit(main())",
               "sweep", "--config", "cross_attention_ablation:task=reverse", "--sweep", "variants",
               "--workdir", str(workdir), "--launcher", "slurm", "--dry-run",
               "--launcher-args", "--nodes 1 --gpus-per-node 2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.startswith(str(target / "encdec" / "__init__.py"))    # the installed copy
  scripts = result.stdout.split("#!/bin/bash\n")[1:]
  from encdec import model  # pylint: disable=import-outside-toplevel
  assert len(scripts) == 3 * len(model.CROSS_ATTENTION)                        # variants x 3 seeds
  assert "--config.model.cross_attention=latent --config.train.seed=2" in result.stdout
  assert not workdir.exists()
