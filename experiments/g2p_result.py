"""Write the G2P results page (markdown + learning curve + attention map) from a trained run.

    encdec train --config configs/g2p_cmudict.py:size=base --workdir runs/g2p_base
    encdec eval --workdir runs/g2p_base --split test --beam 4 --plot-attention 3
    python experiments/g2p_result.py runs/g2p_base --out experiments/results \
        --wall-time "2h 31m" --hardware "2 CPU cores (...)"

Reads WORKDIR/metrics.jsonl and WORKDIR/eval/test-<step>.json (greedy, written by training)
and test-beam<K>-<step>.json (from `encdec eval --beam K`), with their predictions TSVs.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
from typing import Any, Callable

from encdec import plots, writers

ANCHORS = """| system | CMUdict version / split | WER % |
|---|---|---|
| Phonetisaurus (WFST) | latest CMUdict, no stress | 33.9 |
| cmusphinx g2p-seq2seq (2-layer transformer) | latest CMUdict, no stress | ~31 |
| Phonetisaurus | PRONALSYL-2007 split | 24.4 |
| cmusphinx g2p-seq2seq | PRONALSYL-2007 split | 20.2 |"""

# The peers' page (experiments/peers/), written by its own command; linked from this one.
PEERS = "Peers measured on this same split: [g2p_peers.md](g2p_peers.md) (Phonetisaurus 27.60% test WER)."


def latest(eval_dir: pathlib.Path, prefix: str) -> tuple[dict, pathlib.Path] | None:
  """The scores json (and its predictions TSV) of `prefix`-<step> with the highest step."""
  found = [(int(p.stem.rsplit("-", 1)[1]), p) for p in eval_dir.glob(f"{prefix}-*.json")
           if p.stem.rsplit("-", 1)[1].isdigit() and p.stem.rsplit("-", 1)[0] == prefix]
  if not found:
    return None
  _, path = max(found)
  return json.loads(path.read_text()), path.with_name(path.stem + "-predictions.tsv")


def learning_curve(workdir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  rows = writers.read_metrics(workdir)
  series = lambda key: {r["step"]: r[key] for r in rows if key in r}
  return plots.learning_curves({
      "train loss (label-smoothed)": {"train": [series("train/loss")],
                                      "dev": [series("eval/loss")]},
      "dev WER % (greedy, 1000 words)": {"dev": [series("eval/wer")]},
      "dev PER %": {"dev": [series("eval/per")]},
  }, out)


def samples(tsv: pathlib.Path, count: int = 20, seed: int = 0) -> list[tuple[str, str, str, bool]]:
  """`count` test examples, half of them errors when there are enough of both kinds (else
  more of the other): (source, refs, pred, ok), the references joined by commas (a '|' would
  split the markdown table)."""
  lines = tsv.read_text().splitlines()[1:]
  rows = []
  for line in lines:
    src, refs, pred = line.split("\t")
    refs = refs.split(" | ")
    rows.append((src, ", ".join(refs), pred, pred in refs))
  rng = random.Random(seed)
  errors = [r for r in rows if not r[3]]
  right = [r for r in rows if r[3]]
  num_right = min(len(right), count - min(count // 2, len(errors)))
  picked = rng.sample(errors, min(len(errors), count - num_right))
  picked += rng.sample(right, num_right)
  return sorted(picked, key=lambda r: r[0])


def score_row(name: str, scores: dict) -> str:
  return (f"| {name} | {scores['wer']:.2f} | {scores['per']:.2f} | {scores['exact_match']:.2f} "
          f"| {scores['num_examples']} |")


def page_args(doc: str, name: str, command: str) -> argparse.Namespace:
  """The command line of a results page (this one's and experiments/translation_result.py's)."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("workdir", type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("experiments/results"))
  parser.add_argument("--name", default=name, help="the page's file name (and figures folder)")
  parser.add_argument("--beam", type=int, default=4)
  parser.add_argument("--wall-time", required=True, help="training wall time, as measured")
  parser.add_argument("--hardware", required=True)
  parser.add_argument("--command", default=command)
  parser.add_argument("--notes", default="", help="markdown appended to the page")
  return parser.parse_args()


def run_outputs(args: argparse.Namespace, curve: Callable[[pathlib.Path, pathlib.Path], Any]):
  """(greedy and beam (scores, predictions TSV), whether an attention map was copied, the run's
  config); the learning curve drawn by `curve` and the attention map put in the figures folder."""
  eval_dir = args.workdir / "eval"
  greedy, beam = latest(eval_dir, "test"), latest(eval_dir, f"test-beam{args.beam}")
  if greedy is None or beam is None:
    raise SystemExit(f"need {eval_dir}/test-<step>.json (encdec eval --beam 1, or training) and "
                     f"test-beam{args.beam}-<step>.json (encdec eval --beam {args.beam})")
  figures = args.out / args.name
  figures.mkdir(parents=True, exist_ok=True)
  curve(args.workdir, figures / "learning_curve.png")
  attention = sorted((eval_dir / "attention-test").glob("*.png"))
  if attention:
    shutil.copy(attention[0], figures / "attention_map.png")
  return greedy, beam, bool(attention), json.loads((args.workdir / "config.json").read_text())


def main() -> None:
  args = page_args(__doc__, "g2p_cmudict", "encdec train --config configs/g2p_cmudict.py:size=base"
                   " --workdir runs/g2p_base")
  greedy, beam, attention, cfg = run_outputs(args, learning_curve)
  m = cfg["model"]
  lines = [
      "# G2P on CMUdict: base configuration", "",
      f"Command: `{args.command}`, then `encdec eval --workdir runs/g2p_base --split test "
      f"--beam {args.beam} --plot-attention 3`; this page: `python experiments/g2p_result.py "
      "runs/g2p_base --wall-time ... --hardware ...`.", "",
      f"- Hardware: {args.hardware}",
      f"- Training wall time: {args.wall_time}",
      f"- Model: transformer d_model {m['d_model']}, {m['num_heads']} heads, d_ff {m['d_ff']}, "
      f"{m['num_encoder_layers']}+{m['num_decoder_layers']} layers, dropout {m['dropout_rate']}"
      f" (attention {m['attention_dropout_rate']}); {cfg['train']['num_steps']} steps of "
      f"{cfg['train']['batch_size']} packed rows, AdamW lr {cfg['optim']['learning_rate']} "
      f"{cfg['optim']['schedule']}, label smoothing {cfg['train']['label_smoothing']}.",
      "- Data: CMUdict (the `cmudict` package), stress removed, split by word (md5 of the word "
      "mod 100: 90/5/5 train/dev/test); a prediction is correct if it equals any of the word's "
      "pronunciations. WER = % of words wrong; PER = phoneme edit distance / reference length "
      "(closest reference).", "",
      "## Test results", "",
      "| search | WER % | PER % | exact match % | words |", "|---|---|---|---|---|",
      score_row("greedy", greedy[0]), score_row(f"beam {args.beam} (alpha 0.6)", beam[0]), "",
      "Published anchors (different splits; for orientation, not a like-for-like comparison):",
      "", ANCHORS, "", PEERS, "",
      "## Learning curve", "", f"![learning curve]({args.name}/learning_curve.png)", "",
  ]
  if attention:
    lines += ["## Cross-attention on a test word (rows: layers; mean over heads, then each head)", "",
              f"![attention map]({args.name}/attention_map.png)", ""]
  lines += [f"## 20 test words (beam {args.beam}), half of them errors", "",
            "| word | reference(s) | prediction | |", "|---|---|---|---|"]
  lines += [f"| {w} | {r} | {p} | {'ok' if ok else 'wrong'} |" for w, r, p, ok in samples(beam[1])]
  if args.notes:
    lines += ["", args.notes]
  (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
  print(args.out / f"{args.name}.md")


if __name__ == "__main__":
  main()
