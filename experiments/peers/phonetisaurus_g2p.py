"""Peer: Phonetisaurus (a joint-sequence n-gram WFST G2P) trained and scored on our CMUdict split.

    python -m experiments.peers.phonetisaurus_g2p --workdir runs/peers/phonetisaurus \
        [--orders 6,7,8] [--compare runs/recipe_a ...] [--data-dir ~/tensorflow_datasets]

Stages (each skipped when its output is already in WORKDIR, so re-running resumes):
  1. lexicon/train.tsv: the task's own `train_source("train")` (one `word<TAB>P H ...` line per
     training pair: stress removed, the split and word filter of encdec/data/g2p.py).
  2. model/train.corpus: `phonetisaurus-align` with the settings `phonetisaurus-train --seq2_del`
     uses (its recommended CMUdict recipe: no grapheme deletions, phoneme deletions, 2-2
     chunks), aligned once for every n-gram order.
  3. per order N of --orders: `estimate-ngram -o N` (MITLM, its default modified Kneser-Ney)
     and `phonetisaurus-arpa2wfst` --> model/orderN.fst; decode the dev words with
     `phonetisaurus-g2pfst` (1-best, its default beam 10000) and score them.
  4. the order with the lowest dev WER (ties: the smaller order) decodes the test words.
Scores come from encdec's own metric code (evaluate.score: multi-reference WER/PER) and the
predictions are written by evaluate.write_outputs, so they read like an encdec run's:
WORKDIR/eval/<split>-order<N>.json and <split>-order<N>-predictions.tsv.

--compare RUN (repeatable): a paired bootstrap (encdec/report/stats.py) of the WER and PER
difference between an encdec run's test predictions (RUN/eval/test-<step>-predictions.tsv,
the newest step, and the newest test-beam<K>-<step> of each K; or a TSV path) and
Phonetisaurus' on the same words.

Everything measured goes to WORKDIR/eval/peer.json: settings, dev scores per order, test
scores, the wall and CPU time of each stage (training = align + estimate + convert of the chosen
order), the CPU model and load, and the comparisons. Phonetisaurus is an optional dependency:
pip install phonetisaurus==0.3.0 (it bundles the aligner, MITLM and OpenFst binaries).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import re
import resource
import subprocess
import time
from importlib import metadata
from typing import Any, Callable, Sequence

from encdec import machine as machine_lib

PACKAGE = "phonetisaurus"
VERSION = "0.3.0"
INSTALL_HINT = f"pip install {PACKAGE}=={VERSION}"
# `phonetisaurus-train --seq2_del`: its aligner flags (the train script's defaults otherwise).
ALIGN_FLAGS = ("--seq1_del=false", "--seq2_del=true", "--seq1_max=2", "--seq2_max=2",
               "--grow=false")
DECODE_FLAGS = ("--nbest=1", "--beam=10000")   # phonetisaurus-apply's defaults
TIMINGS = "timings.json"


# ------------------------------------------------------------------------------ the tools

def tool_env() -> dict[str, str]:
  """os.environ with the bundled binaries first on PATH and their libraries on
  LD_LIBRARY_PATH; SystemExit with the install line when the package is missing."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.origin:
    raise SystemExit(f"the Phonetisaurus peer needs the '{PACKAGE}' package: {INSTALL_HINT}")
  root = pathlib.Path(spec.origin).parent
  bin_dir, lib_dir = root / "bin" / platform.machine(), root / "lib" / platform.machine()
  if not (bin_dir / "phonetisaurus-g2pfst").exists():
    raise SystemExit(f"{PACKAGE} has no binaries for this machine ({platform.machine()}) in "
                     f"{bin_dir}; reinstall it: {INSTALL_HINT}")
  env = dict(os.environ)
  env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
  env["LD_LIBRARY_PATH"] = f"{lib_dir}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
  return env


def tool_version() -> str | None:
  try:
    return metadata.version(PACKAGE)
  except metadata.PackageNotFoundError:
    return None


def run_tool(command: Sequence[str], env: dict[str, str], log: pathlib.Path,
             stdout: pathlib.Path | None = None) -> None:
  """Run a bundled binary, its stderr (and stdout unless redirected) into `log`; a failure is
  one line naming the command and the log."""
  log.parent.mkdir(parents=True, exist_ok=True)
  with log.open("w") as err:
    out = stdout.open("w") if stdout else err
    try:
      code = subprocess.run(list(command), env=env, stdout=out, stderr=err, check=False).returncode
    finally:
      if stdout:
        out.close()
  if code:
    raise SystemExit(f"{command[0]} failed (exit {code}); see {log}")


def align_command(lexicon: pathlib.Path, corpus: pathlib.Path) -> list[str]:
  return ["phonetisaurus-align", f"--input={lexicon}", f"--ofile={corpus}", *ALIGN_FLAGS]


def estimate_command(corpus: pathlib.Path, order: int, arpa: pathlib.Path) -> list[str]:
  return ["estimate-ngram", "-o", str(order), "-t", str(corpus), "-wl", str(arpa)]


def convert_command(arpa: pathlib.Path, fst: pathlib.Path) -> list[str]:
  return ["phonetisaurus-arpa2wfst", f"--lm={arpa}", f"--ofile={fst}"]


def decode_command(fst: pathlib.Path, words: pathlib.Path) -> list[str]:
  return ["phonetisaurus-g2pfst", f"--model={fst}", f"--wordlist={words}", *DECODE_FLAGS]


# ------------------------------------------------------------------------- data and outputs

def lexicon_text(task, split: str = "train") -> str:
  """The task's training pairs of `split` as a Phonetisaurus lexicon: `word<TAB>phonemes`."""
  return "".join(f"{ex['src']}\t{ex['tgt']}\n" for ex in task.train_source(split))


def parse_decoded(text: str) -> dict[str, str]:
  """phonetisaurus-g2pfst output (`word<TAB>score<TAB>phonemes` lines) --> word -> phonemes;
  a word the model cannot spell out has a line without phonemes, or none: it maps to ""."""
  out = {}
  for line in text.splitlines():
    parts = line.split("\t")
    if parts[0] and parts[0] not in out:
      out[parts[0]] = " ".join(parts[2].split()) if len(parts) >= 3 else ""
  return out


def predictions_for(examples, decoded: dict[str, str]) -> list:
  """evaluate.Prediction per eval example, in the task's order ("" where nothing decoded)."""
  from encdec import evaluate  # pylint: disable=import-outside-toplevel (imports jax)
  return [evaluate.Prediction(ex.src, tuple(ex.refs), decoded.get(ex.src, "")) for ex in examples]


def write_atomic(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  partial.write_text(text)
  os.replace(partial, path)


def machine() -> dict[str, Any]:
  affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
  return {"cpu_model": machine_lib.cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
          "load_avg_1m": os.getloadavg()[0], "python_version": platform.python_version()}


# ----------------------------------------------------------------------------------- stages

def children_cpu_seconds() -> float:
  """User + system CPU time of this process' finished child processes (the binaries)."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Stages:
  """Skips a stage whose output exists; records each stage's wall time, its binaries' CPU time
  (the honest measure on a shared machine: the tools are single-threaded) and the 1-minute
  load average at its end in WORKDIR/timings.json, kept across resumes. Outputs are written
  under a `.partial` name and renamed when complete."""
  workdir: pathlib.Path
  env: dict[str, str]
  log: Callable[[str], None] = print

  def times(self) -> dict[str, dict[str, float]]:
    """stage name -> {"wall_s", "cpu_s", "load_avg_1m"}."""
    path = self.workdir / TIMINGS
    return json.loads(path.read_text()) if path.exists() else {}

  def run(self, name: str, output: pathlib.Path, make: Callable[[pathlib.Path], None]) -> None:
    """make(partial path) unless `output` is there."""
    if output.exists():
      self.log(f"{name}: done ({output})")
      return
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    self.log(f"{name} ...")
    cpu, start = children_cpu_seconds(), time.perf_counter()
    make(partial)
    record = {"wall_s": time.perf_counter() - start, "cpu_s": children_cpu_seconds() - cpu,
              "load_avg_1m": os.getloadavg()[0]}
    os.replace(partial, output)
    times = self.times()
    times[name] = record
    write_atomic(self.workdir / TIMINGS, json.dumps(times, indent=2) + "\n")
    self.log(f"{name}: {record['wall_s']:.1f} s wall, {record['cpu_s']:.1f} s CPU")

  def tool(self, name: str, output: pathlib.Path,
           command: Callable[[pathlib.Path], list[str]], stdout: bool = False) -> None:
    """A binary writing `output` (given its partial path): as an argument, or on stdout."""
    log = self.workdir / "logs" / f"{name}.log"
    self.run(name, output, lambda partial: run_tool(
        command(partial), self.env, log, stdout=partial if stdout else None))


def train(stages: Stages, lexicon: pathlib.Path, orders: Sequence[int]) -> dict[int, pathlib.Path]:
  """Align once, then one joint n-gram WFST per order: order -> model/orderN.fst."""
  model = stages.workdir / "model"
  corpus = model / "train.corpus"
  stages.tool("align", corpus, lambda out: align_command(lexicon, out))
  fsts = {}
  for order in orders:
    arpa, fst = model / f"order{order}.arpa", model / f"order{order}.fst"
    stages.tool(f"estimate_order{order}", arpa,
                lambda out, o=order: estimate_command(corpus, o, out))
    stages.tool(f"convert_order{order}", fst, lambda out, a=arpa: convert_command(a, out))
    fsts[order] = fst
  return fsts


def decode_and_score(stages: Stages, task, split: str, order: int, fst: pathlib.Path
                     ) -> tuple[dict[str, Any], list]:
  """(scores, predictions) of `split` decoded with the order-N model; writes them as an encdec
  run does: eval/<split>-orderN.json and eval/<split>-orderN-predictions.tsv."""
  from encdec import evaluate  # pylint: disable=import-outside-toplevel (imports jax)
  examples = task.eval_examples(split)
  words = write_checked(stages.workdir / "model" / f"{split}.words",
                        "".join(f"{ex.src}\n" for ex in examples), f"{split} split")
  decoded = stages.workdir / "model" / f"{split}-order{order}.g2p"
  stages.tool(f"decode_{split}_order{order}", decoded, lambda _: decode_command(fst, words),
              stdout=True)
  predictions = predictions_for(examples, parse_decoded(decoded.read_text()))
  scores = evaluate.score(task, predictions)
  evaluate.write_outputs(stages.workdir / "eval", split, f"order{order}", scores, predictions)
  return scores, predictions


def write_checked(path: pathlib.Path, text: str, what: str) -> pathlib.Path:
  """Write `text` to `path` once; a different one already there (another split or task version)
  is an error rather than a silent mix of old models or outputs and new data."""
  if path.exists() and path.read_text() != text:
    raise SystemExit(f"{path} differs from the task's current {what}; use a fresh --workdir")
  if not path.exists():
    write_atomic(path, text)
  return path


def total(times: dict[str, dict[str, float]], names: Sequence[str], key: str) -> float:
  """The sum of `key` over stages `names` (NaN where a stage has no record)."""
  return sum(times.get(name, {}).get(key, float("nan")) for name in names)


def best_order(dev: dict[int, dict[str, Any]]) -> int:
  """The order with the lowest dev WER; ties go to the smaller (cheaper) model."""
  return min(dev, key=lambda order: (dev[order]["wer"], order))


def run(task, workdir: pathlib.Path, orders: Sequence[int], env: dict[str, str],
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """All stages; the summary (also written to WORKDIR/eval/peer.json, without comparisons)."""
  workdir.mkdir(parents=True, exist_ok=True)
  stages = Stages(workdir, env, log)
  lexicon = write_checked(workdir / "lexicon" / "train.tsv", lexicon_text(task), "train split")
  fsts = train(stages, lexicon, orders)
  dev = {order: decode_and_score(stages, task, "dev", order, fsts[order])[0] for order in orders}
  for order in orders:
    log(f"dev order {order}: WER {dev[order]['wer']:.2f}  PER {dev[order]['per']:.2f}")
  order = best_order(dev)
  test, _ = decode_and_score(stages, task, "test", order, fsts[order])
  log(f"test order {order}: WER {test['wer']:.2f}  PER {test['per']:.2f}")
  summary = summarize(task, workdir, orders, dev, order, test, stages.times())
  write_atomic(workdir / "eval" / "peer.json", json.dumps(summary, indent=2) + "\n")
  return summary


def summarize(task, workdir: pathlib.Path, orders: Sequence[int], dev: dict[int, dict[str, Any]],
              order: int, test: dict[str, Any], times: dict[str, dict[str, float]]
              ) -> dict[str, Any]:
  """What peer.json records: settings, data sizes, scores, times (training: align + estimate +
  convert of the chosen order; tuning: align and every order's three stages) and the machine."""
  train = ["align", f"estimate_order{order}", f"convert_order{order}"]
  tuning = ["align"] + [f"{stage}_order{o}" for o in orders
                        for stage in ("estimate", "convert", "decode_dev")]
  decode = [f"decode_test_order{order}"]
  return {
      "peer": PACKAGE, "version": tool_version(),
      "settings": {"align": list(ALIGN_FLAGS), "ngram": "MITLM estimate-ngram (default "
                   "modified Kneser-Ney)", "decode": list(DECODE_FLAGS), "orders": list(orders)},
      "data": {"lexicon_lines": len(lexicon_text(task).splitlines()),
               "dev_words": len(task.eval_examples("dev")),
               "test_words": len(task.eval_examples("test"))},
      "dev": {str(o): dev[o] for o in orders}, "order": order, "test": test,
      "predictions": str(workdir / "eval" / f"test-order{order}-predictions.tsv"),
      "seconds": {**{f"{what}_{key}": total(times, names, f"{key}_s")
                     for what, names in (("train", train), ("tuning", tuning),
                                         ("decode_test", decode)) for key in ("wall", "cpu")},
                  "stages": times},
      "machine": machine(),
  }


# -------------------------------------------------------------------------------- comparison

PREDICTIONS = re.compile(r"test-(?:(beam\d+)-)?(\d+)-predictions\.tsv")


def run_predictions(path: pathlib.Path) -> list[pathlib.Path]:
  """A TSV as given; for a run directory its newest greedy test TSV and the newest of each
  beam width (test-<step>-predictions.tsv, test-beam<K>-<step>-predictions.tsv)."""
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise SystemExit(f"--compare {path}: no such run directory or predictions TSV")
  newest: dict[str, tuple[int, pathlib.Path]] = {}
  for tsv in (path / "eval").glob("test-*-predictions.tsv"):
    match = PREDICTIONS.fullmatch(tsv.name)
    if match:
      kind, step = match.group(1) or "greedy", int(match.group(2))
      newest[kind] = max(newest.get(kind, (-1, tsv)), (step, tsv))
  if not newest:
    raise SystemExit(f"no test predictions in {path}/eval (test-<step>-predictions.tsv); "
                     f"decode the test split first: encdec eval --workdir {path} --split test")
  return [tsv for _, tsv in sorted(newest.values(), key=lambda v: str(v[1]))]


def aligned(peer, other, name: str):
  """`other`'s predictions in `peer`'s example order; SystemExit unless both scored the same
  words against the same references."""
  index = {src: i for i, src in enumerate(other.sources)}
  if len(index) != len(other.sources) or sorted(index) != sorted(peer.sources):
    raise SystemExit(f"{name} has other test words than the peer ({len(other.sources)} vs "
                     f"{len(peer.sources)}); compare runs on the same task split")
  order = [index[src] for src in peer.sources]
  if [sorted(other.refs[i]) for i in order] != [sorted(r) for r in peer.refs]:
    raise SystemExit(f"{name} has other references than the peer (stress setting?)")
  return [other.predictions[i] for i in order]


def compare(peer_tsv: pathlib.Path, other_tsv: pathlib.Path, resamples: int = 10000,
            seed: int = 0) -> dict[str, Any]:
  """Scores of both and a paired bootstrap of Δ = other − peer (WER and PER, points; negative:
  the other system is better) over the same test words, with stats.paired_bootstrap."""
  from encdec import metrics  # pylint: disable=import-outside-toplevel
  from encdec import predictions_tsv  # pylint: disable=import-outside-toplevel
  from encdec.report import stats  # pylint: disable=import-outside-toplevel
  peer = predictions_tsv.read(peer_tsv)
  other = aligned(peer, predictions_tsv.read(other_tsv), str(other_tsv))
  out = {"predictions": str(other_tsv), "words": len(peer.sources), "resamples": resamples,
         "peer": metrics.g2p_metrics(peer.predictions, peer.refs),
         "other": metrics.g2p_metrics(other, peer.refs)}
  for metric in ("wer", "per"):
    per_example, reduce = stats.statistic("g2p", metric)
    mine = dataclasses.replace(peer, predictions=other)
    delta, p = stats.paired_bootstrap(per_example(peer)[None], per_example(mine)[None], reduce,
                                      resamples, seed)
    out[f"delta_{metric}"], out[f"p_{metric}"] = delta, p
  return out


def format_p(p: float, resamples: int) -> str:
  """A bootstrap p; 0 (no resample crossed zero) as the bound it is: p < 2 / resamples."""
  return f"< {2 / resamples:.2g}" if p == 0 else f"{p:.4f}"


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
  """Markdown: each encdec predictions file against Phonetisaurus (Δ = encdec − peer)."""
  lines = ["| encdec predictions | WER % | PER % | Δ WER vs Phonetisaurus | p | Δ PER | p |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['predictions']} | {r['other']['wer']:.2f} | {r['other']['per']:.2f} | "
                 f"{r['delta_wer']:+.2f} | {format_p(r['p_wer'], r['resamples'])} | "
                 f"{r['delta_per']:+.2f} | {format_p(r['p_per'], r['resamples'])} |")
  return "\n".join(lines)


# -------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  p.add_argument("--workdir", type=pathlib.Path, required=True)
  p.add_argument("--orders", default="6,7,8",
                 help="n-gram orders to train; the lowest dev WER decodes test")
  p.add_argument("--compare", type=pathlib.Path, action="append", default=[],
                 help="an encdec run directory (or predictions TSV) to bootstrap against")
  p.add_argument("--resamples", type=int, default=10000, help="paired bootstrap resamples")
  p.add_argument("--data-dir", default=None,
                 help="TFDS data_dir of the task (default: the task's, ~/tensorflow_datasets)")
  args = p.parse_args(argv)
  try:
    args.orders = sorted({int(o) for o in args.orders.split(",") if o.strip()})
  except ValueError:
    p.error(f"--orders {args.orders!r}: comma-separated integers, e.g. 6,7,8")
  if not args.orders or min(args.orders) < 1:
    p.error("--orders needs at least one order >= 1")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  env = tool_env()                           # the install line before any slow work
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel (TFDS)
  cfg = tasks.default_config("g2p_cmudict")
  if args.data_dir:
    cfg.data_dir = args.data_dir
  others = [tsv for path in args.compare for tsv in run_predictions(path)]   # fail fast
  summary = run(tasks.build(cfg), args.workdir, args.orders, env)
  rows = [compare(pathlib.Path(summary["predictions"]), tsv, args.resamples) for tsv in others]
  if rows:
    summary["compare"] = rows
    write_atomic(args.workdir / "eval" / "peer.json", json.dumps(summary, indent=2) + "\n")
    print(comparison_table(rows))
  s = summary["seconds"]
  print(f"Phonetisaurus order {summary['order']}: test WER {summary['test']['wer']:.2f}  PER "
        f"{summary['test']['per']:.2f} on {summary['test']['num_examples']} words; train "
        f"{s['train_wall']:.0f} s wall ({s['train_cpu']:.0f} s CPU), decode "
        f"{s['decode_test_wall']:.1f} s ({summary['machine']['cpu_model']}); "
        f"{args.workdir / 'eval' / 'peer.json'}")
  return summary


if __name__ == "__main__":
  main()
