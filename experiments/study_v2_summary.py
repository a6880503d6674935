"""The cross-attention study's summary: per task, every variant's difference from standard
multi-head cross-attention on the task's main metric, against its decode cost.

    python -m experiments.study_v2_summary \\
        --sweep "reverse, 17-32 symbols=runs/study_v2/variants/reverse_alibi" \\
        --metric "reverse, 17-32 symbols=symbol_accuracy" \\
        --cost benchmarks/results-variants-cpu-2026-11-30.json \\
        --out experiments/results/cross_attention_study_v2

Each --sweep NAME=DIR is a finished `variants` sweep (runs grouped by variant, several seeds
each); --metric NAME=METRIC picks its main metric (default: `encdec report`'s). The
differences, their 95% intervals and verdicts are `encdec report`'s (the hierarchical
bootstrap over seeds, then test examples; Holm over the variants of a task). The cost is
`benchmarks.variants`'s JSON: beam-4 decode time per token at long sources, the K/V cache per
source token and train speed, each relative to `mha`, measured in one run.

Given two or more sweeps, the page also asks whether a variant's difference depends on the
column (the architecture arm: one sweep per preset, the same test set and metric; columns of
different tasks or metrics are not comparable and are not paired): for each variant and each
pair of such columns, Δ_A − Δ_B with its 95% interval and a two-sided p, Holm-adjusted over all
of them. Both Δs come from the same bootstrap resamples of the test examples (paired; seeds are
resampled within each column), so the interval carries both columns' seed spread.

Writes OUT/variants_summary.md (one row per variant, one column per task) and
OUT/variants_quality_vs_cost.png (one panel per task).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
from typing import Any, Mapping

import numpy as np

from encdec import plots
from encdec.errors import ConfigError
from encdec.report import render, stats

COST = "decode_beam4_tokens_per_s_ratio"      # x: 1 / this = decode time per token vs mha


def task_comparisons(sweep: stats.BaselineTests
                     ) -> tuple[str, int, dict[str, stats.Comparison | None]]:
  """(main metric as split/name, seeds per variant (the fewest), variant -> its Comparison
  against the standard multi-head group) of a finished sweep, tested by `encdec report`."""
  return (sweep.main, min(len(g.runs) for g in sweep.groups),
          {g.runs[0].cfg.model.cross_attention: sweep.tests[g.label] for g in sweep.groups
           if g is not sweep.baseline})


@dataclasses.dataclass(frozen=True)
class Interaction:
  """A variant's Δ against mha in one column minus its Δ in another."""
  delta: float
  ci: tuple[float, float]          # 95% percentile interval of the bootstrap differences
  p: float                         # two-sided
  p_holm: float | None = None      # Holm-adjusted over every interaction on the page


Scored = tuple[str, list[str]]     # (main metric as split/name, the test examples)


def bootstrap_differences(sweep: stats.BaselineTests, resamples: int
                          ) -> tuple[Scored, dict[str, tuple[float, np.ndarray]]] | None:
  """(what was scored, variant -> (observed Δ against mha, Δ of each bootstrap resample [R]))
  of a tested sweep: `encdec report`'s hierarchical bootstrap with its fixed resampling seed,
  so two sweeps on the same examples draw the same examples in each resample. None when a
  predictions file is missing."""
  stat = sweep.statistic
  base = stats.group_stats(sweep.baseline, stat) if stat else None
  if base is None:
    return None
  out = {}
  for group in sweep.groups:
    other = stats.group_stats(group, stat)
    if group is sweep.baseline or other is None or other[0] != base[0]:
      continue
    out[group.runs[0].cfg.model.cross_attention] = stats.bootstrap_deltas(
        base[1], other[1], stat[1], resamples, resample_seeds=True)
  return (sweep.main, base[0]), out


def interactions(columns: Mapping[str, tuple[Scored, dict[str, tuple[float, np.ndarray]]]]
                 ) -> dict[tuple[str, str, str], Interaction]:
  """(variant, column A, column B) -> Δ_A − Δ_B for every variant in both columns of every pair
  of columns that scored the same test examples on the same metric; p two-sided, Holm over all
  of them."""
  out = {}
  for (a, (scored_a, deltas_a)), (b, (scored_b, deltas_b)) in itertools.combinations(
      columns.items(), 2):
    if scored_a != scored_b:
      continue
    for variant in sorted(set(deltas_a) & set(deltas_b)):
      difference = deltas_a[variant][1] - deltas_b[variant][1]                 # [R]
      low, high = np.percentile(difference, [2.5, 97.5])
      out[(variant, a, b)] = Interaction(deltas_a[variant][0] - deltas_b[variant][0],
                                         (float(low), float(high)), stats.two_sided_p(difference))
  adjusted = stats.holm({key: c.p for key, c in out.items()})
  return {key: dataclasses.replace(c, p_holm=adjusted[key]) for key, c in out.items()}


def interaction_lines(found: Mapping[tuple[str, str, str], Interaction]) -> list[str]:
  if not found:
    return []
  lines = ["## Does a variant's difference depend on the column?", "",
           "Δ_A − Δ_B: the variant's Δ against `mha` in column A minus its Δ in column B, with "
           "the 95% interval of the paired bootstrap (the same test examples in each resample, "
           "each column's seeds resampled within it); p two-sided, Holm-adjusted over every "
           "row. A significant row: the variant's difference from `mha` depends on the "
           "column.", "",
           "| variant | A − B | Δ_A − Δ_B [95% interval] | p (Holm) |", "|---|---|---|---|"]
  for (variant, a, b), c in found.items():
    verdict = " significant" if c.p_holm < stats.SIGNIFICANCE else ""
    d = render.decimals((c.ci[1] - c.ci[0]) / 2)       # as a comparison's, from its spread
    low, high = c.ci
    lines.append(f"| {variant} | {a} − {b} | {c.delta:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}] "
                 f"| {render.p_value(c.p_holm)}{verdict} |")
  return lines + [""]


def read_costs(path: pathlib.Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
  """(variant -> its ratios to mha, the run's machine facts) from a benchmarks.variants JSON."""
  result = json.loads(path.read_text())
  if "variants" not in result:
    raise ConfigError(f"{path} is not a benchmarks.variants result (no 'variants' key)")
  return result["variants"], {k: result.get(k) for k in ("date", "cpu_model", "src_len",
                                                         "config", "device_kind")}


def cell(c: stats.Comparison | None) -> str:
  if c is None:
    return "–"
  return f"{render.delta_text(c)} {c.verdict}"


def ratio(costs: Mapping[str, Mapping[str, Any]], variant: str, key: str, invert=False) -> str:
  value = costs.get(variant, {}).get(key)
  if value is None or (invert and value == 0):
    return "–"
  return f"{1 / value if invert else value:.2f}"


def better(main: str) -> str:
  """Which way the main metric (split/name) improves: "lower" or "higher"."""
  return "lower" if main.split("/")[-1] in render.LOWER_IS_BETTER else "higher"


def markdown(tasks: Mapping[str, tuple[str, int, dict]], costs: Mapping[str, Mapping[str, Any]],
             machine: Mapping[str, Any], commands: str,
             found: Mapping[tuple[str, str, str], Interaction]) -> str:
  variants = sorted({v for _, _, c in tasks.values() for v in c})
  head = " | ".join(f"{t}: Δ {main.split('/')[-1]} ({seeds} seeds, {better(main)} is better)"
                    for t, (main, seeds, _) in tasks.items())
  lines = [f"| variant | {head} | beam-4 decode time × mha | K/V cache × mha "
           "| train speed × mha |",
           "|---|" + "---|" * (len(tasks) + 3)]
  for v in variants:
    task_cells = " | ".join(cell(c.get(v)) for _, _, c in tasks.values())
    lines.append(f"| {v} | {task_cells} | {ratio(costs, v, COST, invert=True)} | "
                 f"{ratio(costs, v, 'cache_bytes_per_source_token_ratio')} | "
                 f"{ratio(costs, v, 'train_tgt_tokens_per_s_ratio')} |")
  return "\n".join([
      "# Cross-attention variants against standard multi-head: quality and cost", "",
      "Δ: the variant's main metric minus `mha`'s, mean over seeds, with the 95% interval of "
      "the hierarchical bootstrap (seeds within each variant, then test examples, paired); the "
      "verdict uses the Holm-adjusted p over the task's variants (`encdec report`). Costs: "
      f"`benchmarks.variants` at {machine.get('src_len')}-token sources, config "
      f"`{machine.get('config')}`, {machine.get('cpu_model')} ({machine.get('date')}).", "",
      *lines, "", "![quality against decode cost](variants_quality_vs_cost.png)", "",
      *interaction_lines(found), "Made by:", "", "```", commands, "```", ""])


def named(values: list[str], form: str) -> dict[str, str]:
  """["NAME=VALUE", ...] -> {NAME: VALUE}; a ConfigError for any other form."""
  bad = [v for v in values if "=" not in v]
  if bad:
    raise ConfigError(f"expected {form}, got {bad[0]!r}")
  return dict(v.split("=", 1) for v in values)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", action="append", required=True, metavar="NAME=DIR")
  parser.add_argument("--metric", action="append", default=[], metavar="NAME=METRIC")
  parser.add_argument("--cost", required=True, type=pathlib.Path)
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--resamples", type=int, default=1000)
  args = parser.parse_args(argv)
  try:
    sweeps, metrics = (named(args.sweep, "--sweep NAME=DIR"),
                       named(args.metric, "--metric NAME=METRIC"))
    if set(metrics) - set(sweeps):
      raise ConfigError(f"--metric names no --sweep: {', '.join(set(metrics) - set(sweeps))}")
    tested = {name: stats.against_baseline(pathlib.Path(d), None, metrics.get(name),
                                           args.resamples) for name, d in sweeps.items()}
    tasks = {name: task_comparisons(sweep) for name, sweep in tested.items()}
    costs, machine = read_costs(args.cost)
    differences = {name: bootstrap_differences(sweep, args.resamples)
                   for name, sweep in tested.items()} if len(sweeps) > 1 else {}
    found = interactions({k: v for k, v in differences.items() if v is not None})
  except ConfigError as e:
    parser.exit(2, f"study_v2_summary: error: {e}\n")
  args.out.mkdir(parents=True, exist_ok=True)
  panels = {f"{name}: {main} ({better(main)} is better)": {v: (1 / costs[v][COST], c.delta, *c.ci, c.verdict ==
                                    stats.VERDICTS[0])
                                for v, c in comparisons.items()
                                if c is not None and costs.get(v, {}).get(COST)}
            for name, (main, _, comparisons) in tasks.items()}
  plots.differences_vs_cost(panels, f"beam-4 decode time per token, × mha "
                            f"({machine.get('src_len')}-token sources)",
                            args.out / "variants_quality_vs_cost.png")
  command = "python -m experiments.study_v2_summary " + " ".join(
      [f"--sweep '{s}'" for s in args.sweep] + [f"--metric '{m}'" for m in args.metric]
      + [f"--cost {args.cost}", f"--out {args.out}"])
  (args.out / "variants_summary.md").write_text(markdown(tasks, costs, machine, command, found))
  print(f"wrote {args.out / 'variants_summary.md'} and its figure")


if __name__ == "__main__":
  main()
