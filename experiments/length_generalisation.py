"""Write the length-generalisation results page from the sweeps of configs/length_generalisation.py.

    for t in reverse add copy sort; do
      encdec sweep --config configs/length_generalisation.py:task=$t --sweep schemes \
          --workdir runs/length_generalisation/$t
    done
    python -m experiments.length_generalisation runs/length_generalisation \
        --out experiments/results/length_generalisation --hardware "..."

For each task directory found (a sweep of `schemes`): exact match on `test` (training lengths),
`test_long` and `test_longer` per position scheme and cross-attention variant (mean ± std over
the finished seeds); each scheme against sinusoidal positions with the same variant, on both
long splits, by a hierarchical paired bootstrap (seeds, then test examples;
encdec.report.stats.paired_bootstrap with resample_seeds) with Holm's correction over every
comparison of the task; and exact match and symbol accuracy (symbols in the right place) by
source length, one line per scheme (mha), as a plot.
Unfinished runs are left out and counted.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import pathlib
from typing import Sequence

import numpy as np

from encdec import machine, plots, predictions_tsv
from encdec.model import schema
from encdec.report import discovery, render, stats

TASKS = ("reverse", "add", "copy", "sort")
SPLITS = ("test", "test_long", "test_longer")
LONG_SPLITS = ("test_long", "test_longer")
REFERENCE = "sinusoidal"
VARIANT_ORDER = ("mha", "local", "none")


def predictions(run: discovery.RunResult, split: str) -> predictions_tsv.Predictions:
  """The run's predictions of `split` (each TSV read once: the table, the tests and the plot
  all use them)."""
  return _read(run.workdir / "eval" / f"{split}-{run.step}-predictions.tsv")


_read = functools.lru_cache(maxsize=None)(predictions_tsv.read)


# Metric name -> (per-example statistics, reduce), as encdec.report.stats resamples them.
METRICS = {"exact match": stats.statistic("exact", "exact_match"),
           "symbol accuracy": stats.statistic("exact", "symbol_accuracy")}


def per_example(runs: Sequence[discovery.RunResult], split: str, metric: str) -> np.ndarray:
  """`metric`'s statistics [seeds, N, 2] on `split` (every run decodes the same sources)."""
  return np.stack([METRICS[metric][0](p)
                   for p in (predictions(r, split) for r in runs)])


def per_seed(runs: Sequence[discovery.RunResult], split: str, metric: str) -> list[float]:
  """`metric` on `split`, one value per run."""
  return [float(v) for v in METRICS[metric][1](per_example(runs, split, metric).sum(1))]


def by_length(runs: Sequence[discovery.RunResult], metric: str) -> list[dict[int, float]]:
  """Per seed, source length (symbols) -> `metric` over the examples of that length in every
  evaluated split."""
  reduce = METRICS[metric][1]
  curves = []
  for run in runs:
    sums: dict[int, np.ndarray] = collections.defaultdict(lambda: np.zeros(2))
    for split in SPLITS:
      p = predictions(run, split)
      for src, row in zip(p.sources, METRICS[metric][0](p)):
        sums[len(src)] += row
    curves.append({n: float(reduce(total)) for n, total in sorted(sums.items())})
  return curves


def key(group: discovery.Group) -> tuple[str, str]:
  """(position scheme, cross-attention variant) of a group."""
  model = group.runs[0].cfg.model
  return model.position_encoding, model.cross_attention


def comparisons(groups: Sequence[discovery.Group], resamples: int
                ) -> dict[tuple[str, str, str, str], stats.Comparison]:
  """(scheme, variant, split, metric) -> the scheme against sinusoidal positions with the same
  variant (stats.compare: hierarchical bootstrap), Holm-adjusted over every comparison of the
  task."""
  by_key = {key(g): g for g in groups}
  raw: dict[tuple[str, str, str, str], stats.Comparison] = {}
  for (scheme, variant), group in by_key.items():
    reference = by_key.get((REFERENCE, variant))
    if scheme == REFERENCE or reference is None:
      continue
    for split in LONG_SPLITS:
      for metric in METRICS:
        raw[scheme, variant, split, metric] = stats.compare(
            per_example(reference.runs, split, metric), per_example(group.runs, split, metric),
            METRICS[metric][1], resamples)
  adjusted = stats.holm({k: c.p_seeds for k, c in raw.items()})
  return {k: dataclasses.replace(c, p_seeds_holm=adjusted[k]) for k, c in raw.items()}


def task_section(task: str, directory: pathlib.Path, out: pathlib.Path, resamples: int) -> str:
  """The markdown of one task: table, significance, plot."""
  _, runs = discovery.load_runs(directory)
  finished = [r for r in runs if r.step is not None and all(
      (r.workdir / "eval" / f"{split}-{r.step}-predictions.tsv").exists() for split in SPLITS)]
  if not finished:
    return f"## {task}\n\nNo finished run yet in `{directory}`.\n"
  groups = discovery.group_runs(finished)
  tests = comparisons(groups, resamples)
  cfg = finished[0].cfg
  lines = [f"## {task}", "",
           f"{len(finished)} of {len(runs)} runs finished; training lengths "
           f"{cfg.task.min_len}-{cfg.task.max_len}, `test_long` {cfg.task.long_min_len}-"
           f"{cfg.task.long_max_len}, `test_longer` {cfg.task.longer_min_len}-"
           f"{cfg.task.longer_max_len} ({'operand digits' if task == 'add' else 'symbols'}), "
           f"{cfg.train.num_steps} steps. Exact match %, mean ± std over seeds (n); Δ [95% CI] "
           "and Holm-adjusted p against sinusoidal positions with the same cross-attention "
           "(hierarchical bootstrap over seeds and test examples, Holm over every test of the "
           "task). Symbol accuracy: the share of output positions holding the right symbol, "
           "the partial credit exact match hides.", "",
           "| positions | cross-attention | n | test | test_long | Δ, p | test_longer | Δ, p | "
           "symbol acc. test_long | Δ, p | symbol acc. test_longer | Δ, p |",
           "|" + "---|" * 12]
  order = lambda g: (VARIANT_ORDER.index(key(g)[1]) if key(g)[1] in VARIANT_ORDER else 99,
                     schema.POSITION_ENCODINGS.index(key(g)[0]))
  for group in sorted(groups, key=order):
    scheme, variant = key(group)
    cells = [render.fmt([r.scores["test"]["exact_match"] for r in group.runs])]
    for metric in METRICS:
      for split in LONG_SPLITS:
        cells += [render.fmt(per_seed(group.runs, split, metric), 1),
                  _delta_p(tests.get((scheme, variant, split, metric)))]
    lines.append(f"| {scheme} | {variant} | {len(group.runs)} | " + " | ".join(cells) + " |")
  mha = [g for g in sorted(groups, key=order) if key(g)[1] == "mha"]
  panels = {f"{task}, mha: {metric} %": {key(g)[0]: by_length(g.runs, metric) for g in mha}
            for metric in METRICS}
  figure = plots.learning_curves(panels, out / f"{task}_by_length.png",
                                 xlabel="source length (symbols)",
                                 xmarks={t: cfg.task.max_src_len for t in panels},
                                 hide_off_scale=False)
  lines += ["", f"![{task} by length]({figure.name})", ""]
  return "\n".join(lines)


def _delta_p(test: stats.Comparison | None) -> str:
  if test is None:
    return ""
  return (f"{test.delta:+.1f} [{test.ci[0]:+.1f}, {test.ci[1]:+.1f}], "
          f"p {render.p_value(test.p_seeds_holm)}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", type=pathlib.Path, help="directory holding one sweep per task")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("experiments/results/length_generalisation"))
  parser.add_argument("--hardware", default="", help="machine the sweeps ran on, for the page")
  parser.add_argument("--resamples", type=int, default=2000)
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  sections = [task_section(t, args.runs / t, args.out, args.resamples)
              for t in TASKS if (args.runs / t).is_dir()]
  page = args.out / "tables.md"
  page.write_text("# Length generalisation: tables (generated)\n\n"
                  f"By `python -m experiments.length_generalisation {args.runs}`; hardware: "
                  f"{args.hardware or machine.describe()}.\n\n" + "\n".join(sections))
  print(f"wrote {page}")


if __name__ == "__main__":
  main()
