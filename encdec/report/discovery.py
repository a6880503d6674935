"""Finding the runs to compare: a sweep's (sweep.json) or any directory's run directories,
their configs and final scores, grouped by their overrides without the seed; the baseline
group and the main metric."""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping, Sequence

from encdec import config as config_lib, sweep
from encdec.errors import ConfigError

SEED_KEY = sweep.SEED_KEY
MAIN_METRICS = ("wer", "bleu", "exact_match")          # the first one present is the default
NOT_METRICS = ("num_examples", "beam_size", "step")


@dataclasses.dataclass
class RunResult:
  name: str
  workdir: pathlib.Path
  overrides: dict[str, Any]
  cfg: Any                                   # ConfigDict of WORKDIR/config.json
  step: int | None                           # step of the final eval (None: not finished)
  scores: dict[str, dict[str, float]]        # split -> metric -> value, at `step`


@dataclasses.dataclass
class Group:
  label: str
  overrides: dict[str, Any]                  # the run overrides without train.seed
  runs: list[RunResult]


def find_runs(directory: pathlib.Path) -> tuple[dict[str, Any] | None, dict[str, dict]]:
  """(sweep.json or None, run name -> overrides), in the sweep's (or name) order."""
  manifest = sweep.read_manifest(directory)
  if manifest is not None:
    return manifest, {name: dict(o) for name, o in manifest["runs"].items()}
  configs = {p.parent.name: json.loads(p.read_text())
             for p in sorted(directory.glob("*/config.json"))}
  if not configs:
    raise ConfigError(f"{directory} holds no sweep.json and no run directories "
                      "(*/config.json); pass the --workdir of `encdec sweep`")
  return None, config_lib.differing_keys(configs)


def final_scores(workdir: pathlib.Path, cfg) -> tuple[int | None, dict[str, dict[str, float]]]:
  """(final step, split -> numeric scores) from WORKDIR/eval/<split>-<step>.json.

  The final step is train.num_steps when the final split was evaluated there (else None);
  every split evaluated at that step is included (e.g. test_long, test-beam4).
  """
  step = cfg.train.num_steps
  if not (workdir / "eval" / f"{cfg.eval.final_split}-{step}.json").exists():
    return None, {}
  scores = {}
  for path in sorted((workdir / "eval").glob(f"*-{step}.json")):
    split = path.name[:-len(f"-{step}.json")]
    scores[split] = {k: float(v) for k, v in json.loads(path.read_text()).items()
                     if isinstance(v, (int, float)) and k not in NOT_METRICS}
  return step, scores


def load_runs(directory: pathlib.Path) -> tuple[dict[str, Any] | None, list[RunResult]]:
  """Every run of the directory with its config and final scores (step None: unfinished)."""
  from encdec import run as run_lib  # pylint: disable=import-outside-toplevel (slow: jax)
  manifest, runs = find_runs(directory)
  out = []
  for name, overrides in runs.items():
    workdir = directory / name
    if not (workdir / "config.json").exists():
      out.append(RunResult(name, workdir, overrides, None, None, {}))
      continue
    cfg = run_lib.load_config(workdir)
    step, scores = final_scores(workdir, cfg)
    out.append(RunResult(name, workdir, overrides, cfg, step, scores))
  return manifest, out


def group_runs(runs: Sequence[RunResult]) -> list[Group]:
  """Runs grouped by their overrides without the seed, in first-seen order."""
  keyed: dict[str, tuple[dict, list[RunResult]]] = {}
  for run in runs:
    overrides = {k: v for k, v in run.overrides.items() if k != SEED_KEY}
    keyed.setdefault(json.dumps(sorted(overrides.items()), default=repr),
                     (overrides, []))[1].append(run)
  values = list(keyed.values())
  labels = sweep.run_names([o for o, _ in values])
  return [Group(label, o, rs) for label, (o, rs) in zip(labels, values)]


def is_standard(group: Group) -> bool:
  """Whether the group's cross-attention is the standard multi-head one (whatever its name)."""
  from encdec import model  # pylint: disable=import-outside-toplevel
  from encdec.model import cross_attention  # pylint: disable=import-outside-toplevel
  name = group.runs[0].cfg.model.cross_attention
  return (name in model.CROSS_ATTENTION
          and model.CROSS_ATTENTION[name] is cross_attention.MultiHeadCrossAttention)


def pick_baseline(groups: Sequence[Group], wanted: str | None) -> Group:
  """The group named `wanted` (or whose model.cross_attention is `wanted`); by default the
  standard multi-head cross-attention group, else the first."""
  if wanted is None:
    return next((g for g in groups if is_standard(g)), groups[0])
  match = ([g for g in groups if g.label == wanted]
           or [g for g in groups if g.runs[0].cfg.model.cross_attention == wanted])
  if not match:
    raise ConfigError(f"unknown --baseline {wanted!r}; valid: "
                      f"{', '.join(g.label for g in groups)} (or a model.cross_attention value)")
  return match[0]


def main_metric(scores: Mapping[str, float], wanted: str | None) -> str:
  """--metric, else the first of wer / bleu / exact_match the split has."""
  if wanted is not None:
    if wanted not in scores:
      raise ConfigError(f"unknown --metric {wanted!r}; valid: {', '.join(sorted(scores))}")
    return wanted
  return next((m for m in MAIN_METRICS if m in scores), sorted(scores)[0])
