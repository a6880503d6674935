"""Rendering a report: the markdown results table and page, and the PNG plots beside it."""
from __future__ import annotations

import dataclasses
import datetime
import math
import pathlib
import statistics
from typing import Mapping, Sequence

from encdec import machine, plots, writers
from encdec.report import discovery, speed, stats

LOWER_IS_BETTER = ("wer", "per", "loss", "nll", "perplexity")


@dataclasses.dataclass
class Row:
  """One table row: a group's numbers, each a list over its seeds."""
  group: discovery.Group
  scores: dict[str, list[float]]             # "split/metric" -> per seed
  params: tuple[int, int]
  cache_per_token: float
  train_tps: list[float]
  decode_tps: list[float]


def results_json(rows: Sequence[Row], main: str, baseline: discovery.Group,
                 tests: Mapping[str, stats.Comparison | None], resamples: int) -> dict:
  """The table's numbers, for analysis elsewhere (report.json): per group its overrides, each
  run's final scores ("split/metric" -> value), the accounting, the speeds (per seed measured)
  and its comparison with the baseline (null for the baseline and untested groups)."""
  def comparison(c: stats.Comparison | None) -> dict | None:
    return c and {**dataclasses.asdict(c), "ci": list(c.ci), "verdict": c.verdict}
  return {
      "main": main, "baseline": baseline.label, "resamples": resamples,
      "lower_is_better": main.split("/")[-1] in LOWER_IS_BETTER,
      "groups": {r.group.label: {
          "overrides": r.group.overrides,
          "runs": {run.name: {f"{split}/{key}": value for split, values in run.scores.items()
                              for key, value in values.items()} for run in r.group.runs},
          "params": r.params[0], "cross_attention_params": r.params[1],
          "cache_bytes_per_source_token": r.cache_per_token,
          "train_tokens_per_s": r.train_tps, "decode_tokens_per_s": r.decode_tps,
          "against_baseline": comparison(tests.get(r.group.label))} for r in rows}}


def decimals(scale: float | None, significant: int = 2, least: int = 2, most: int = 5) -> int:
  """Decimals that show a number of size `scale` (e.g. a comparison's MDE) with `significant`
  digits, at least `least`: 2 for WER points, 4 for an NLL difference of 0.003 nats."""
  if not scale or not math.isfinite(scale) or scale <= 0:
    return least
  return min(most, max(least, significant - 1 - math.floor(math.log10(scale))))


def spread(rows: Sequence[Row], column: str) -> float | None:
  """The median over groups of the seeds' standard deviation of a column (None without one):
  the scale its cells need decimals for."""
  stds = [stats.mean_std(v)[1] for r in rows if len(v := r.scores.get(column, [])) > 1]
  stds = [s for s in stds if s > 0]
  return statistics.median(stds) if stds else None


def column_decimals(rows: Sequence[Row], column: str) -> int:
  """Decimals for a column's cells: one digit of its seeds' spread, or, where no group has two
  seeds, three significant digits of its typical value (one run's NLL 0.283, not 0.28)."""
  scale = spread(rows, column)
  if scale is not None:
    return decimals(scale, significant=1)
  values = [abs(v) for r in rows for v in r.scores.get(column, []) if v]
  return decimals(statistics.median(values) if values else None, significant=3)


def delta_text(c: stats.Comparison) -> str:
  """"Δ [low, high]" at the decimals its MDE needs."""
  d = decimals(c.mde)
  return f"{c.delta:+.{d}f} [{c.ci[0]:+.{d}f}, {c.ci[1]:+.{d}f}]"


def fmt(values: Sequence[float], digits: int = 2) -> str:
  """"mean ± std" over seeds ("mean" alone for one value, "n/a" for none)."""
  if not values:
    return "n/a"
  mean, std = stats.mean_std(values)
  return f"{mean:,.{digits}f}" + (f" ± {std:,.{digits}f}" if len(values) > 1 else "")


def p_value(p: float | None) -> str:
  """A p for a table; "n/a" where none was computed (stats.MIN_SEEDS)."""
  if p is None:
    return "n/a"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def table(rows: Sequence[Row], columns: Sequence[str], main: str, baseline: discovery.Group,
          tests: Mapping[str, stats.Comparison | None]) -> str:
  """The markdown results table; `*` marks a main metric whose difference from the baseline's
  is significant across seeds (Holm-adjusted hierarchical bootstrap, p < stats.SIGNIFICANCE)."""
  head = ["group", "seeds", *columns, f"Δ {main} [95% CI]", "p seeds (Holm)", "p examples",
          "verdict", "MDE", "params", "cross-attn params", "K/V cache B / src token",
          "train tok/s", "decode tok/s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  digits = {column: column_decimals(rows, column) for column in columns}
  for row in rows:
    test = tests.get(row.group.label)
    cells = []
    for column in columns:
      values = row.scores.get(column, [])
      cell = fmt(values, digits[column])
      if 0 < len(values) < len(row.group.runs):   # e.g. a metric older runs did not record
        cell += f" ({len(values)} of {len(row.group.runs)} seeds)"
      if column == main and test is not None and test.verdict == stats.VERDICTS[0]:
        cell += " *"
      cells.append(cell)
    if row.group is baseline:
      reading = ["(baseline)", "", "", "", ""]
    elif test is None:
      reading = ["n/a"] * 5
    else:
      reading = [delta_text(test),
                 p_value(test.p_seeds if test.p_seeds_holm is None else test.p_seeds_holm),
                 p_value(test.p_examples), test.verdict, f"{test.mde:.{decimals(test.mde)}f}"]
    label = f"**{row.group.label}**" if row.group is baseline else row.group.label
    lines.append("| " + " | ".join([
        label, str(len(row.group.runs)), *cells, *reading, f"{row.params[0]:,}",
        f"{row.params[1]:,}", f"{row.cache_per_token:,.0f}", fmt(row.train_tps, 0),
        fmt(row.decode_tps, 0)]) + " |")
  return "\n".join(lines)


def curves(group: discovery.Group, key: str) -> list[dict[int, float]]:
  """Per seed: step -> `key` from metrics.jsonl (the last value of a step logged twice)."""
  out = []
  for run in group.runs:
    rows = writers.read_metrics(run.workdir) if (run.workdir / "metrics.jsonl").exists() else []
    out.append({r["step"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))})
  return out


def make_plots(directory: pathlib.Path, rows: Sequence[Row], main: str, baseline: discovery.Group
               ) -> list[tuple[str, str]]:
  """Write the PNGs; (caption, file name) of each."""
  groups = [r.group for r in rows]
  metric_name = main.split("/", 1)[1]
  panels = {"train loss": {g.label: curves(g, "train/loss") for g in groups}}
  dev = {g.label: curves(g, f"eval/{metric_name}") for g in groups}
  if any(any(c) for cs in dev.values() for c in cs):
    panels[f"dev {metric_name} (periodic eval)"] = dev
  out = [("Learning curves: mean over seeds, band = min–max over seeds",
          plots.learning_curves(panels, directory / "learning_curves.png").name)]
  seeds = {r.group.label: r.scores[main] for r in rows if r.scores.get(main)}
  out.append((f"{main} per group: each seed (dots), mean ± std over seeds (diamonds; hollow and "
              "dashed across: the baseline)",
              plots.metric_points(seeds, main, directory / "main_metric.png",
                                  baseline=baseline.label).name))
  points = {r.group.label: (*stats.mean_std(r.decode_tps), *stats.mean_std(r.scores[main]))
            for r in rows if r.decode_tps and r.scores.get(main)}
  if points:
    out.append((f"{main} vs decode speed (error bars: std over seeds)",
                plots.quality_vs_speed(points, "decode tokens/s", main,
                                       directory / "quality_vs_speed.png").name))
  return out


def markdown(title: str, command: str, rows: Sequence[Row], columns: Sequence[str], main: str,
             baseline: discovery.Group, tests, unfinished: Sequence[str], figures, resamples: int,
             jobs_note: str) -> str:
  direction = "lower" if main.split("/")[-1] in LOWER_IS_BETTER else "higher"
  lines = [f"# {title}", "",
           f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} on {machine.describe()}.",
           ""]
  if command:
    lines += ["Sweep command:", "", "```bash", command, "```", ""]
  lines += [f"{sum(len(r.group.runs) for r in rows)} finished runs in {len(rows)} groups "
            f"(a group = the runs' overrides without `{discovery.SEED_KEY}`). Main metric: "
            f"`{main}` ({direction} is better); baseline: **{baseline.label}**.", ""]
  if unfinished:
    lines += [f"Not finished (left out): {', '.join(unfinished)}.", ""]
  lines += ["## Results", "", table(rows, columns, main, baseline, tests), "",
            "Cells are mean ± sample standard deviation over seeds. Δ is group − baseline on "
            "the full test set (each group's metric averaged over its seeds). Significance: a "
            f"two-level (hierarchical) paired bootstrap, {resamples} resamples (seed 0): each "
            "resample draws each group's seeds with replacement, then the test examples with "
            "replacement (the same examples for both groups), recomputes each drawn seed's "
            "metric from the per-example statistics of its predictions TSV and averages over "
            "the drawn seeds. It asks whether other seeds would show the difference. The "
            "95% CI is the percentile interval of the resampled Δ; p = 2·min(P(Δ* ≤ 0), "
            "P(Δ* ≥ 0)), Holm-adjusted over every group compared with the baseline. "
            "`p examples`: the same bootstrap over test examples only, the trained models "
            f"fixed (test-set noise alone; not Holm-adjusted). Verdict: *{stats.VERDICTS[0]}* "
            f"(`*`; Holm p < {stats.SIGNIFICANCE}), *{stats.VERDICTS[1]}* (only the "
            f"example-level p < {stats.SIGNIFICANCE}: these models differ on this test set, "
            f"other seeds may not), or *{stats.VERDICTS[2]}*. MDE: the smallest |Δ| this "
            f"seed count and test set detect with 80% power at {stats.SIGNIFICANCE}, "
            f"{stats.MDE_STANDARD_ERRORS:.1f} × the bootstrap standard error of Δ. The "
            "hierarchical test is conservative when seeds vary little "
            "(tests/test_report.py simulates its calibration).", "",
            "Parameters: all, and those of modules named `cross_attention`. K/V cache: "
            "decode-time cache bytes per source token per sequence, all layers (the variant's "
            "own account, from the model config). train tok/s: target tokens per second, "
            "median of the logged windows after the first. decode tok/s: greedy decoding of "
            "the first "
            f"{speed.SPEED_BATCH} test sources for exactly decode_max_len steps, best of "
            f"{speed.SPEED_REPEATS} after a warm-up, cached in each run's `{speed.SPEED_FILE}`. "
            f"Speeds depend on what else ran on the machine{jobs_note}.", ""]
  lines += ["## Plots", ""]
  for caption, name in figures:
    lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
  return "\n".join(lines)
