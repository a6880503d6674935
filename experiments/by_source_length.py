"""Where a variant's difference lies: Δ against the baseline by the length of the source.

    python -m experiments.by_source_length runs/study_v2/variants/g2p_cmudict \\
        --out experiments/results/cross_attention_study_v2/g2p_by_word_length

A sweep's groups as `encdec report` forms them, each tested against the baseline on the main
metric within each bin of source lengths (characters for G2P and the algorithmic tasks, words
for text): the same hierarchical bootstrap (seeds, then the bin's test examples, paired), Holm
over the groups within a bin. It asks, e.g., whether Perceiver latents (a fixed-size summary
of the source) or local-p attention (a window around a predicted position) fall behind on long
words only. Bins: --bins 1-5,6-8,9- (inclusive; an open end), else --quantiles of the lengths.

Writes OUT.md (a row per group, a column per bin) and OUT.png (Δ with its interval per bin).
"""
from __future__ import annotations

import argparse
import pathlib
import re
from typing import Mapping, Sequence

import numpy as np

from encdec import plots
from encdec.data import tasks
from encdec.errors import ConfigError
from encdec.report import render, stats

Bin = tuple[int, int]          # inclusive lengths; the last may be open (a large upper end)
OPEN = 10**9


def length_unit(sweep: stats.Sweep) -> str:
  """Words for text tasks, else characters (G2P words, algorithmic sequences)."""
  family = tasks.build(sweep.baseline.runs[0].cfg.task).metric_family
  return "words" if family == "text" else "characters"


def source_lengths(sources: Sequence[str], unit: str) -> np.ndarray:
  return np.array([len(s.split()) if unit == "words" else len(s) for s in sources])


def parse_bins(text: str) -> list[Bin]:
  """"1-5,6-8,9-" -> [(1, 5), (6, 8), (9, OPEN)]; a ConfigError for any other form."""
  bins = []
  for part in text.split(","):
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d*)\s*", part)
    if not match or (match[2] and int(match[2]) < int(match[1])):
      raise ConfigError(f"--bins: expected LOW-HIGH or LOW- (e.g. 1-5,6-8,9-), got {part!r}")
    bins.append((int(match[1]), int(match[2]) if match[2] else OPEN))
  return bins


def quantile_bins(lengths: np.ndarray, count: int) -> list[Bin]:
  """About `count` bins of lengths holding about as many examples each (fewer where one
  length holds more than a bin's share)."""
  uppers = sorted({int(q) for q in np.quantile(lengths, np.arange(1, count) / count)})
  lows = [int(lengths.min())] + [u + 1 for u in uppers]
  bins = list(zip(lows, uppers + [int(lengths.max())]))
  return [(low, high) for low, high in bins if np.any((lengths >= low) & (lengths <= high))]


def bin_label(b: Bin) -> str:
  low, high = b
  return f"{low}+" if high == OPEN else (f"{low}" if low == high else f"{low}-{high}")


def by_bin(pairs: Mapping[str, stats.Pair], bins: Sequence[Bin], unit: str, reduce,
           resamples: int) -> dict[Bin, tuple[int, float, dict[str, stats.Comparison | None]]]:
  """Bin -> (its test examples, the baseline's metric on them (mean over seeds), group label ->
  its Comparison against the baseline on them, Holm over the groups)."""
  tested = [p for p in pairs.values() if p is not None]
  if not tested:
    raise ConfigError("no group can be tested against the baseline (predictions missing, or "
                      "other test examples)")
  lengths = source_lengths(tested[0][0], unit)
  out = {}
  for low, high in bins:
    keep = np.flatnonzero((lengths >= low) & (lengths <= high))
    if keep.size == 0:
      continue
    subset = {label: p and (p[0], p[1][:, keep], p[2][:, keep]) for label, p in pairs.items()}
    baseline = float(np.mean(reduce(tested[0][1][:, keep].sum(1))))
    out[(low, high)] = (int(keep.size), baseline, stats.test_pairs(subset, reduce, resamples))
  return out


def markdown(sweep: stats.Sweep, unit: str, found, names: Mapping[str, str],
             command: str, image: str) -> str:
  bins = list(found)
  head = " | ".join(f"{bin_label(b)} ({found[b][0]})" for b in bins)
  mdes = [c.mde for b in bins for c in found[b][2].values() if c and c.mde > 0]
  base = " | ".join(f"{found[b][1]:.{render.decimals(min(mdes, default=None))}f}" for b in bins)
  lines = [f"| group | {head} |", "|---|" + "---|" * len(bins),
           f"| {names[sweep.baseline.label]} (baseline: {sweep.metric}) | {base} |"]
  for label in (g.label for g in sweep.groups if g is not sweep.baseline):
    cells = []
    for b in bins:
      c = found[b][2].get(label)
      cells.append("–" if c is None else render.delta_text(c)
                   + (" *" if c.verdict == stats.VERDICTS[0] else ""))
    lines.append(f"| {names[label]} | {' | '.join(cells)} |")
  seeds = min(len(g.runs) for g in sweep.groups)
  better = "lower" if sweep.metric in render.LOWER_IS_BETTER else "higher"
  return "\n".join([
      f"# Δ {sweep.main} against {names[sweep.baseline.label]} by source length ({unit})", "",
      f"Columns: source lengths in {unit} (test examples in the bin). The baseline row is its "
      f"{sweep.metric} on the bin ({better} is better), mean over seeds; the others are Δ "
      "against it with the 95% interval of the hierarchical bootstrap (each group's seeds, "
      "then the bin's test examples, paired), `*`: significant across seeds after Holm over "
      f"the groups within the bin. At least {seeds} seeds per group.", "",
      *lines, "", f"![Δ by source length]({image})", "", "Made by:", "", "```", command,
      "```", ""])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("directory", type=pathlib.Path, help="a sweep directory")
  parser.add_argument("--out", required=True, type=pathlib.Path,
                      help="writes OUT.md and OUT.png")
  parser.add_argument("--metric", help="main metric (default: encdec report's)")
  parser.add_argument("--baseline", help="baseline group (default: encdec report's)")
  parser.add_argument("--bins", help="inclusive length ranges, e.g. 1-5,6-8,9-")
  parser.add_argument("--quantiles", type=int, default=4,
                      help="without --bins: this many bins of about equal size")
  parser.add_argument("--resamples", type=int, default=1000)
  args = parser.parse_args(argv)
  try:
    sweep = stats.load_sweep(args.directory, args.baseline, args.metric)
    if sweep.statistic is None:
      raise ConfigError(f"{sweep.main} cannot be resampled per example")
    unit = length_unit(sweep)
    pairs = stats.load_pairs(sweep.pairs(), sweep.statistic)
    tested = next((p for p in pairs.values() if p is not None), None)
    bins = (parse_bins(args.bins) if args.bins else
            quantile_bins(source_lengths(tested[0], unit), args.quantiles) if tested else [])
    found = by_bin(pairs, bins, unit, sweep.statistic[1], args.resamples)
  except ConfigError as e:
    parser.exit(2, f"by_source_length: error: {e}\n")
  names = plots.short_labels([g.label for g in sweep.groups])
  args.out.parent.mkdir(parents=True, exist_ok=True)
  series = {names[label]: [(c.delta, *c.ci, c.verdict == stats.VERDICTS[0])
                           if (c := found[b][2].get(label)) else None for b in found]
            for label in (g.label for g in sweep.groups if g is not sweep.baseline)}
  image = plots.differences_by_bin(
      series, [f"{bin_label(b)}\n({found[b][0]})" for b in found],
      f"source length, {unit} (test examples)",
      f"Δ {sweep.main} against {names[sweep.baseline.label]} (95% interval)",
      args.out.with_suffix(".png"))
  command = " ".join(["python -m experiments.by_source_length", str(args.directory),
                      f"--out {args.out}", *(f"--{k} {v}" for k, v in
                                              (("metric", args.metric), ("baseline", args.baseline),
                                               ("bins", args.bins), ("quantiles", args.quantiles if not args.bins and args.quantiles != 4 else None)) if v)])
  args.out.with_suffix(".md").write_text(markdown(sweep, unit, found, names, command,
                                                  image.name))
  print(f"wrote {args.out.with_suffix('.md')} and {image}")


if __name__ == "__main__":
  main()
