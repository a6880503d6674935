"""Statistics over seeds and test examples: mean ± sample std over a group's seeds, and paired
bootstraps (per-example statistics from the predictions TSVs, so corpus metrics such as PER and
BLEU are recomputed exactly) for Δ against the baseline: a hierarchical one that resamples seeds
and test examples (would other seeds show the difference?), with a 95% interval, Holm's
correction over the comparisons and the minimum detectable effect; and one over test examples
alone (the trained models fixed), as a secondary reading."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import statistics
from typing import Callable, Mapping, Sequence

import numpy as np

from encdec import metrics as metrics_lib
from encdec import predictions_tsv
from encdec.errors import ConfigError
from encdec.report import discovery

SIGNIFICANCE = 0.05
# |Δ| detectable with 80% power by a two-sided test at SIGNIFICANCE: (z_0.975 + z_0.8) standard
# errors of Δ, the standard error read from the hierarchical bootstrap.
MDE_STANDARD_ERRORS = 1.960 + 0.842
VERDICTS = ("significant across seeds", "only across test examples", "not significant")
# Seeds each group needs before the hierarchical test can speak of seeds. With one, resampling
# seeds changes nothing and the test is the example-only one (in tests/test_report.py's
# simulation, with seeds that matter and no true difference, both reject 21% of studies at
# 1 seed; the hierarchical test 5% at 2 seeds and 4.5% at 3).
MIN_SEEDS = 2


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample standard deviation; 0 for a single value)."""
  values = [float(v) for v in values]
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def predictions_path(run: discovery.RunResult) -> pathlib.Path:
  return run.workdir / "eval" / f"{run.cfg.eval.final_split}-{run.step}-predictions.tsv"


# A per-example statistic: a predictions TSV --> float [N, K] (None where the TSV lacks what it
# needs); and summed stats [..., K] --> the metric [...]. Resampling examples sums the rows of
# the resample, so corpus metrics (PER, BLEU, perplexity) are recomputed exactly, not averaged
# per sentence.
Statistic = tuple[Callable[[predictions_tsv.Predictions], np.ndarray | None],
                  Callable[[np.ndarray], np.ndarray]]


def ratio(sums: np.ndarray) -> np.ndarray:
  """Summed [numerator, denominator] statistics --> their ratio (e.g. errors / examples)."""
  return sums[..., 0] / sums[..., 1]


def _g2p_stats(tsv: predictions_tsv.Predictions) -> np.ndarray:
  """[word error %, 1, phoneme edits %, reference phonemes] per example (metrics.g2p_metrics)."""
  # pylint: disable=protected-access (the PER rule of metrics.g2p_metrics, per example)
  rows = []
  for pred, example_refs in zip(tsv.predictions, tsv.refs):
    hyp, ref_tokens = pred.split(), [r.split() for r in example_refs]
    dist, ref_len = metrics_lib._closest_reference(hyp, ref_tokens)
    rows.append([100.0 * (hyp not in ref_tokens), 1.0, 100.0 * dist, ref_len])
  return np.array(rows, float)


def _sacrebleu_statistic(metric: str, signature: str) -> Statistic:
  """BLEU / chrF from sacrebleu's per-sentence sufficient statistics."""
  # pylint: disable=protected-access (sacrebleu's corpus_score is these two steps)
  import sacrebleu  # pylint: disable=import-outside-toplevel
  tok = re.search(r"tok:([^|]+)", signature)
  scorer = (sacrebleu.BLEU(tokenize=tok.group(1) if tok else None) if metric == "bleu"
            else sacrebleu.CHRF())

  def stats(tsv: predictions_tsv.Predictions):
    width = max(len(r) for r in tsv.refs)
    streams = [[r[i] if i < len(r) else None for r in tsv.refs] for i in range(width)]
    return np.array(scorer._extract_corpus_statistics(list(tsv.predictions), streams), float)

  def reduce(sums):
    flat = sums.reshape(-1, sums.shape[-1])
    scores = [scorer._compute_score_from_stats([int(round(x)) for x in row]).score
              for row in flat]
    return np.array(scores).reshape(sums.shape[:-1])
  return stats, reduce


def statistic(family: str, metric: str, signature: str = "") -> Statistic | None:
  """How to resample `metric` of a task's metric family; None where it is not supported."""
  exact = (lambda t: np.array([[100.0 * (x in refs), 1.0]
                               for x, refs in zip(t.predictions, t.refs)]), ratio)
  symbols = (lambda t: np.array([[100.0 * max(metrics_lib.symbol_accuracy(x, y) for y in ys),
                                  1.0] for x, ys in zip(t.predictions, t.refs)]), ratio)
  table: dict[tuple[str, str], Statistic] = {
      ("exact", "exact_match"): exact,
      ("exact", "symbol_accuracy"): symbols,
      ("g2p", "wer"): (_g2p_stats, ratio),
      ("g2p", "exact_match"): (_g2p_stats, lambda s: 100.0 - ratio(s)),
      ("g2p", "per"): (_g2p_stats, lambda s: s[..., 2] / s[..., 3]),
  }
  if family == "text" and metric in ("bleu", "chrf"):
    return _sacrebleu_statistic(metric, signature)
  if metric in ("nll", "perplexity"):     # any task: the references' NLL per token (nats)
    nll = lambda t: t.reference_nll                                        # [N, 2] or None
    return (nll, ratio) if metric == "nll" else (nll, lambda s: np.exp(ratio(s)))
  return table.get((family, metric))


def bootstrap_deltas(baseline: np.ndarray, other: np.ndarray,
                     reduce: Callable[[np.ndarray], np.ndarray], resamples: int = 1000,
                     seed: int = 0, resample_seeds: bool = False) -> tuple[float, np.ndarray]:
  """(observed Δ = other − baseline, Δ of each of `resamples` paired bootstrap resamples [R]).

  `baseline` / `other`: per-example statistics [seeds, N, K] of two groups on the same N
  examples. Each resample draws N examples with replacement (the same ones for both groups);
  a group's metric is `reduce` of its summed statistics, averaged over its seeds. With
  `resample_seeds`, each resample also draws each group's seeds with replacement (a
  hierarchical bootstrap: training runs, then test examples), so Δ* carries the spread over
  training seeds as well as the test set's; without, the trained models are held fixed.
  """
  n = baseline.shape[1]
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)  # [R, N]

  def seed_picks(stats: np.ndarray) -> np.ndarray:                               # [R, S]
    s = stats.shape[0]
    if resample_seeds:
      return rng.integers(0, s, size=(resamples, s))
    return np.broadcast_to(np.arange(s), (resamples, s))

  def value(stats: np.ndarray, c: np.ndarray, picks: np.ndarray) -> np.ndarray:  # [R]
    per_seed = reduce(np.einsum("rn,snk->rsk", c, stats))                        # [R, S]
    return np.take_along_axis(per_seed, picks, axis=1).mean(-1)

  every_seed = lambda stats: np.arange(stats.shape[0])[None]                     # [1, S]
  ones = np.ones((1, n))
  observed = float(value(other, ones, every_seed(other))[0]
                   - value(baseline, ones, every_seed(baseline))[0])
  deltas = (value(other, counts, seed_picks(other))
            - value(baseline, counts, seed_picks(baseline)))                    # [R]
  return observed, deltas


def two_sided_p(deltas: np.ndarray) -> float:
  """p = 2 · min(P(Δ* ≤ 0), P(Δ* ≥ 0)) of a bootstrap distribution, capped at 1."""
  return float(min(1.0, 2.0 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))


def paired_bootstrap(baseline: np.ndarray, other: np.ndarray,
                     reduce: Callable[[np.ndarray], np.ndarray], resamples: int = 1000,
                     seed: int = 0, resample_seeds: bool = False) -> tuple[float, float]:
  """(observed Δ, two-sided p) of `bootstrap_deltas` (same arguments)."""
  observed, deltas = bootstrap_deltas(baseline, other, reduce, resamples, seed, resample_seeds)
  return observed, two_sided_p(deltas)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A group against the baseline on the main metric."""
  delta: float                     # other − baseline on the full test set, mean over seeds
  ci: tuple[float, float]          # 95% percentile interval of Δ, hierarchical bootstrap
  p_seeds: float | None            # hierarchical bootstrap (seeds, then examples); None
                                   # with fewer than MIN_SEEDS seeds in a group
  p_examples: float                # examples only, the trained models fixed
  mde: float                       # |Δ| detectable at 80% power (MDE_STANDARD_ERRORS × SE)
  p_seeds_holm: float | None = None  # p_seeds after Holm's correction over all comparisons

  @property
  def verdict(self) -> str:
    p_seeds = self.p_seeds if self.p_seeds_holm is None else self.p_seeds_holm
    if p_seeds is not None and p_seeds < SIGNIFICANCE:
      return VERDICTS[0]
    return VERDICTS[1] if self.p_examples < SIGNIFICANCE else VERDICTS[2]


def compare(baseline: np.ndarray, other: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray],
            resamples: int = 1000, seed: int = 0) -> Comparison:
  """Both bootstraps of `other` against `baseline` (per-example statistics [seeds, N, K]);
  no p across seeds unless both groups have MIN_SEEDS."""
  delta, deltas = bootstrap_deltas(baseline, other, reduce, resamples, seed, resample_seeds=True)
  _, p_examples = paired_bootstrap(baseline, other, reduce, resamples, seed)
  low, high = np.percentile(deltas, [2.5, 97.5])
  seeded = min(len(baseline), len(other)) >= MIN_SEEDS
  return Comparison(delta, (float(low), float(high)), two_sided_p(deltas) if seeded else None,
                    p_examples, MDE_STANDARD_ERRORS * float(np.std(deltas, ddof=1)))


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
  """Holm-Bonferroni adjusted p-values: the family-wise error of all the comparisons together
  stays below the level they are read at. None (not tested) stays None."""
  tested = sorted((p, key) for key, p in pvalues.items() if p is not None)
  out: dict[str, float | None] = {key: None for key in pvalues}
  running = 0.0
  for rank, (p, key) in enumerate(tested):
    running = max(running, min(1.0, (len(tested) - rank) * p))
    out[key] = running
  return out


def group_stats(group: discovery.Group, stat: Statistic) -> tuple[list[str], np.ndarray] | None:
  """(sources, per-example statistics [seeds, N, K]) of a group; None if any TSV is missing
  or lacks the statistic's columns, or the seeds decoded different examples."""
  sources, rows = None, []
  for run in group.runs:
    path = predictions_path(run)
    if not path.exists():
      return None
    tsv = predictions_tsv.read(path)
    per_example = stat[0](tsv)
    if per_example is None or (sources is not None and tsv.sources != sources):
      return None
    sources = tsv.sources
    rows.append(per_example)
  return sources, np.stack(rows)


def main_statistic(run: discovery.RunResult, metric: str | None
                   ) -> tuple[str, str, Statistic | None]:
  """(final split, main metric name, how to resample it or None) of a finished run: --metric,
  else the first of wer / bleu / exact_match; BLEU with the run's own sacrebleu signature."""
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel (slow: the builders)
  split = run.cfg.eval.final_split
  name = discovery.main_metric(run.scores[split], metric)
  signature = json.loads((run.workdir / "eval" / f"{split}-{run.step}.json").read_text()).get(
      "bleu_signature", "")
  return split, name, statistic(tasks.build(run.cfg.task).metric_family, name, signature)


# A tested pair: (the test examples' sources, per-example statistics [seeds, N, K] of the first
# group, of the second); None where it cannot be tested.
Pair = tuple[list[str], np.ndarray, np.ndarray] | None


def load_pairs(pairs: Mapping[str, tuple[discovery.Group, discovery.Group]], stat: Statistic
               ) -> dict[str, Pair]:
  """Label -> the Pair of two groups' per-example statistics; None where a predictions TSV is
  missing or the groups decoded different examples. Each group's TSVs are read once."""
  per_group: dict[int, tuple[list[str], np.ndarray] | None] = {}   # id(group) -> group_stats

  def examples(group: discovery.Group):
    if id(group) not in per_group:
      per_group[id(group)] = group_stats(group, stat)
    return per_group[id(group)]

  out: dict[str, Pair] = {}
  for label, (first, second) in pairs.items():
    a, b = examples(first), examples(second)
    out[label] = (a[0], a[1], b[1]) if a is not None and b is not None and a[0] == b[0] else None
  return out


def test_pairs(pairs: Mapping[str, Pair], reduce: Callable[[np.ndarray], np.ndarray],
               resamples: int) -> dict[str, Comparison | None]:
  """Label -> the Comparison of a pair's second group against its first, Holm-adjusted over
  every tested pair; None for an untested pair."""
  out = {label: pair and compare(pair[1], pair[2], reduce, resamples)
         for label, pair in pairs.items()}
  adjusted = holm({label: c.p_seeds if c else None for label, c in out.items()})
  return {label: c and dataclasses.replace(c, p_seeds_holm=adjusted[label])
          for label, c in out.items()}


def paired_tests(pairs: Mapping[str, tuple[discovery.Group, discovery.Group]],
                 stat: Statistic | None, resamples: int) -> dict[str, Comparison | None]:
  """Label -> the Comparison of a pair's second group against its first on the main metric
  (`stat`: main_statistic's), Holm-adjusted over every tested pair; None where it cannot be
  tested (a predictions TSV missing, or the groups decoded different examples)."""
  if stat is None:
    return {label: None for label in pairs}
  return test_pairs(load_pairs(pairs, stat), stat[1], resamples)


@dataclasses.dataclass
class Sweep:
  """A sweep directory's finished runs grouped, with its baseline group and main metric."""
  manifest: dict | None                      # DIR/sweep.json, None for a plain directory
  groups: list[discovery.Group]              # finished runs only
  unfinished: list[str]                      # names of the runs without a final evaluation
  baseline: discovery.Group
  split: str                                 # the final split
  metric: str                                # the main metric
  statistic: Statistic | None                # how to resample it; None: it cannot be

  @property
  def main(self) -> str:
    return f"{self.split}/{self.metric}"

  def pairs(self) -> dict[str, tuple[discovery.Group, discovery.Group]]:
    """Group label -> (baseline, group) for every other group."""
    return {g.label: (self.baseline, g) for g in self.groups if g is not self.baseline}


@dataclasses.dataclass
class BaselineTests(Sweep):
  """A Sweep with every group tested against the baseline."""
  tests: dict[str, Comparison | None]        # group label -> against the baseline (its own: None)


def load_sweep(directory: pathlib.Path, baseline: str | None = None,
               metric: str | None = None) -> Sweep:
  """Group DIR's finished runs, pick the baseline group (`baseline`: its label, else the
  standard one) and the main metric."""
  manifest, runs = discovery.load_runs(directory)
  finished = [r for r in runs if r.step is not None]
  if not finished:
    raise ConfigError(f"no finished run in {directory} (a finished run has "
                      "eval/<final_split>-<num_steps>.json); run `encdec sweep` first")
  groups = discovery.group_runs(finished)
  base = discovery.pick_baseline(groups, baseline)
  split, name, stat = main_statistic(base.runs[0], metric)
  return Sweep(manifest, groups, [r.name for r in runs if r.step is None], base, split, name,
               stat)


def against_baseline(directory: pathlib.Path, baseline: str | None = None,
                     metric: str | None = None, resamples: int = 1000) -> BaselineTests:
  """`load_sweep`, then every other group tested against the baseline."""
  sweep = load_sweep(directory, baseline, metric)
  tests = paired_tests(sweep.pairs(), sweep.statistic, resamples)
  return BaselineTests(**vars(sweep), tests={g.label: tests.get(g.label) for g in sweep.groups})
