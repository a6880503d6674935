"""Write the German -> English results page (markdown + learning curve + attention map) from a
trained `translation_de_en` run.

    encdec train --config translation_de_en --workdir runs/de_en_small
    encdec eval --workdir runs/de_en_small --split test --beam 4 --plot-attention 3
    encdec eval --workdir runs/de_en_small --split test --beam 1
    python -m experiments.translation_result runs/de_en_small --wall-time "15 min" \
        --hardware "2 CPU cores (...)"

Reads WORKDIR/metrics.jsonl, WORKDIR/eval/test-<step>.json (greedy, `--beam 1`) and
test-beam<K>-<step>.json (`--beam K`), with their predictions TSVs and sacrebleu signatures.
"""
from __future__ import annotations

import pathlib

from encdec import plots, writers
from experiments.g2p_result import page_args, run_outputs, samples


def learning_curve(workdir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  rows = writers.read_metrics(workdir)
  series = lambda key: {r["step"]: r[key] for r in rows if key in r}
  return plots.learning_curves({
      "loss (label-smoothed)": {"train": [series("train/loss")], "dev": [series("eval/loss")]},
      "dev BLEU (greedy)": {"dev": [series("eval/bleu")]},
      "dev chrF (greedy)": {"dev": [series("eval/chrf")]},
  }, out)


def score_row(name: str, scores: dict) -> str:
  return f"| {name} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | {scores['num_examples']} |"


def main() -> None:
  args = page_args(__doc__, "translation_de_en",
                   "encdec train --config translation_de_en --workdir runs/de_en_small")
  greedy, beam, attention, cfg = run_outputs(args, learning_curve)
  m, train, optim = cfg["model"], cfg["train"], cfg["optim"]
  lines = [
      "# German -> English on the Ding dictionary (`ding_de_en`)", "",
      f"Commands: `{args.command}`; `encdec eval --workdir {args.workdir} --split test --beam "
      f"{args.beam} --plot-attention 3`; `encdec eval --workdir {args.workdir} --split test "
      f"--beam 1`; this page: `python -m experiments.translation_result {args.workdir} "
      f"--name {args.name} --wall-time ... --hardware ...`.", "",
      f"- Hardware: {args.hardware}",
      f"- Training wall time: {args.wall_time}",
      f"- Model: transformer d_model {m['d_model']}, {m['num_heads']} heads, d_ff {m['d_ff']}, "
      f"{m['num_encoder_layers']}+{m['num_decoder_layers']} layers, dropout "
      f"{m['dropout_rate']}; {train['num_steps']} steps of {train['batch_size']} packed rows, "
      f"lr {optim['learning_rate']} {optim['schedule']}, label smoothing "
      f"{train['label_smoothing']}; a joint sentencepiece vocabulary of "
      f"{cfg['task']['vocab_size']} pieces.",
      "- Data: Debian's `trans-de-en` (the Ding dictionary), cleaned and split by "
      "encdec/data/builders/ding_de_en.py: train = every word, phrase and sentence pair not "
      "held out; test = held-out German sentences of at least 4 words with all their English "
      "translations as references.", "",
      "## Test results", "",
      "| search | BLEU | chrF | sentences |", "|---|---|---|---|",
      score_row("greedy", greedy[0]), score_row(f"beam {args.beam} (alpha 0.6)", beam[0]), "",
      f"sacrebleu: `{beam[0].get('bleu_signature', '?')}`, `{beam[0].get('chrf_signature', '?')}`",
      "", "## Learning curve", "", f"![learning curve]({args.name}/learning_curve.png)", "",
  ]
  if attention:
    lines += ["## Cross-attention on a test sentence (rows: layers; mean over heads, then each "
              "head)", "", f"![attention map]({args.name}/attention_map.png)", ""]
  lines += [f"## 20 random test sentences (beam {args.beam}; half of them exact matches of a "
            "reference where there are enough)", "",
            "| German | reference(s) | prediction | exact |", "|---|---|---|---|"]
  lines += [f"| {s} | {r} | {p} | {'yes' if ok else 'no'} |" for s, r, p, ok in samples(beam[1])]
  if args.notes:
    lines += ["", args.notes]
  page = args.out / f"{args.name}.md"
  page.write_text("\n".join(lines) + "\n")
  print(page)


if __name__ == "__main__":
  main()
