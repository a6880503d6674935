"""Issue 19's check of batched sweeps: the same sweep run one run at a time and in batches
(`encdec sweep --batch N`, each batch one `encdec train-batch` process), compared variant by
variant on the main metric, with the wall time of both.

    bash experiments/batched_rerun.sh      # both sweeps side by side, a core each; resumable
    python -m experiments.batched_rerun runs/rerun/sequential runs/rerun/batched \
        --sequential-log runs/rerun/sequential.log --batched-log runs/rerun/batched.log \
        --out experiments/results/batched_rerun.md

Wall time: from the sweeps' logs, each run's (each batch's) "finished in N s" line summed per
variant (a sweep stopped and resumed counts only its runs' own time; a run cut off and resumed
would count only its last part, so delete a cut-off run before resuming when timing), or as
given by --wall-sequential / --wall-batched.

Per variant: the main metric of every seed in both sweeps; the largest per-seed difference (a
member of a batch is the same run as trained alone, up to float rounding that training can
amplify); and the difference of the batched group against the sequential one by the
hierarchical paired bootstrap of `encdec report` (seeds, then test examples; 95% interval,
Holm-adjusted over the variants). "Within seed noise" means that bootstrap finds no
difference across seeds.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import pathlib
import re
from typing import Sequence

from encdec import machine, sweep
from encdec.errors import ConfigError
from encdec.report import discovery, render, stats


@dataclasses.dataclass
class Pair:
  """One variant in both sweeps: the main metric per seed, and the batched-vs-sequential test."""
  label: str
  sequential: dict[int, float]              # seed -> main metric
  batched: dict[int, float]
  test: stats.Comparison | None


def finished_groups(directory: pathlib.Path) -> dict[str, discovery.Group]:
  """The sweep's finished runs grouped by variant, by label; an unfinished run is an error (the
  comparison would silently drop seeds)."""
  _, runs = discovery.load_runs(directory)
  unfinished = [r.name for r in runs if r.step is None]
  if unfinished:
    raise ConfigError(f"{directory}: {len(unfinished)} runs unfinished ({unfinished[0]}, ...); "
                      "finish the sweep (run its command again) first")
  return {g.label: g for g in discovery.group_runs(runs)}


def seed_values(group: discovery.Group, split: str, metric: str) -> dict[int, float]:
  return {r.cfg.train.seed: r.scores[split][metric] for r in group.runs}


def compare(sequential: dict[str, discovery.Group], batched: dict[str, discovery.Group],
            metric: str | None = None, resamples: int = 1000) -> tuple[str, list[Pair]]:
  """(main metric as split/metric, one Pair per variant in sweep order) of two sweeps'
  `finished_groups`."""
  if set(sequential) != set(batched):
    differing = sorted(set(sequential) ^ set(batched))
    raise ConfigError(f"the sweeps hold different variants: {differing}")
  split, name, stat = stats.main_statistic(next(iter(sequential.values())).runs[0], metric)
  tests = stats.paired_tests({label: (seq, batched[label]) for label, seq in sequential.items()},
                             stat, resamples)
  pairs = [Pair(label, seed_values(seq, split, name), seed_values(batched[label], split, name),
                tests[label]) for label, seq in sequential.items()]
  return f"{split}/{name}", pairs


# The sweep's line when a run (or a batch, named by its first member and "+N") ends.
_FINISHED = re.compile(r"^\[sweep\] .*: (\S+?)(?:\+\d+)? finished in (\d+)s")


def seconds_per_variant(log: pathlib.Path, runs: dict[str, str]) -> dict[str, float]:
  """{variant label: seconds its finished runs or batches took} from a sweep's log; `runs` maps
  run name -> variant label. A name finished twice (a log holding two sweeps) is an error."""
  seconds, seen = collections.Counter(), set()
  for line in log.read_text().splitlines():
    match = _FINISHED.match(line)
    if not match:
      continue
    name, s = match.groups()
    if name in seen or name not in runs:
      raise ConfigError(f"{log}: run {name} " + ("finished twice" if name in seen
                                                    else "is not in the sweep"))
    seen.add(name)
    seconds[runs[name]] += float(s)
  return dict(seconds)


def run_labels(groups: dict[str, discovery.Group]) -> dict[str, str]:
  """{run name: its variant's label} of a sweep's `finished_groups`."""
  return {r.name: label for label, g in groups.items() for r in g.runs}


def timing_table(sequential: dict[str, float], batched: dict[str, float],
                 labels: Sequence[str]) -> list[str]:
  """Per variant: seconds one at a time, batched, and the speed-up (one ÷ batched)."""
  lines = ["| variant | one at a time (s) | batched (s) | runs/hour batched ÷ one at a time |",
           "|---|---|---|---|"]
  for label in labels:
    one, many = sequential.get(label), batched.get(label)
    ratio = f"{one / many:.2f}×" if one and many else ""
    lines.append(f"| {label} | {one or 0:.0f} | {many or 0:.0f} | {ratio} |")
  one, many = sum(sequential.values()), sum(batched.values())
  lines.append(f"| all | {one:.0f} | {many:.0f} | {one / many:.2f}× |")
  return lines


def hours(seconds: float) -> str:
  return f"{seconds / 3600:.2f} h ({seconds:.0f} s, the runs' own times summed)"


def within_seed_noise(pair: Pair) -> str:
  if pair.test is None:
    return "not tested"
  return "no" if pair.test.verdict == stats.VERDICTS[0] else "yes"


def markdown(main: str, pairs: Sequence[Pair], args: argparse.Namespace,
             timing: Sequence[str] = ()) -> str:
  seeds = sorted(pairs[0].sequential)
  head = ("| variant | " + " | ".join(f"seed {s}: one / batched" for s in seeds) +
          f" | max per-seed \\|Δ\\| | {main} one at a time | batched "
          "| Δ batched − one [95% CI] | p (Holm) | within seed noise |")
  lines = [head, "|" + "---|" * (len(seeds) + 7)]
  for p in pairs:
    per_seed = [f"{p.sequential[s]:.2f} / {p.batched[s]:.2f}" for s in seeds]
    gap = max(abs(p.sequential[s] - p.batched[s]) for s in seeds)
    t = p.test
    test = ([f"{t.delta:+.2f} [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}]", render.p_value(t.p_seeds_holm)]
            if t else ["", ""])
    lines.append("| " + " | ".join([p.label, *per_seed, f"{gap:.2f}",
                                     render.fmt(list(p.sequential.values())),
                                     render.fmt(list(p.batched.values())), *test,
                                     within_seed_noise(p)]) + " |")
  agree = sum(within_seed_noise(p) == "yes" for p in pairs)
  return "\n".join([
      "# Batched sweeps against one run at a time", "",
      f"Commands: `{args.sequential_command}`; `{args.batched_command}`; this page: "
      f"`python -m experiments.batched_rerun {args.sequential} {args.batched} ...`.", "",
      f"- Hardware: {args.hardware}",
      f"- Wall time, one run at a time: {args.wall_sequential}",
      f"- Wall time, batched: {args.wall_batched}",
      f"- Main metric: {main} (each cell: mean ± std over seeds). Test: hierarchical paired "
      "bootstrap (seeds, then test examples) of batched − one at a time, "
      f"{args.resamples} resamples, Holm-adjusted over the {len(pairs)} variants.", "",
      *([args.notes, ""] if args.notes else []),
      *lines, "",
      f"{agree} of {len(pairs)} variants agree within seed noise.", "",
      *(["## Wall time per variant", "", *timing, ""] if timing else [])])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("sequential", type=pathlib.Path, help="the sweep run one run at a time")
  p.add_argument("batched", type=pathlib.Path, help="the same sweep with --batch N")
  p.add_argument("--out", type=pathlib.Path, required=True, help="the markdown page to write")
  p.add_argument("--sequential-log", type=pathlib.Path, help="the sequential sweep's output")
  p.add_argument("--batched-log", type=pathlib.Path, help="the batched sweep's output")
  p.add_argument("--wall-sequential", help="wall time one at a time (default: from the log)")
  p.add_argument("--wall-batched", help="wall time batched (default: from the log)")
  p.add_argument("--notes", default="", help="a paragraph for the page (e.g. what shared the "
                 "machine meanwhile)")
  p.add_argument("--hardware", default=machine.describe())
  p.add_argument("--metric", help="main metric (default: wer, bleu or exact_match)")
  p.add_argument("--resamples", type=int, default=1000)
  args = p.parse_args(argv)
  args.sequential_command, args.batched_command = (
      (sweep.read_manifest(d) or {}).get("command", "") for d in (args.sequential,
                                                                          args.batched))
  if (args.sequential_log is None) != (args.batched_log is None):
    p.error("give both --sequential-log and --batched-log, or neither")
  if args.sequential_log is None and not (args.wall_sequential and args.wall_batched):
    p.error("give the sweeps' logs or both --wall-sequential and --wall-batched")
  timing = []
  try:
    groups = finished_groups(args.sequential), finished_groups(args.batched)
    main_metric, pairs = compare(*groups, args.metric, args.resamples)
    if args.sequential_log:
      seconds = [seconds_per_variant(log, run_labels(g))
                 for log, g in zip((args.sequential_log, args.batched_log), groups)]
      timing = timing_table(*seconds, [pair.label for pair in pairs])
      args.wall_sequential = args.wall_sequential or hours(sum(seconds[0].values()))
      args.wall_batched = args.wall_batched or hours(sum(seconds[1].values()))
  except (ConfigError, OSError) as e:
    raise SystemExit(f"batched_rerun: {e}") from None
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(markdown(main_metric, pairs, args, timing))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
