"""experiments/: the results pages (G2P, German -> English) from a run directory."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_run(workdir: pathlib.Path) -> None:
  """A run directory with the files training and `encdec eval --beam 4` leave behind."""
  (workdir / "eval").mkdir(parents=True)
  model = dict(d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3, num_decoder_layers=3,
               dropout_rate=0.1, attention_dropout_rate=0.1)
  (workdir / "config.json").write_text(json.dumps({
      "model": model, "train": dict(num_steps=100, batch_size=8, label_smoothing=0.1),
      "optim": dict(learning_rate=1e-3, schedule="cosine")}))
  rows = [{"step": s, "train/loss": 1.0 / s} for s in (10, 20, 30)]
  rows += [{"step": 50, "eval/loss": 0.2, "eval/wer": 30.0, "eval/per": 7.0}]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  for name, wer in (("test-100", 26.0), ("test-beam4-100", 25.0)):
    (workdir / "eval" / f"{name}.json").write_text(json.dumps(
        dict(wer=wer, per=6.0, exact_match=100 - wer, num_examples=40)))
    lines = ["source\treferences\tprediction"]
    lines += [f"w{i}\tA B | A C\t{'A B' if i % 4 else 'X'}" for i in range(40)]
    (workdir / "eval" / f"{name}-predictions.tsv").write_text("\n".join(lines) + "\n")


def test_results_page_has_both_searches_a_curve_and_twenty_samples_with_errors(tmp_path):
  fake_run(tmp_path / "run")
  out = tmp_path / "results"
  subprocess.run([sys.executable, str(ROOT / "experiments" / "g2p_result.py"), str(tmp_path / "run"),
                  "--out", str(out), "--wall-time", "1h", "--hardware", "2 cores"], check=True)
  page = (out / "g2p_cmudict.md").read_text()
  assert "| greedy | 26.00 |" in page and "| beam 4 (alpha 0.6) | 25.00 |" in page
  samples = [l for l in page.splitlines() if l.startswith("| w") and "word" not in l]
  assert "| w11 | A B, A C | A B | ok |" in samples
  assert len(samples) == 20 and sum(l.endswith("| wrong |") for l in samples) == 10
  assert (out / "g2p_cmudict" / "learning_curve.png").stat().st_size > 10_000


def test_translation_page_has_both_searches_signatures_a_curve_and_samples(tmp_path):
  """experiments/translation_result.py on a run directory shaped like a translation_de_en run."""
  run = tmp_path / "run"
  (run / "eval").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({
      "model": dict(d_model=128, num_heads=4, d_ff=512, num_encoder_layers=3,
                    num_decoder_layers=3, dropout_rate=0.0),
      "train": dict(num_steps=100, batch_size=8, label_smoothing=0.1),
      "optim": dict(learning_rate=1e-3, schedule="cosine"), "task": dict(vocab_size=4000)}))
  rows = [{"step": s, "train/loss": 1.0 / s} for s in (10, 20, 30)]
  rows += [{"step": 50, "eval/loss": 0.2, "eval/bleu": 3.0, "eval/chrf": 20.0}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  for name, bleu in (("test-100", 4.5), ("test-beam4-100", 5.25)):
    (run / "eval" / f"{name}.json").write_text(json.dumps(dict(
        bleu=bleu, chrf=21.0, num_examples=30, bleu_signature="nrefs:var|bs:1000",
        chrf_signature="nrefs:var|c:6")))
    lines = ["source\treferences\tprediction"]
    lines += [f"Satz {i}.\tSentence {i}. | Clause {i}.\t{'Sentence' if i % 3 else 'Other'} {i}."
              for i in range(30)]
    (run / "eval" / f"{name}-predictions.tsv").write_text("\n".join(lines) + "\n")
  out = tmp_path / "results"
  subprocess.run([sys.executable, "-m", "experiments.translation_result", str(run), "--out",
                  str(out), "--wall-time", "15 min", "--hardware", "2 cores"], check=True,
                 cwd=ROOT)
  page = (out / "translation_de_en.md").read_text()
  assert "| greedy | 4.50 | 21.00 | 30 |" in page and "| beam 4 (alpha 0.6) | 5.25 |" in page
  assert "`nrefs:var|bs:1000`" in page and "vocabulary of 4000 pieces" in page
  samples = [l for l in page.splitlines() if l.startswith("| Satz")]
  for line in samples:   # German | references | prediction | whether it is one of them
    german, refs, prediction, exact = [cell.strip() for cell in line.strip("|").split("|")]
    assert refs == f"Sentence {german[5:-1]}., Clause {german[5:-1]}."
    assert exact == ("yes" if prediction in refs.split(", ") else "no")
  assert len(samples) == 20 and sum(l.endswith("| no |") for l in samples) == 10
  assert (out / "translation_de_en" / "learning_curve.png").stat().st_size > 10_000


def fake_length_run(workdir: pathlib.Path, scheme: str, seed: int, long_right: int) -> None:
  """A finished length_generalisation run: every training-length example right, the first
  `long_right` of 40 in each longer split right, the others' second half wrong."""
  from encdec import config  # pylint: disable=import-outside-toplevel
  cfg = config.load("length_generalisation:task=reverse", {
      "model.position_encoding": scheme, "train.seed": seed, "train.num_steps": 10})
  (workdir / "eval").mkdir(parents=True)
  (workdir / "config.json").write_text(cfg.to_json())
  for split, length in (("test", 8), ("test_long", 20), ("test_longer", 40)):
    right = 40 if split == "test" else long_right
    rows, correct = ["source\treferences\tprediction"], 0
    for i in range(40):
      src = ("abcdefghij"[i % 10] + "xyz" * 20)[:length]
      ref = src[::-1]
      pred = ref if i < right else ref[:length // 2] + "q" * (length - length // 2)
      rows.append(f"{src}\t{ref}\t{pred}")
      correct += pred == ref
    (workdir / "eval" / f"{split}-10.json").write_text(json.dumps(
        {"exact_match": 100.0 * correct / 40, "num_examples": 40}))
    (workdir / "eval" / f"{split}-10-predictions.tsv").write_text("\n".join(rows) + "\n")


def test_length_generalisation_page_compares_schemes_over_seeds(tmp_path):
  sweep_dir, runs = tmp_path / "runs" / "reverse", {}
  for scheme, long_right in (("sinusoidal", 0), ("alibi", 30)):
    for seed in (0, 1):
      name = f"position_encoding={scheme}.seed={seed}"
      fake_length_run(sweep_dir / name, scheme, seed, long_right + seed)
      runs[name] = {"model.position_encoding": scheme, "train.seed": seed}
  (sweep_dir / "sweep.json").write_text(json.dumps({
      "config": "length_generalisation:task=reverse", "sweep": "schemes", "overrides": {},
      "runs": runs, "command": "encdec sweep ..."}))
  out = tmp_path / "results"
  subprocess.run([sys.executable, "-m", "experiments.length_generalisation",
                  str(tmp_path / "runs"), "--out", str(out), "--hardware", "2 cores",
                  "--resamples", "500"], check=True, cwd=ROOT)
  rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
          for line in (out / "tables.md").read_text().splitlines() if line.startswith("| ")}
  # positions, xattn, n, test, then exact match and symbol accuracy on test_long, test_longer,
  # each with its Δ, p. A wrong output here has its first half right: symbol accuracy 50%.
  assert rows["sinusoidal"][3:8] == ["100.00 ± 0.00", "1.2 ± 1.8", "", "1.2 ± 1.8", ""]
  assert rows["sinusoidal"][8] == "50.6 ± 0.9"                 # (50 + 51.25) / 2
  assert rows["alibi"][4] == "76.2 ± 1.8" and rows["alibi"][8] == "88.1 ± 0.9"
  assert rows["alibi"][5].startswith("+75.0 [+") and rows["alibi"][5].endswith("p < 0.001")
  assert rows["alibi"][9].startswith("+37.5 [+")
  assert (out / "reverse_by_length.png").stat().st_size > 10_000


def test_batched_rerun_page_tells_a_matching_variant_from_a_differing_one(tmp_path):
  """Two sweeps of the same variants: mha's seeds equal in both (Δ 0, within seed noise), mqa's
  batched seeds far worse (a difference across seeds); an unfinished run is a one-line error."""
  from test_report import write_run  # pylint: disable=import-outside-toplevel
  correct = {"sequential": {"mha": (20, 30), "mqa": (48, 50)},
             "batched": {"mha": (20, 30), "mqa": (20, 22)}}
  for sweep_name, variants in correct.items():
    runs = {}
    for variant, per_seed in variants.items():
      for seed, c in enumerate(per_seed):
        name = f"cross_attention={variant}.seed={seed}"
        runs[name] = {"model.cross_attention": variant, "train.seed": seed}
        write_run(tmp_path / sweep_name / name, runs[name], c, 100.0)
    (tmp_path / sweep_name / "sweep.json").write_text(json.dumps({
        "config": "algorithmic:task=copy", "sweep": "xattn", "overrides": {}, "runs": runs,
        "command": f"encdec sweep --workdir {sweep_name}"}))
  out = tmp_path / "page.md"
  command = [sys.executable, "-m", "experiments.batched_rerun", str(tmp_path / "sequential"),
             str(tmp_path / "batched"), "--out", str(out), "--wall-sequential", "10 min",
             "--wall-batched", "4 min", "--hardware", "2 cores", "--resamples", "500"]
  subprocess.run(command, check=True, cwd=ROOT)
  rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
          for line in out.read_text().splitlines() if line.startswith("| cross")}
  mha, mqa = rows["cross_attention=mha"], rows["cross_attention=mqa"]
  assert mha[1:4] == ["40.00 / 40.00", "60.00 / 60.00", "0.00"]
  assert mha[6].startswith("+0.00") and mha[-1].strip(" |") == "yes"
  assert mqa[3] == "56.00" and mqa[6].startswith("-56.00") and mqa[-1].strip(" |") == "no"
  assert "1 of 2 variants agree within seed noise." in out.read_text()
  # Wall time from the sweeps' logs: each run's (batch's) own seconds, summed per variant.
  logs = {"sequential": ["[sweep] start cross_attention=mha.seed=0",
                         "[sweep] 1/4 done, 0 failed or incomplete: cross_attention=mha.seed=0 "
                         "finished in 10s; ETA 30s",
                         "[sweep] 2/4 done, 0 failed or incomplete: cross_attention=mha.seed=1 "
                         "finished in 20s; ETA 20s",
                         "[sweep] 1/2 done, 0 failed or incomplete: cross_attention=mqa.seed=0 "
                         "incomplete in 99s; ETA 9s",            # cut off: not a finished run
                         "[sweep] 3/4 done, 0 failed or incomplete: cross_attention=mqa.seed=0 "
                         "finished in 15s; ETA 9s",
                         "[sweep] 4/4 done, 0 failed or incomplete: cross_attention=mqa.seed=1 "
                         "finished in 15s"],
          "batched": ["[sweep] 1/2 done, 0 failed or incomplete: cross_attention=mha.seed=0+1 "
                      "finished in 12s; ETA 12s",
                      "[sweep] 2/2 done, 0 failed or incomplete: cross_attention=mqa.seed=0+1 "
                      "finished in 30s"]}
  for name, lines in logs.items():
    (tmp_path / f"{name}.log").write_text("\n".join(lines) + "\n")
  timed = command[:7] + ["--sequential-log", str(tmp_path / "sequential.log"), "--batched-log",
                         str(tmp_path / "batched.log"), "--hardware", "2 cores"]
  subprocess.run(timed, check=True, cwd=ROOT)
  text = out.read_text()
  assert "| cross_attention=mha | 30 | 12 | 2.50× |" in text
  assert "| cross_attention=mqa | 30 | 30 | 1.00× |" in text and "| all | 60 | 42 | 1.43× |" in text
  assert "Wall time, one run at a time: 0.02 h (60 s" in text
  (tmp_path / "batched.log").write_text("\n".join(logs["batched"] * 2) + "\n")
  failed = subprocess.run(timed, cwd=ROOT, capture_output=True, text=True)
  assert failed.returncode != 0 and "mha.seed=0 finished twice" in failed.stderr
  (tmp_path / "batched" / "cross_attention=mqa.seed=1" / "eval" / "test-100.json").unlink()
  failed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert failed.returncode != 0 and "unfinished" in failed.stderr
  assert "Traceback" not in failed.stderr


def test_budget_curve_picks_the_smallest_budget_near_the_best(tmp_path):
  """Five budgets with test WER 60 > 40 > 33 > 31 > 30.5: within 3 points of the best is 4000
  steps; the table shows each budget's gap and its training minutes (steps ÷ steps/s)."""
  from encdec import config  # pylint: disable=import-outside-toplevel
  sweep_dir, runs = tmp_path / "budget", {}
  for steps, wer in ((1000, 60.0), (2000, 40.0), (4000, 33.0), (8000, 31.0), (16000, 30.5)):
    name = f"num_steps={steps}.seed=0"
    runs[name] = {"train.num_steps": steps, "train.seed": 0}
    workdir = sweep_dir / name
    (workdir / "eval").mkdir(parents=True)
    cfg = config.load("cross_attention_study_v2:task=g2p_cmudict", runs[name])
    (workdir / "config.json").write_text(cfg.to_json())
    rows = [{"step": s, "train/steps_per_s": 10.0} for s in range(500, steps + 1, 500)]
    rows += [{"step": s, "eval/wer": wer + 10.0 * (steps - s) / steps}
             for s in range(1000, steps + 1, 1000)]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "eval" / f"test-{steps}.json").write_text(json.dumps({"wer": wer, "per": wer / 5}))
  (sweep_dir / "sweep.json").write_text(json.dumps({
      "config": "cross_attention_study_v2:task=g2p_cmudict", "sweep": "budget", "overrides": {},
      "runs": runs, "command": "encdec sweep --sweep budget"}))
  out = tmp_path / "results"
  subprocess.run([sys.executable, "-m", "experiments.budget_curve", str(sweep_dir), "--out",
                  str(out), "--hardware", "2 cores"], check=True, cwd=ROOT)
  text = (out / "budget_g2p_cmudict.md").read_text()
  assert "| 2000 | 40.00 | +9.50 | 1 | 3.3 |" in text
  assert "| 16000 | 30.50 | +0.00 | 1 | 26.7 |" in text
  assert "**4000 steps** (33.00)." in text and "not flattened" not in text
  assert (out / "budget_g2p_cmudict.png").stat().st_size > 10_000
  assert budget_curve_module().flattening_note({8000: 35.0, 16000: 30.5}, 3.0).startswith(
      " The curve has not flattened: the last step up (8000 -> 16000) still moved it by 4.50")


def budget_curve_module():
  from experiments import budget_curve  # pylint: disable=import-outside-toplevel
  return budget_curve


def test_study_architecture_arm_runs_the_best_variants_under_each_preset():
  """`best` is mha and the 4 chosen variants, seed-major (as is `recheck`, mha and the variants
  the G2P arm found different); `preset=` applies the preset's fields over the study's model
  (its own position scheme replaces positions=alibi)."""
  from encdec import config, model, sweep  # pylint: disable=import-outside-toplevel
  from encdec.configs import cross_attention_study_v2 as study  # pylint: disable=import-outside-toplevel
  for name, chosen in (("best", study.BEST), ("recheck", study.G2P_DIFFERENT)):
    runs = sweep.sweep_runs("cross_attention_study_v2:task=reverse", name)
    variants = ("mha",) + chosen
    assert len(set(variants)) == 5 and set(variants) <= set(model.CROSS_ATTENTION)
    assert runs[:5] == [{"model.cross_attention": v, "train.seed": 0} for v in variants]
    assert [r["train.seed"] for r in runs] == [s for s in study.SEEDS for _ in variants]
  plain = config.load("cross_attention_study_v2:task=reverse,positions=alibi")
  assert (plain.model.position_encoding, plain.model.preset) == ("alibi", "")
  for preset, positions, norm in (("vaswani", "sinusoidal", "post"),
                                  ("t5_v1_1", "t5_relative", "pre"), ("modern", "rope", "pre")):
    cfg = config.load(f"cross_attention_study_v2:task=reverse,positions=alibi,preset={preset}")
    assert (cfg.model.position_encoding, cfg.model.norm) == (positions, norm)
    assert cfg.model.d_model == plain.model.d_model and cfg.train == plain.train


def write_variants_sweep(directory: pathlib.Path, correct: dict[str, tuple[int, ...]]) -> None:
  """A finished variants sweep: variant -> examples right (of 50) per seed."""
  from test_report import write_run  # pylint: disable=import-outside-toplevel
  runs = {}
  for variant, per_seed in correct.items():
    for seed, c in enumerate(per_seed):
      name = f"cross_attention={variant}.seed={seed}"
      runs[name] = {"model.cross_attention": variant, "train.seed": seed}
      write_run(directory / name, runs[name], c, 100.0)
  (directory / "sweep.json").write_text(json.dumps({
      "config": "algorithmic:task=copy", "sweep": "variants", "overrides": {}, "runs": runs,
      "command": "encdec sweep --workdir sweep"}))


def test_study_summary_puts_each_variants_difference_beside_its_cost(tmp_path):
  """A variants sweep (mha 40/60% right, mqa 96/100%, gqa = mha) and a cost file: mqa's Δ is
  significant across seeds, gqa's is not; the costs are the inverse speed and the ratios."""
  write_variants_sweep(tmp_path / "sweep", {"mha": (20, 30), "mqa": (48, 50), "gqa": (20, 30)})
  ratios = {"mha": (1.0, 1.0, 1.0), "mqa": (1.25, 0.125, 1.1), "gqa": (1.1, 0.5, 0.98)}
  (tmp_path / "cost.json").write_text(json.dumps({
      "src_len": 256, "config": "bench", "cpu_model": "test CPU", "date": "2026-12-01",
      "variants": {v: {"decode_beam4_tokens_per_s_ratio": a,
                       "cache_bytes_per_source_token_ratio": b,
                       "train_tgt_tokens_per_s_ratio": c} for v, (a, b, c) in ratios.items()}}))
  command = [sys.executable, "-m", "experiments.study_v2_summary", "--sweep",
             f"copy={tmp_path / 'sweep'}", "--metric", "copy=symbol_accuracy", "--cost",
             str(tmp_path / "cost.json"), "--out", str(tmp_path / "out"), "--resamples", "300"]
  subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
  text = (tmp_path / "out" / "variants_summary.md").read_text()
  rows = {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")]
          for line in text.splitlines() if line.startswith("| ")}
  assert "Δ symbol_accuracy (2 seeds, higher is better)" in rows["variant"][1]
  assert rows["mqa"][1].startswith("+") and rows["mqa"][1].endswith("significant across seeds")
  assert rows["gqa"][1].startswith("+0.00 [") and rows["gqa"][1].endswith("not significant")
  assert rows["mqa"][2:] == ["0.80", "0.12", "1.10"]
  assert "mha" not in rows
  assert (tmp_path / "out" / "variants_quality_vs_cost.png").stat().st_size > 10_000
  assert "depend on the column" not in text                       # one column: no such table
  failed = subprocess.run(command[:-6] + ["--metric", "typo=wer", *command[-6:]], cwd=ROOT,
                          capture_output=True, text=True)
  assert failed.returncode == 2 and "--metric names no --sweep: typo" in failed.stderr
  assert "Traceback" not in failed.stderr


def test_study_summary_tells_whether_a_variants_difference_depends_on_the_column(tmp_path):
  """Two columns on the same examples: mqa far above mha in one and equal to it in the other
  (its verdict depends on the column), gqa equal to mha in both (it does not). A third column
  on the same examples but another metric is not paired with either."""
  write_variants_sweep(tmp_path / "a", {"mha": (20, 30), "mqa": (48, 50), "gqa": (20, 30)})
  write_variants_sweep(tmp_path / "b", {"mha": (20, 30), "mqa": (20, 30), "gqa": (20, 30)})
  ratios = {"decode_beam4_tokens_per_s_ratio": 1.0, "cache_bytes_per_source_token_ratio": 1.0,
            "train_tgt_tokens_per_s_ratio": 1.0}
  (tmp_path / "cost.json").write_text(json.dumps({"variants": {
      v: ratios for v in ("mha", "mqa", "gqa", "mla")}}))
  subprocess.run([sys.executable, "-m", "experiments.study_v2_summary",
                  "--sweep", f"A={tmp_path / 'a'}", "--sweep", f"B={tmp_path / 'b'}",
                  "--sweep", f"C={tmp_path / 'a'}", "--metric", "C=exact_match",
                  "--metric", "A=symbol_accuracy", "--metric", "B=symbol_accuracy",
                  "--cost", str(tmp_path / "cost.json"), "--out", str(tmp_path / "out"),
                  "--resamples", "300"], check=True, cwd=ROOT, capture_output=True)
  text = (tmp_path / "out" / "variants_summary.md").read_text()
  rows = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[3:5]
          for line in text.split("depend on the column?")[1].splitlines()
          if line.startswith("| ") and "−" in line and "variant" not in line}
  assert set(rows) == {("mqa", "A − B"), ("gqa", "A − B")}
  assert rows[("mqa", "A − B")][0].strip().startswith("+") and "significant" in rows[
      ("mqa", "A − B")][1]
  assert rows[("gqa", "A − B")][0].strip().startswith("+0.00 [+0.00, +0.00]")
  assert "significant" not in rows[("gqa", "A − B")][1]
  variant_rows = [line.split("|")[1].strip() for line in text.splitlines()
                  if line.startswith("| ") and "−" not in line.split("|")[2]]
  assert "mla" not in variant_rows      # a costed variant no sweep ran gets no row


def test_run_archive_carries_a_sweeps_results_without_checkpoints(tmp_path):
  """pack keeps finished runs' result files only, one reproducible file per run; unpack into a
  fresh directory gives the same report; it never overwrites a run the directory holds; a
  corrupt archive is a one-line error and writes nothing."""
  from encdec import report  # pylint: disable=import-outside-toplevel
  from experiments import run_archive  # pylint: disable=import-outside-toplevel
  sweep_dir, out = tmp_path / "sweep", tmp_path / "results" / "runs"
  write_variants_sweep(sweep_dir, {"mha": (20, 30), "mqa": (48, 50)})
  (sweep_dir / "cross_attention=mqa.seed=1" / "checkpoints" / "100").mkdir(parents=True)
  (sweep_dir / "cross_attention=mqa.seed=1" / "train.log").write_text("log\n")
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  unfinished = "cross_attention=gqa.seed=0"          # started, cut off before its final eval
  manifest["runs"][unfinished] = {"model.cross_attention": "gqa", "train.seed": 0}
  (sweep_dir / "sweep.json").write_text(json.dumps(manifest))
  (sweep_dir / unfinished).mkdir()
  (sweep_dir / unfinished / "config.json").write_text(
      (sweep_dir / "cross_attention=mha.seed=0" / "config.json").read_text())
  assert len(run_archive.pack(sweep_dir, out)) == 4
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["sweep.json"] + [f"cross_attention={v}.seed={s}.tar.xz" for v in ("mha", "mqa")
                        for s in (0, 1)])
  archive = out / "cross_attention=mqa.seed=1.tar.xz"
  first = archive.read_bytes()
  assert sorted(run_archive.read_archive(archive)) == [
      f"cross_attention=mqa.seed=1/{f}" for f in ("config.json", "decode_speed.json",
                                                  "eval/test-100-predictions.tsv",
                                                  "eval/test-100.json", "metrics.jsonl")]
  run_archive.pack(sweep_dir, out)
  assert archive.read_bytes() == first

  copy = tmp_path / "copy"
  assert len(run_archive.unpack(out, copy)) == 4

  def report_text(directory):                          # without its "Generated <time>" line
    text = report.write_report(directory, measure_speed=False).read_text()
    return [line for line in text.splitlines() if not line.startswith("Generated ")]
  original = report_text(sweep_dir)
  assert report_text(copy) == original
  assert any(line.startswith("| cross_attention=mqa | 2 |") for line in original)

  edited = copy / "cross_attention=mha.seed=0" / "metrics.jsonl"
  edited.write_text("{}\n")
  (copy / "cross_attention=mqa.seed=1" / "eval" / "test-100.json").unlink()
  assert run_archive.unpack(out, copy) == []           # both runs are there: left as they are
  assert edited.read_text() == "{}\n"
  assert not (copy / "cross_attention=mqa.seed=1" / "eval" / "test-100.json").exists()

  archive.write_bytes(first[:100])
  result = subprocess.run([sys.executable, "-m", "experiments.run_archive", "unpack",
                           str(out), str(tmp_path / "other")],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0 and "not a readable run archive" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "other").exists()


def test_differences_by_source_length_find_a_loss_on_long_sources_only(tmp_path):
  """latent right on every short source and wrong on most long ones, gqa = mha: latent's Δ is
  significant in the long bin alone; bins parse, split by quantiles, and a bad one is a
  one-line error."""
  from encdec import predictions_tsv  # pylint: disable=import-outside-toplevel
  from experiments import by_source_length  # pylint: disable=import-outside-toplevel
  write_variants_sweep(tmp_path / "sweep", {v: (50, 50) for v in ("mha", "gqa", "latent")})
  sources = [f"{i:02d}ab" for i in range(25)] + [f"{i:02d}abcdefghij" for i in range(25)]
  wrong = {("mha", 1): {3, 40}, ("gqa", 1): {3, 40}, ("latent", 0): set(range(30, 48)),
           ("latent", 1): set(range(26, 44)) | {3}}
  for run in (tmp_path / "sweep").glob("cross_attention=*"):
    key = (run.name.split("=")[1].split(".")[0], int(run.name[-1]))
    predictions_tsv.write(run / "eval" / "test-100-predictions.tsv",
                          ((s, [s], "x" if i in wrong.get(key, ()) else s, None, None)
                           for i, s in enumerate(sources)))
  out = tmp_path / "out" / "by_length"
  command = [sys.executable, "-m", "experiments.by_source_length", str(tmp_path / "sweep"),
             "--out", str(out), "--bins", "1-5,6-", "--resamples", "300"]
  subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
  text = out.with_suffix(".md").read_text()
  rows = {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")]
          for line in text.splitlines() if line.startswith("| ")}
  assert rows["group"][1:] == ["1-5 (25)", "6+ (25)"]
  assert rows["mha (baseline: exact_match)"][1:] == ["98.00", "98.00"]
  short, long = rows["latent"][1:]
  assert not short.endswith("*") and long.startswith("-70.00 [") and long.endswith("*")
  assert all(c.startswith("+0.00 [") and not c.endswith("*") for c in rows["gqa"][1:])
  assert out.with_suffix(".png").stat().st_size > 10_000
  lengths = np.array([1, 1, 2, 2, 2, 3, 7, 8, 9, 10])
  assert by_source_length.quantile_bins(lengths, 2) == [(1, 2), (3, 10)]
  assert by_source_length.parse_bins("1-5,6-")[1] == (6, by_source_length.OPEN)
  failed = subprocess.run(command[:-4] + ["--bins", "5-3"], cwd=ROOT, capture_output=True,
                          text=True)
  assert failed.returncode == 2 and "--bins: expected LOW-HIGH" in failed.stderr
  assert "Traceback" not in failed.stderr


STUB = """#!/usr/bin/env bash
printf '%s|' "$(basename "$0")" "$@" >> "$CALLS"; echo >> "$CALLS"
if [ "$1" = sweep ] && [ -n "${SWEEP_SLEEP:-}" ]; then
  trap 'echo "sweep stopped|" >> "$CALLS"; exit 0' TERM
  echo "sweep ready|" >> "$CALLS"
  sleep 60 & wait
elif [ "$1" = sweep ] && [ -n "${SWEEP_FAILS:-}" ]; then
  exit 1
elif [ "$1" = report ]; then
  mkdir -p "$2"
  touch "$2/report.md" "$2/report.json" "$2/learning_curves.png" "$2/main_metric.png"
fi
"""


def run_arms(tmp_path, *arms, sweep_sleep=False, sweep_fails=False) -> subprocess.Popen:
  """experiments/study_v2_arms.sh ARMS... with `encdec` and `python` stubs that log their
  arguments."""
  for name in ("encdec", "python"):
    (tmp_path / name).write_text(STUB)
    (tmp_path / name).chmod(0o755)
  env = dict(os.environ, ENCDEC=str(tmp_path / "encdec"), PYTHON=str(tmp_path / "python"),
             RUNS=str(tmp_path / "runs"), RESULTS=str(tmp_path / "results"),
             CALLS=str(tmp_path / "calls"), SWEEP_SLEEP="1" if sweep_sleep else "",
             SWEEP_FAILS="1" if sweep_fails else "")
  return subprocess.Popen(["bash", str(ROOT / "experiments" / "study_v2_arms.sh"), *arms],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def logged_calls(tmp_path) -> list[list[str]]:
  path = tmp_path / "calls"
  return [line.split("|")[:-1] for line in path.read_text().splitlines()] if path.exists() else []


def test_the_study_arms_script_sweeps_packs_and_writes_each_arms_pages_in_order(tmp_path):
  """G2P (WER and NLL reports, by word length), the length arm, the summary of both, de-en,
  the summary of all three; each arm's sweep is packed before its pages are written."""
  assert run_arms(tmp_path).wait(timeout=60) == 0
  calls = logged_calls(tmp_path)
  steps = [c[1] if c[0] == "encdec" else c[2].split(".")[-1] for c in calls]
  assert steps == ["sweep", "run_archive", "report", "report", "by_source_length",
                   "by_source_length", "sweep", "run_archive", "report", "study_v2_summary",
                   "sweep", "run_archive", "report", "by_source_length", "study_v2_summary"]
  sweeps = [c[c.index("--config") + 1].split(":")[1] for c in calls if c[1] == "sweep"]
  assert sweeps == ["task=g2p_cmudict", "task=reverse,positions=alibi", "task=ding_de_en"]
  runs, results = tmp_path / "runs" / "variants", tmp_path / "results"
  assert calls[1][3:] == ["pack", str(runs / "g2p_cmudict"),
                          str(results / "archive" / "variants_g2p_cmudict")]
  assert calls[3][-2:] == ["--metric", "nll"] and calls[8][-2:] == ["--metric", "symbol_accuracy"]
  summary = calls[-1]
  assert [summary[i + 1] for i, a in enumerate(summary) if a == "--sweep"] == [
      f"G2P={runs / 'g2p_cmudict'}", f"de-en={runs / 'ding_de_en'}",
      f"reverse, 17-32 symbols={runs / 'reverse_alibi'}"]
  assert [summary[i + 1] for i, a in enumerate(summary) if a == "--metric"] == [
      "G2P=wer", "de-en=nll", "reverse, 17-32 symbols=symbol_accuracy"]
  for page in ("variants_g2p_cmudict", "variants_g2p_cmudict/nll", "variants_reverse_alibi",
               "variants_ding_de_en"):
    assert sorted(p.name for p in (results / page).glob("*.*")) == [
        "learning_curves.png", "main_metric.png", "report.json", "report.md"]


def test_the_study_arms_script_runs_the_named_arms_only(tmp_path):
  """`g2p_64k` sweeps `recheck` (mha and the variants the G2P arm found different) at 64k steps
  into its own directory and archive, then writes its WER and NLL pages; an unknown arm name is
  a one-line error before anything runs."""
  assert run_arms(tmp_path, "g2p_64k").wait(timeout=60) == 0
  calls = logged_calls(tmp_path)
  assert [c[1] if c[0] == "encdec" else c[2].split(".")[-1] for c in calls] == [
      "sweep", "run_archive", "report", "report"]
  sweep_call = calls[0]
  assert sweep_call[sweep_call.index("--sweep") + 1] == "recheck"
  assert "--config.train.num_steps=64000" in sweep_call
  runs, results = tmp_path / "runs" / "recheck" / "g2p_cmudict_64k", tmp_path / "results"
  assert sweep_call[sweep_call.index("--workdir") + 1] == str(runs)
  assert calls[1][3:] == ["pack", str(runs), str(results / "archive" / "recheck_g2p_cmudict_64k")]
  assert calls[3][-2:] == ["--metric", "nll"]
  for page in ("recheck_g2p_cmudict_64k", "recheck_g2p_cmudict_64k/nll"):
    assert (results / page / "report.md").exists()
  (tmp_path / "calls").unlink()
  script = run_arms(tmp_path, "g2p", "g2p_128k")
  _, stderr = script.communicate(timeout=30)
  assert script.returncode == 2 and logged_calls(tmp_path) == []
  assert stderr.strip() == ("study_v2_arms.sh: unknown arm 'g2p_128k'; valid: g2p reverse de_en "
                            "g2p_64k")


def test_stopping_the_study_arms_script_stops_the_sweep_and_packs_what_finished(tmp_path):
  """SIGTERM during a sweep reaches the sweep (whose runs save checkpoints), then what finished
  is packed and the script exits 143 without writing pages."""
  script = run_arms(tmp_path, sweep_sleep=True)
  deadline = time.monotonic() + 60
  while ["sweep ready"] not in logged_calls(tmp_path) and time.monotonic() < deadline:
    time.sleep(0.1)                                 # until the sweep stub has set its trap
  script.send_signal(signal.SIGTERM)
  assert script.wait(timeout=30) == 143
  calls = logged_calls(tmp_path)
  assert calls[0][1] == "sweep" and calls[1:3] == [["sweep ready"], ["sweep stopped"]]
  assert calls[3][2:4] == ["experiments.run_archive", "pack"] and len(calls) == 4  # no pages


def test_a_failed_run_stops_the_study_arms_script_after_packing_the_others(tmp_path):
  """`encdec sweep` exits non-zero when a run failed: the finished ones are packed first."""
  assert run_arms(tmp_path, sweep_fails=True).wait(timeout=30) == 1
  assert [c[1] for c in logged_calls(tmp_path)] == ["sweep", "-m"]        # sweep, then pack
