"""The budget curve that the study's training budget is chosen from: a `budget` sweep
(configs/cross_attention_study_v2.py: one model trained to each of several step counts, each
with its own full schedule), its final test metric per budget, and the smallest budget within
--within points of the best one (the converged quality, as far as the sweep reaches).

    encdec sweep --config configs/cross_attention_study_v2.py:task=g2p_cmudict --sweep budget \
        --workdir runs/study_v2/budget/g2p_cmudict
    python -m experiments.budget_curve runs/study_v2/budget/g2p_cmudict \
        --out experiments/results/cross_attention_study_v2 --hardware "..."

Writes OUT/budget_<task>.md and OUT/budget_<task>.png (final test metric against the budget;
the dev metric during each run). Unfinished runs are left out and named.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
from typing import Mapping, Sequence

from encdec import machine, plots, writers
from encdec.errors import ConfigError
from encdec.report import discovery, render


def train_seconds(rows: Sequence[dict]) -> float:
  """Seconds spent in training steps (compilation included, evaluations not), from a run's
  metrics rows: each logged window's steps ÷ its steps/s."""
  previous, total = 0, 0.0
  for row in (r for r in rows if "train/steps_per_s" in r):
    total += (row["step"] - previous) / row["train/steps_per_s"]
    previous = row["step"]
  return total


def chosen_budget(means: Mapping[int, float], within: float, best: float) -> int:
  """The smallest budget whose mean is within `within` points of the best budget's."""
  return min(b for b, v in means.items() if abs(v - best) <= within)


def flattening_note(means: Mapping[int, float], within: float) -> str:
  """A warning when the last doubling still moved the metric by more than `within`: the best
  budget is then not converged, and the choice is a lower bound."""
  budgets = sorted(means)
  if len(budgets) < 2:
    return ""
  gain = abs(means[budgets[-1]] - means[budgets[-2]])
  if gain <= within:
    return ""
  return (f" The curve has not flattened: the last step up ({budgets[-2]} -> {budgets[-1]}) "
          f"still moved it by {gain:.2f} points, so converged quality lies beyond "
          f"{budgets[-1]} steps and this choice is a lower bound.")


def dev_curves(runs: Sequence[discovery.RunResult], metrics_rows: Mapping[str, list[dict]],
               metric: str) -> dict[str, list[dict]]:
  """Budget label -> its runs' dev curves {step: metric} (`metrics_rows`: run name -> rows)."""
  out: dict[str, list[dict]] = {}
  for run in runs:
    rows = metrics_rows[run.name]
    out.setdefault(f"{run.cfg.train.num_steps} steps", []).append(
        {r["step"]: r[f"eval/{metric}"] for r in rows if f"eval/{metric}" in r})
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("sweep", type=pathlib.Path, help="the --workdir of the budget sweep")
  p.add_argument("--out", type=pathlib.Path, required=True, help="directory of the page")
  p.add_argument("--within", type=float, default=3.0,
                 help="points of the main metric from the best budget (default 3)")
  p.add_argument("--metric", help="main metric (default: wer, bleu or exact_match)")
  p.add_argument("--hardware", default=machine.describe())
  args = p.parse_args(argv)
  manifest, runs = discovery.load_runs(args.sweep)
  finished = sorted((r for r in runs if r.step is not None), key=lambda r: r.cfg.train.num_steps)
  if not finished:
    raise SystemExit(f"budget_curve: no finished run in {args.sweep}; run the sweep first")
  cfg = finished[0].cfg
  split = cfg.eval.final_split
  try:
    metric = discovery.main_metric(finished[0].scores[split], args.metric)
  except ConfigError as e:
    raise SystemExit(f"budget_curve: {e}") from None
  lower = metric in render.LOWER_IS_BETTER
  per_budget: dict[int, list[discovery.RunResult]] = {}
  for run in finished:
    per_budget.setdefault(run.cfg.train.num_steps, []).append(run)
  means = {b: statistics.fmean(r.scores[split][metric] for r in rs) for b, rs in per_budget.items()}
  best = (min if lower else max)(means.values())
  choice = chosen_budget(means, args.within, best)
  metrics_rows = {r.name: writers.read_metrics(r.workdir) for r in finished}

  task = cfg.task.name
  args.out.mkdir(parents=True, exist_ok=True)
  figure = plots.learning_curves({
      f"final {split} {metric} by budget": {"budget": [
          {b: r.scores[split][metric] for b, rs in per_budget.items() for r in rs
           if r.cfg.train.seed == seed} for seed in sorted({r.cfg.train.seed for r in finished})]},
      f"dev {metric} during training": dev_curves(finished, metrics_rows, metric),
  }, args.out / f"budget_{task}.png", xlabel="step")
  rows = [f"| {b} | {render.fmt([r.scores[split][metric] for r in rs])} | "
          f"{(means[b] - best):+.2f} | {len(rs)} | "
          f"{statistics.fmean(train_seconds(metrics_rows[r.name]) for r in rs) / 60:.1f} |"
          for b, rs in sorted(per_budget.items())]
  unfinished = [r.name for r in runs if r.step is None]
  text = "\n".join([
      f"# Budget curve: {task}", "",
      f"Command: `{(manifest or {}).get('command', '')}`; this page: "
      f"`python -m experiments.budget_curve {args.sweep} --out {args.out}`.", "",
      f"- Hardware: {args.hardware}",
      f"- Each budget is its own run with a full warm-up + {cfg.optim.schedule} schedule; "
      f"{split} {metric} at the end (greedy); train minutes exclude evaluations.", "",
      f"| steps | {split} {metric} | vs best | seeds | train minutes |", "|---|---|---|---|---|",
      *rows, "",
      f"The smallest budget within {args.within:g} points of the best ({best:.2f}): "
      f"**{choice} steps** ({means[choice]:.2f}).{flattening_note(means, args.within)}",
      *([f"", f"Unfinished, left out: {', '.join(unfinished)}."] if unfinished else []), "",
      f"![budget curve]({figure.name})", ""])
  page = args.out / f"budget_{task}.md"
  page.write_text(text)
  print(f"wrote {page}")


if __name__ == "__main__":
  main()
