"""`encdec report DIR`: compare the runs of a sweep in DIR/report.md, with PNG plots beside it.

DIR is a sweep directory (DIR/sweep.json from `encdec sweep`, one run directory per run) or any
directory whose subdirectories are run directories (config.json); then a run's overrides are the
config keys that differ between the runs. Runs are grouped by their overrides without
`train.seed` (a variant); every number in the table is the mean ± sample standard deviation
(ddof 1) over a group's seeds. Columns:

- final metrics of every split evaluated at the last step (WORKDIR/eval/<split>-<step>.json);
- Δ and p of the main metric against the baseline group: a paired bootstrap over test examples
  (per-example statistics from the predictions TSVs, each group's metric averaged over its
  seeds, two-sided);
- parameters, total and in modules whose path has a component containing "cross_attention";
- decode-time K/V cache bytes per source token (from `jax.eval_shape` of `decoding.init_cache`
  at two source lengths: the difference in bytes over the difference in length);
- train target tokens/s (median of the logged `train/tokens_per_s` windows, the first one,
  which includes compilation, left out);
- decode tokens/s: greedy decoding of a fixed batch of test sources for exactly
  decode_max_len steps, best of a few repeats after a warm-up, measured once per run and
  cached in WORKDIR/decode_speed.json.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform
import re
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import logging

from encdec import metrics as metrics_lib, plots, sweep, writers
from encdec.config import ConfigError

SEED_KEY = sweep.SEED_KEY
MAIN_METRICS = ("wer", "bleu", "exact_match")          # the first one present is the default
LOWER_IS_BETTER = ("wer", "per", "loss", "nll", "perplexity")
NOT_METRICS = ("num_examples", "beam_size", "step")
SPEED_FILE = "decode_speed.json"
SPEED_BATCH = 32
SPEED_REPEATS = 3
SIGNIFICANCE = 0.05
REPORT = "report.md"


# ------------------------------------------------------------------------------ the runs
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


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differing_keys(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Run name -> the flattened config keys whose values differ between the runs."""
  flat = {name: _flatten(c) for name, c in configs.items()}
  keys = list(dict.fromkeys(k for f in flat.values() for k in f))
  varying = [k for k in keys
             if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]
  return {name: {k: f.get(k) for k in varying} for name, f in flat.items()}


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
  return None, differing_keys(configs)


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


def pick_baseline(groups: Sequence[Group], wanted: str | None) -> Group:
  """The group named `wanted` (or whose model.cross_attention is `wanted`); by default the
  mha group, else the first."""
  def variant(g):
    return g.runs[0].cfg.model.cross_attention
  if wanted is None:
    return next((g for g in groups if variant(g) == "mha"), groups[0])
  match = [g for g in groups if g.label == wanted] or [g for g in groups if variant(g) == wanted]
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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample standard deviation; 0 for a single value)."""
  values = [float(v) for v in values]
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# -------------------------------------------------------------------- model measurements
@functools.lru_cache(maxsize=None)
def _model(model_json: str, task_json: str):
  """(module, abstract params) of a run's model config: nothing is computed."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from encdec import model  # pylint: disable=import-outside-toplevel
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel
  from encdec import assembly  # pylint: disable=import-outside-toplevel
  model_cfg = ml_collections.ConfigDict(json.loads(model_json))
  module = model.build(assembly.model_config(model_cfg, tasks.build(json.loads(task_json))))
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = jax.eval_shape(
      lambda: nn.unbox(module.init(jax.random.key(0), tokens, tokens)["params"]))
  return module, params


def _model_of(cfg):
  return _model(json.dumps(cfg.model.to_dict(), sort_keys=True),
                json.dumps(cfg.task.to_dict(), sort_keys=True))


def param_counts(cfg) -> tuple[int, int]:
  """(all parameters, those under a module whose name contains "cross_attention")."""
  import jax  # pylint: disable=import-outside-toplevel
  _, params = _model_of(cfg)
  total = cross = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    total += leaf.size
    if any("cross_attention" in str(getattr(k, "key", k)) for k in path):
      cross += leaf.size
  return total, cross


def cache_bytes(cfg, src_len: int, max_len: int = 4) -> int:
  """Bytes of the decoding cache (all layers) for one source of `src_len` tokens."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from encdec import decoding  # pylint: disable=import-outside-toplevel
  module, params = _model_of(cfg)
  cache = jax.eval_shape(lambda p, s: decoding.init_cache(module, {"params": p}, s, max_len),
                         params, jax.ShapeDtypeStruct((1, src_len), jnp.int32))
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(cache))


def cache_bytes_per_source_token(cfg) -> float:
  """Decode-time cache bytes that grow with the source, per source token (any variant)."""
  long = min(32, cfg.model.max_len)
  short = long // 2
  return (cache_bytes(cfg, long) - cache_bytes(cfg, short)) / (long - short)


def train_tokens_per_s(workdir: pathlib.Path) -> float | None:
  """Median of the logged train/tokens_per_s windows after the first (which compiles)."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  rates = [r["train/tokens_per_s"] for r in writers.read_metrics(workdir)
           if isinstance(r.get("train/tokens_per_s"), (int, float))]
  rates = rates[1:] or rates
  return float(statistics.median(rates)) if rates else None


def measure_decode_speed(workdir: pathlib.Path, split: str, batch_size: int = SPEED_BATCH,
                         repeats: int = SPEED_REPEATS) -> dict[str, Any]:
  """Greedy decoding of the first `batch_size` sources of `split` for exactly decode_max_len
  steps (EOS ignored, so every variant decodes the same number of tokens): best of `repeats`
  timed calls after a compiling warm-up."""
  import jax  # pylint: disable=import-outside-toplevel
  from encdec import decoding, run as run_lib  # pylint: disable=import-outside-toplevel
  from encdec.data import pipeline  # pylint: disable=import-outside-toplevel
  from encdec import assembly  # pylint: disable=import-outside-toplevel
  run = run_lib.load(workdir)
  batches = pipeline.eval_batches(run.task, run.cfg.task, split, batch_size=batch_size)
  src, _ = next(batches)                                                    # [B, S]
  batches.close()
  src = jax.device_put(src)
  max_len = assembly.decode_max_len(run.cfg, src.shape[1])
  decode = lambda: decoding.greedy(run.module, {"params": run.params}, src, max_len,
                                   eos_id=-1).block_until_ready()
  decode()                                                                  # compile
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    decode()
    seconds.append(time.perf_counter() - start)
  return {"step": run.step, "split": split, "batch_size": batch_size,
          "source_length": int(src.shape[1]), "max_len": max_len, "seconds": min(seconds),
          "tokens_per_s": batch_size * max_len / min(seconds),
          "device": jax.devices()[0].device_kind}


def decode_tokens_per_s(run: RunResult, measure: bool) -> float | None:
  """The run's cached decode speed at its final step; measured (and cached) if missing."""
  path = run.workdir / SPEED_FILE
  split = run.cfg.eval.final_split
  if path.exists():
    cached = json.loads(path.read_text())
    if (cached.get("step"), cached.get("split"), cached.get("batch_size")) == (
        run.step, split, SPEED_BATCH):
      return cached["tokens_per_s"]
  if not measure or not (run.workdir / "checkpoints").is_dir():
    return None
  logging.info("measuring the decode speed of %s", run.name)
  result = measure_decode_speed(run.workdir, split)
  path.write_text(json.dumps(result, indent=2) + "\n")
  return result["tokens_per_s"]


# ----------------------------------------------------------------- significance (bootstrap)
@dataclasses.dataclass
class Predictions:
  sources: list[str]
  refs: list[list[str]]
  predictions: list[str]


def predictions_path(run: RunResult) -> pathlib.Path:
  return run.workdir / "eval" / f"{run.cfg.eval.final_split}-{run.step}-predictions.tsv"


def read_predictions(path: pathlib.Path) -> Predictions:
  """evaluate.write_outputs' TSV: source, references joined by " | ", prediction."""
  out = Predictions([], [], [])
  for line in path.read_text().splitlines()[1:]:
    src, refs, pred = (line.split("\t", 2) + ["", ""])[:3]
    out.sources.append(src)
    out.refs.append(refs.split(" | "))
    out.predictions.append(pred)
  return out


# A per-example statistic: (predictions, refs) --> float [N, K]; and summed stats [..., K] -->
# the metric [...]. Resampling examples sums the rows of the resample, so corpus metrics
# (PER, BLEU) are recomputed exactly, not averaged per sentence.
Statistic = tuple[Callable[[Sequence[str], Sequence[Sequence[str]]], np.ndarray],
                  Callable[[np.ndarray], np.ndarray]]


def _ratio(sums: np.ndarray) -> np.ndarray:
  return sums[..., 0] / sums[..., 1]


def _g2p_stats(preds, refs) -> np.ndarray:
  """[word error %, 1, phoneme edits %, reference phonemes] per example (metrics.g2p_metrics)."""
  # pylint: disable=protected-access (the PER rule of metrics.g2p_metrics, per example)
  rows = []
  for pred, example_refs in zip(preds, refs):
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

  def stats(preds, refs):
    width = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    return np.array(scorer._extract_corpus_statistics(list(preds), streams), float)

  def reduce(sums):
    flat = sums.reshape(-1, sums.shape[-1])
    scores = [scorer._compute_score_from_stats([int(round(x)) for x in row]).score
              for row in flat]
    return np.array(scores).reshape(sums.shape[:-1])
  return stats, reduce


def statistic(family: str, metric: str, signature: str = "") -> Statistic | None:
  """How to resample `metric` of a task's metric family; None where it is not supported."""
  exact = (lambda p, r: np.array([[100.0 * (x in refs), 1.0] for x, refs in zip(p, r)]), _ratio)
  table: dict[tuple[str, str], Statistic] = {
      ("exact", "exact_match"): exact,
      ("g2p", "wer"): (_g2p_stats, _ratio),
      ("g2p", "exact_match"): (_g2p_stats, lambda s: 100.0 - _ratio(s)),
      ("g2p", "per"): (_g2p_stats, lambda s: s[..., 2] / s[..., 3]),
  }
  if family == "text" and metric in ("bleu", "chrf"):
    return _sacrebleu_statistic(metric, signature)
  return table.get((family, metric))


def paired_bootstrap(baseline: np.ndarray, other: np.ndarray,
                     reduce: Callable[[np.ndarray], np.ndarray], resamples: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
  """(observed Δ = other − baseline, two-sided p) of a paired bootstrap over examples.

  `baseline` / `other`: per-example statistics [seeds, N, K] of two groups on the same N
  examples. Each resample draws N examples with replacement (the same ones for both groups);
  a group's metric is `reduce` of its summed statistics, averaged over its seeds.
  p = 2 · min(P(Δ* ≤ 0), P(Δ* ≥ 0)), capped at 1.
  """
  n = baseline.shape[1]
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)  # [R, N]
  value = lambda stats, c: reduce(np.einsum("rn,snk->rsk", c, stats)).mean(-1)   # [R]
  ones = np.ones((1, n))
  observed = float(value(other, ones)[0] - value(baseline, ones)[0])
  delta = value(other, counts) - value(baseline, counts)                       # [R]
  p = min(1.0, 2.0 * min(np.mean(delta <= 0), np.mean(delta >= 0)))
  return observed, float(p)


def group_stats(group: Group, stat: Statistic) -> tuple[list[str], np.ndarray] | None:
  """(sources, per-example statistics [seeds, N, K]) of a group; None if any TSV is missing
  or the seeds decoded different examples."""
  sources, rows = None, []
  for run in group.runs:
    path = predictions_path(run)
    if not path.exists():
      return None
    pred = read_predictions(path)
    if sources is not None and pred.sources != sources:
      return None
    sources = pred.sources
    rows.append(stat[0](pred.predictions, pred.refs))
  return sources, np.stack(rows)


def significance(groups: Sequence[Group], baseline: Group, family: str, metric: str,
                 signature: str, resamples: int) -> dict[str, tuple[float, float] | None]:
  """Group label -> (Δ, p) of `metric` against the baseline; None where it cannot be tested."""
  stat = statistic(family, metric, signature)
  if stat is None:
    return {g.label: None for g in groups}
  base = group_stats(baseline, stat)
  out = {}
  for g in groups:
    other = group_stats(g, stat) if g is not baseline else None
    if base is None or other is None or other[0] != base[0]:
      out[g.label] = None
      continue
    out[g.label] = paired_bootstrap(base[1], other[1], stat[1], resamples)
  return out


# -------------------------------------------------------------------------------- report
@dataclasses.dataclass
class Row:
  """One table row: a group's numbers, each a list over its seeds."""
  group: Group
  scores: dict[str, list[float]]             # "split/metric" -> per seed
  params: tuple[int, int]
  cache_per_token: float
  train_tps: list[float]
  decode_tps: list[float]


def group_row(group: Group, measure_speed: bool) -> Row:
  scores: dict[str, list[float]] = {}
  for run in group.runs:
    for split, values in run.scores.items():
      for key, value in values.items():
        scores.setdefault(f"{split}/{key}", []).append(value)
  cfg = group.runs[0].cfg
  train = [t for t in (train_tokens_per_s(r.workdir) for r in group.runs) if t is not None]
  decode = [t for t in (decode_tokens_per_s(r, measure_speed) for r in group.runs)
            if t is not None]
  return Row(group, scores, param_counts(cfg), cache_bytes_per_source_token(cfg), train, decode)


def fmt(values: Sequence[float], digits: int = 2) -> str:
  """"mean ± std" over seeds ("mean" alone for one value, "n/a" for none)."""
  if not values:
    return "n/a"
  mean, std = mean_std(values)
  return f"{mean:,.{digits}f}" + (f" ± {std:,.{digits}f}" if len(values) > 1 else "")


def table(rows: Sequence[Row], columns: Sequence[str], main: str, baseline: Group,
          tests: Mapping[str, tuple[float, float] | None]) -> str:
  """The markdown results table; `*` marks a main metric that differs at p < SIGNIFICANCE."""
  head = ["group", "seeds", *columns, f"Δ {main}", "p", "params", "cross-attn params",
          "K/V cache B / src token", "train tok/s", "decode tok/s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    test = tests.get(row.group.label)
    cells = []
    for column in columns:
      cell = fmt(row.scores.get(column, []))
      if column == main and test is not None and test[1] < SIGNIFICANCE:
        cell += " *"
      cells.append(cell)
    if row.group is baseline:
      delta, p = "(baseline)", ""
    elif test is None:
      delta, p = "n/a", "n/a"
    else:
      delta, p = f"{test[0]:+.2f}", ("< 0.001" if test[1] < 0.001 else f"{test[1]:.3f}")
    label = f"**{row.group.label}**" if row.group is baseline else row.group.label
    lines.append("| " + " | ".join([
        label, str(len(row.group.runs)), *cells, delta, p, f"{row.params[0]:,}",
        f"{row.params[1]:,}", f"{row.cache_per_token:,.0f}", fmt(row.train_tps, 0),
        fmt(row.decode_tps, 0)]) + " |")
  return "\n".join(lines)


def hardware() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return (f"{platform.platform()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
          f"{len(devices)} × {devices[0].platform} ({devices[0].device_kind})")


def curves(group: Group, key: str) -> list[dict[int, float]]:
  """Per seed: step -> `key` from metrics.jsonl (the last value of a step logged twice)."""
  out = []
  for run in group.runs:
    rows = writers.read_metrics(run.workdir) if (run.workdir / "metrics.jsonl").exists() else []
    out.append({r["step"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))})
  return out


def make_plots(directory: pathlib.Path, rows: Sequence[Row], main: str, baseline: Group
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
  bars = {r.group.label: mean_std(r.scores[main]) for r in rows if r.scores.get(main)}
  out.append((f"{main} per group (error bars: std over seeds; hatched: baseline)",
              plots.metric_bars(bars, main, directory / "main_metric.png",
                                highlight=baseline.label).name))
  points = {r.group.label: (*mean_std(r.decode_tps), *mean_std(r.scores[main]))
            for r in rows if r.decode_tps and r.scores.get(main)}
  if points:
    out.append((f"{main} vs decode speed (error bars: std over seeds)",
                plots.quality_vs_speed(points, "decode tokens/s", main,
                                       directory / "quality_vs_speed.png").name))
  return out


def markdown(title: str, command: str, rows: Sequence[Row], columns: Sequence[str], main: str,
             baseline: Group, tests, unfinished: Sequence[str], figures, resamples: int,
             jobs_note: str) -> str:
  direction = "lower" if main.split("/")[-1] in LOWER_IS_BETTER else "higher"
  lines = [f"# {title}", "",
           f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} on {hardware()}.",
           ""]
  if command:
    lines += ["Sweep command:", "", "```bash", command, "```", ""]
  lines += [f"{sum(len(r.group.runs) for r in rows)} finished runs in {len(rows)} groups "
            f"(a group = the runs' overrides without `{SEED_KEY}`). Main metric: `{main}` "
            f"({direction} is better); baseline: **{baseline.label}**.", ""]
  if unfinished:
    lines += [f"Not finished (left out): {', '.join(unfinished)}.", ""]
  lines += ["## Results", "", table(rows, columns, main, baseline, tests), "",
            f"Cells are mean ± sample standard deviation over seeds. `*`: the main metric differs "
            f"from the baseline's at p < {SIGNIFICANCE} in a two-sided paired bootstrap over "
            f"the test examples ({resamples} resamples, seed 0): each resample draws the same "
            "examples for both groups, recomputes each seed's metric from per-example "
            "statistics of its predictions TSV and averages over seeds; p = 2·min(P(Δ ≤ 0), "
            "P(Δ ≥ 0)). Δ is group − baseline on the full test set. The test resamples test "
            "examples, not seeds: it measures test-set sampling noise with the trained models "
            "fixed; the ± over seeds shows the training noise.", "",
            "Parameters: all, and those of modules named `cross_attention`. K/V cache: "
            "decode-time cache bytes per source token per sequence, all layers (from the model "
            "config). train tok/s: target tokens per second, median of the logged windows "
            "after the first. decode tok/s: greedy decoding of the first "
            f"{SPEED_BATCH} test sources for exactly decode_max_len steps, best of "
            f"{SPEED_REPEATS} after a warm-up, cached in each run's `{SPEED_FILE}`. "
            f"Speeds depend on what else ran on the machine{jobs_note}.", ""]
  lines += ["## Plots", ""]
  for caption, name in figures:
    lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
  return "\n".join(lines)


def write_report(directory: str | pathlib.Path, *, baseline: str | None = None,
                 metric: str | None = None, resamples: int = 1000,
                 measure_speed: bool = True) -> pathlib.Path:
  """Write DIR/report.md and its PNGs; returns the path of report.md."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ConfigError(f"{directory} is not a directory; pass the --workdir of `encdec sweep`")
  manifest, runs = load_runs(directory)
  finished = [r for r in runs if r.step is not None]
  unfinished = [r.name for r in runs if r.step is None]
  if not finished:
    raise ConfigError(f"no finished run in {directory} (a finished run has "
                      "eval/<final_split>-<num_steps>.json); run `encdec sweep` first")
  groups = group_runs(finished)
  base = pick_baseline(groups, baseline)
  split = base.runs[0].cfg.eval.final_split
  main = f"{split}/{main_metric(base.runs[0].scores[split], metric)}"
  signature = json.loads((base.runs[0].workdir / "eval" /
                          f"{split}-{base.runs[0].step}.json").read_text()).get(
                              "bleu_signature", "")
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel
  family = tasks.build(base.runs[0].cfg.task).metric_family
  tests = significance(groups, base, family, main.split("/", 1)[1], signature, resamples)
  rows = [group_row(g, measure_speed) for g in groups]
  columns = sorted({c for r in rows for c in r.scores},   # the main split first, main metric first
                   key=lambda c: (c.split("/")[0] != split, c.split("/")[0], c != main, c))
  figures = make_plots(directory, rows, main, base)
  title = (f"Sweep `{manifest['sweep']}` of `{manifest['config']}`" if manifest
           else f"Runs in `{directory}`")
  jobs = re.search(r"--jobs[ =](\d+)", (manifest or {}).get("command", ""))
  jobs_note = (f" (this sweep ran {jobs.group(1)} runs at a time, which lowers train tok/s)"
               if jobs and int(jobs.group(1)) > 1 else "")
  text = markdown(title, (manifest or {}).get("command", ""), rows, columns, main, base, tests,
                  unfinished, figures, resamples, jobs_note)
  path = directory / REPORT
  path.write_text(text)
  return path
