"""`encdec report DIR`: compare the runs of a sweep in DIR/report.md, with PNG plots beside it.

DIR is a sweep directory (DIR/sweep.json from `encdec sweep`, one run directory per run) or any
directory whose subdirectories are run directories (config.json); then a run's overrides are the
config keys that differ between the runs. Runs are grouped by their overrides without
`train.seed` (a variant); every number in the table is the mean ± sample standard deviation
(ddof 1) over a group's seeds. Columns:

- final metrics of every split evaluated at the last step (WORKDIR/eval/<split>-<step>.json);
- Δ of the main metric against the baseline group with its 95% interval, p and a verdict from
  a hierarchical paired bootstrap (each group's seeds, then the test examples, paired; the
  per-example statistics from the predictions TSVs), Holm-adjusted over the groups, the
  minimum detectable effect, and the example-only bootstrap's p (stats);
- parameters, total and in modules whose path has a component containing "cross_attention";
- decode-time K/V cache bytes per source token: the variant's own account from the model
  config (`cache_bytes` of its class; tests check it against the cache decoding allocates);
- train target tokens/s (median of the logged `train/tokens_per_s` windows, the first one,
  which includes compilation, left out);
- decode tokens/s: greedy decoding of a fixed batch of test sources for exactly
  decode_max_len steps, best of a few repeats after a warm-up, measured once per run and
  cached in WORKDIR/decode_speed.json.

DIR/report.json holds the same numbers per seed (and each comparison) for analysis elsewhere.

One module per concern: discovery (runs, groups, baseline, main metric), accounting (parameters
and K/V cache from the config), speed (train and decode tokens/s), stats (mean ± std, paired
bootstrap), render (markdown table and page, plots). None imports the training loop.
"""
from __future__ import annotations

import json
import pathlib
import re

from encdec.errors import ConfigError
from encdec.report import accounting, discovery, render, speed, stats

__all__ = ["write_report", "REPORT", "RESULTS"]
REPORT = "report.md"
RESULTS = "report.json"


def group_row(group: discovery.Group, measure_speed: bool) -> render.Row:
  """A group's numbers: scores per seed, model accounting, speeds."""
  scores: dict[str, list[float]] = {}
  for run in group.runs:
    for split, values in run.scores.items():
      for key, value in values.items():
        scores.setdefault(f"{split}/{key}", []).append(value)
  cfg = group.runs[0].cfg
  train = [t for t in (speed.train_tokens_per_s(r.workdir) for r in group.runs) if t is not None]
  decode = [t for t in (speed.decode_tokens_per_s(r, measure_speed) for r in group.runs)
            if t is not None]
  return render.Row(group, scores, accounting.param_counts(cfg),
                    accounting.cache_bytes_per_source_token(cfg), train, decode)


def write_report(directory: str | pathlib.Path, *, baseline: str | None = None,
                 metric: str | None = None, resamples: int = 1000,
                 measure_speed: bool = True) -> pathlib.Path:
  """Write DIR/report.md, its PNGs and DIR/report.json; returns the path of report.md."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ConfigError(f"{directory} is not a directory; pass the --workdir of `encdec sweep`")
  sweep = stats.against_baseline(directory, baseline, metric, resamples)
  split, main, base, manifest = sweep.split, sweep.main, sweep.baseline, sweep.manifest
  rows = [group_row(g, measure_speed) for g in sweep.groups]
  columns = sorted({c for r in rows for c in r.scores},   # the main split first, main metric first
                   key=lambda c: (c.split("/")[0] != split, c.split("/")[0], c != main, c))
  figures = render.make_plots(directory, rows, main, base)
  title = (f"Sweep `{manifest['sweep']}` of `{manifest['config']}`" if manifest
           else f"Runs in `{directory}`")
  jobs = re.search(r"--jobs[ =](\d+)", (manifest or {}).get("command", ""))
  jobs_note = (f" (this sweep ran {jobs.group(1)} runs at a time, which lowers train tok/s)"
               if jobs and int(jobs.group(1)) > 1 else "")
  text = render.markdown(title, (manifest or {}).get("command", ""), rows, columns, main, base,
                         sweep.tests, sweep.unfinished, figures, resamples, jobs_note)
  (directory / RESULTS).write_text(json.dumps(
      render.results_json(rows, main, base, sweep.tests, resamples), indent=1) + "\n")
  path = directory / REPORT
  path.write_text(text)
  return path
