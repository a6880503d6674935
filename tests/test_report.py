"""`encdec report`: seeds aggregated per variant, a paired bootstrap that marks a clear win and
not a tie, exact per-example statistics for corpus metrics, K/V cache bytes per source token,
and PNGs, on synthetic run directories (plus one pair of real tiny runs)."""
import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from encdec import cli, config, metrics, predictions_tsv, report
from encdec.report import accounting, render, speed, stats
from encdec.train import loop

ALGORITHMIC = "algorithmic:task=copy"
SMALL = {"model.d_model": 16, "model.d_ff": 32, "model.num_heads": 4,
         "model.num_encoder_layers": 1, "model.num_decoder_layers": 2, "train.num_steps": 100,
         "eval.final_split": "test", "task.max_len": 6}
NUM_EXAMPLES = 50


def write_run(workdir: pathlib.Path, overrides: dict, correct: int, decode_tps: float,
              nll: float | None = None) -> None:
  """A finished run without checkpoints: config, metrics, final eval json and predictions TSV
  (the first `correct` of NUM_EXAMPLES predictions right; with `nll`, every reference token
  at that NLL), a cached decode speed."""
  cfg = config.load(ALGORITHMIC, {**SMALL, **overrides})
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(cfg.to_json())
  seed = cfg.train.seed
  rows = [{"step": s, "train/loss": 3.0 - s / 50 + seed / 10, "train/tokens_per_s": 1000.0 + s}
          for s in (25, 50, 75, 100)] + [{"step": 50, "eval/exact_match": correct / 2}]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  sources = [f"src{i}" for i in range(NUM_EXAMPLES)]
  preds = [s if i < correct else "wrong" for i, s in enumerate(sources)]
  scores = metrics.exact_match_metrics(preds, [[s] for s in sources])
  if nll is not None:
    scores.update(nll=nll, perplexity=float(np.exp(nll)))
  (workdir / "eval").mkdir()
  (workdir / "eval" / "test-100.json").write_text(json.dumps(scores))
  predictions_tsv.write(workdir / "eval" / "test-100-predictions.tsv",
                        ((s, [s], p, None if nll is None else 2 * nll, 2)
                         for s, p in zip(sources, preds)))
  (workdir / speed.SPEED_FILE).write_text(json.dumps(
      {"step": 100, "split": "test", "batch_size": speed.SPEED_BATCH, "tokens_per_s": decode_tps}))


@pytest.fixture(name="sweep_dir")
def fixture_sweep_dir(tmp_path):
  """mha: 40% and 60% right; mqa: 96% and 100%; gqa: the same predictions as mha."""
  runs = {}
  for variant, correct, tps in (("mha", (20, 30), 100.0), ("mqa", (48, 50), 300.0),
                                ("gqa", (20, 30), 200.0)):
    for seed, c in enumerate(correct):
      overrides = {"model.cross_attention": variant, "train.seed": seed}
      name = f"cross_attention={variant}.seed={seed}"
      write_run(tmp_path / name, overrides, c, tps + 10 * seed)
      runs[name] = overrides
  (tmp_path / "sweep.json").write_text(json.dumps({
      "config": ALGORITHMIC, "sweep": "xattn", "overrides": {}, "runs": runs,
      "command": "encdec sweep --config configs/algorithmic.py --sweep xattn --workdir d"}))
  return tmp_path


def table_rows(text: str) -> dict[str, list[str]]:
  rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
  return {r[0].strip(" *"): [c.strip() for c in r] for r in rows[1:]}


def table_column(text: str, header: str) -> dict[str, str]:
  """One column of the report's table by its header (runs that score more metrics add columns)."""
  head = next(line for line in text.splitlines() if line.startswith("| "))
  index = [c.strip() for c in head.strip("|").split(" | ")].index(header)
  return {name: row[index] for name, row in table_rows(text).items()}


def test_report_table_significance_and_plots(sweep_dir):
  path = report.write_report(sweep_dir, measure_speed=False)
  text = path.read_text()
  rows = table_rows(text)
  assert list(rows) == ["cross_attention=mha", "cross_attention=mqa", "cross_attention=gqa"]
  mha, mqa, gqa = rows.values()
  # group, seeds, test/exact_match, test/symbol_accuracy, Δ [CI], p seeds (Holm), p examples,
  # verdict, MDE, params, cross params, cache, train tok/s, decode tok/s
  assert mha[1:8] == ["2", "50.00 ± 14.14", "60.00 ± 11.31", "(baseline)", "", "", ""]
  assert mqa[1:3] == ["2", "98.00 ± 2.83 *"]
  assert mqa[4].startswith("+48.00 [+") and mqa[5:8] == ["< 0.001", "< 0.001",
                                                         "significant across seeds"]
  # The same predictions as mha: Δ 0, but other seeds could differ by mha's own seed spread.
  assert gqa[1:3] == ["2", "50.00 ± 14.14"] and gqa[5:8] == ["1.000", "1.000", "not significant"]
  assert gqa[4] == "+0.00 [-22.00, +22.00]"
  assert mha[11] == "256" and mqa[11] == "64"  # K+V x (4 | 1) heads x head_dim 4 x f32 x 2 layers
  assert int(mha[9].replace(",", "")) > int(mqa[9].replace(",", ""))
  assert mha[12] == "1,075 ± 0" and mqa[13] == "305 ± 7"   # median after the first window
  assert "encdec sweep --config configs/algorithmic.py --sweep xattn" in text
  assert "hierarchical) paired bootstrap" in text and "baseline: **cross_attention=mha**" in text
  for png in ("learning_curves.png", "main_metric.png", "quality_vs_speed.png"):
    assert (sweep_dir / png).stat().st_size > 1000 and f"]({png})" in text
  # report.json: the same numbers, per run, for analysis elsewhere.
  results = json.loads((sweep_dir / report.RESULTS).read_text())
  assert (results["main"], results["baseline"]) == ("test/exact_match", "cross_attention=mha")
  mqa_json = results["groups"]["cross_attention=mqa"]
  assert mqa_json["runs"]["cross_attention=mqa.seed=0"]["test/exact_match"] == 96.0
  assert mqa_json["against_baseline"]["verdict"] == "significant across seeds"
  assert f"{mqa_json['against_baseline']['delta']:+.2f}" == mqa[4].split(" [")[0]
  assert results["groups"]["cross_attention=mha"]["against_baseline"] is None
  assert mqa_json["cache_bytes_per_source_token"] == 64


def test_the_references_nll_is_resampled_like_any_metric_and_partial_seeds_are_flagged(
    tmp_path):
  runs = {}
  for variant, nlls in (("mha", (2.0, 2.2, None)), ("mqa", (1.0, 1.2, 1.1))):
    for seed, nll in enumerate(nlls):
      overrides = {"model.cross_attention": variant, "train.seed": seed}
      name = f"cross_attention={variant}.seed={seed}"
      write_run(tmp_path / name, overrides, 25, 100.0, nll=nll)
      runs[name] = overrides
  (tmp_path / "sweep.json").write_text(json.dumps({
      "config": ALGORITHMIC, "sweep": "xattn", "overrides": {}, "runs": runs, "command": ""}))
  rows = table_rows(report.write_report(tmp_path, metric="nll", measure_speed=False).read_text())
  # mha's third seed wrote no NLL (an older run): its TSV has none, so nll cannot be tested.
  # group, seeds, test/nll, test/exact_match, test/perplexity, test/symbol_accuracy, Δ, ...
  assert rows["cross_attention=mha"][2] == "2.10 ± 0.14 (2 of 3 seeds)"
  assert rows["cross_attention=mqa"][2] == "1.10 ± 0.10" and rows["cross_attention=mqa"][6] == "n/a"
  (tmp_path / "cross_attention=mha.seed=2").rename(tmp_path / "gone")
  del runs["cross_attention=mha.seed=2"]
  (tmp_path / "sweep.json").write_text(json.dumps({
      "config": ALGORITHMIC, "sweep": "xattn", "overrides": {}, "runs": runs, "command": ""}))
  rows = table_rows(report.write_report(tmp_path, metric="nll", measure_speed=False).read_text())
  mqa = rows["cross_attention=mqa"]
  assert mqa[2] == "1.10 ± 0.10 *"             # lower is better: mqa's NLL is significantly lower
  delta, low, high = (float(x) for x in mqa[6].replace("[", "").replace("]", "").replace(
      ",", "").split())
  assert delta == pytest.approx(-1.0) and -1.2 <= low < delta < high <= -0.8


def test_baseline_choice_and_unknown_names(sweep_dir, capsys):
  text = report.write_report(sweep_dir, baseline="mqa", measure_speed=False).read_text()
  rows = table_rows(text)
  assert rows["cross_attention=mqa"][4] == "(baseline)"
  assert rows["cross_attention=mha"][2] == "50.00 ± 14.14 *"
  assert cli.main(["report", str(sweep_dir), "--baseline", "nope", "--no-decode-speed"]) == 2
  assert "unknown --baseline 'nope'; valid: cross_attention=mha" in capsys.readouterr().err
  assert cli.main(["report", str(sweep_dir / "missing")]) == 2


def test_runs_without_sweep_json_are_grouped_by_differing_config_keys(sweep_dir):
  (sweep_dir / "sweep.json").unlink()
  rows = table_rows(report.write_report(sweep_dir, measure_speed=False).read_text())
  assert set(rows) == {"cross_attention=gqa", "cross_attention=mha", "cross_attention=mqa"}
  assert rows["cross_attention=mha"][1] == "2"


def test_unfinished_runs_are_listed_and_left_out(sweep_dir):
  (sweep_dir / "cross_attention=gqa.seed=1" / "eval" / "test-100.json").unlink()
  text = report.write_report(sweep_dir, measure_speed=False).read_text()
  assert "Not finished (left out): cross_attention=gqa.seed=1." in text
  # One seed left, 40% (mha: 40% and 60%, the same first 20 right): worse on every example
  # that differs, so significant over test examples, but within mha's seed spread.
  gqa = table_rows(text)["cross_attention=gqa"]
  assert gqa[1:3] == ["1", "40.00"] and gqa[6:8] == ["< 0.001", "only across test examples"]


def test_mean_std_is_the_sample_standard_deviation():
  assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
  assert stats.mean_std([5.0]) == (5.0, 0.0)
  assert render.fmt([40.0, 60.0]) == "50.00 ± 14.14" and render.fmt([]) == "n/a"


def test_paired_bootstrap_marks_a_clear_difference_and_not_a_tie():
  errors = np.zeros((1, 200, 2))
  errors[..., 1] = 1.0
  better = errors.copy()
  errors[0, :100, 0] = 100.0                       # 50% error vs 10%
  better[0, :20, 0] = 100.0
  delta, p = stats.paired_bootstrap(errors, better, stats.ratio)
  assert delta == pytest.approx(-40.0) and p < 0.05
  assert stats.paired_bootstrap(errors, errors.copy(), stats.ratio) == (0.0, 1.0)
  # Deterministic: a fixed seed.
  assert stats.paired_bootstrap(errors, better, stats.ratio) == (delta, p)


def test_hierarchical_bootstrap_counts_the_spread_over_seeds():
  # Two groups of 3 seeds on 400 examples: other is 2 points better on average, but its seeds
  # scatter by ±10 points. Over examples alone that difference is clear; resampling the seeds
  # too, it is not. Statistics [seeds, N, 2]: (100 x error, 1).
  rng = np.random.default_rng(0)
  def group(rates):
    errors = np.stack([100.0 * (rng.random(400) < r) for r in rates])
    return np.stack([errors, np.ones_like(errors)], axis=-1)
  base, other = group([0.30, 0.30, 0.30]), group([0.18, 0.28, 0.38])
  delta, p_fixed = stats.paired_bootstrap(base, other, stats.ratio)
  same_delta, p_seeds = stats.paired_bootstrap(base, other, stats.ratio, resample_seeds=True)
  assert same_delta == delta                                # the observed Δ does not change
  assert p_seeds > 0.2 and p_seeds > 2 * p_fixed
  # A difference far beyond the seed spread stays significant.
  _, p_clear = stats.paired_bootstrap(base, group([0.05, 0.06, 0.07]), stats.ratio,
                                      resample_seeds=True)
  assert p_clear < 0.05


def test_holm_adjusts_in_rank_order_and_keeps_untested_comparisons():
  adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
  assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": None})
  assert stats.holm({"only": 0.2}) == {"only": 0.2}


@pytest.mark.parametrize("family, metric", [("g2p", "wer"), ("g2p", "per"),
                                            ("g2p", "exact_match"), ("text", "bleu"),
                                            ("text", "chrf"), ("exact", "exact_match")])
def test_per_example_statistics_sum_to_the_corpus_metric(family, metric):
  preds = ["HH AH L OW", "W ER L D", "T EH S T", "AH", "K AE T S"]
  refs = [["HH AH L OW", "HH EH L OW"], ["W ER L D"], ["T EH S"], ["B IY"], ["K AE T"]]
  per_example, reduce = stats.statistic(family, metric)
  expected = metrics.compute(family, preds, refs)[metric]
  tsv = predictions_tsv.Predictions(["a", "b", "c", "d", "e"], refs, preds)
  assert float(reduce(per_example(tsv).sum(0))) == pytest.approx(expected)


def test_a_control_far_off_is_drawn_at_the_edge_without_squeezing_the_rest(tmp_path,
                                                                          monkeypatch):
  from encdec import plots  # pylint: disable=import-outside-toplevel
  saved = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
  points = {"mqa": (0.75, 1.4, 0.6, 2.1, True), "gqa": (0.75, 0.6, -0.1, 1.3, False),
            "latent": (0.63, 1.0, 0.3, 1.8, False), "local": (1.0, -0.1, -0.9, 0.6, False),
            "none": (0.27, 64.4, 63.3, 65.6, True)}
  plots.differences_vs_cost({"G2P": points}, "cost", tmp_path / "x.png")
  ax = saved[0].axes[0]
  bottom, top = ax.get_ylim()
  assert -1.2 < bottom < -0.9 and 2.1 < top < 3.0            # the variants' intervals set it
  assert [t.get_text() for t in ax.texts if "none" in t.get_text()] == [
      "none: +64.4 [+63.3, +65.6] (off scale)"]
  del points["local"], points["latent"]                        # too few to call one off scale
  plots.differences_vs_cost({"G2P": points}, "cost", tmp_path / "y.png")
  assert saved[1].axes[0].get_ylim()[1] > 65


@pytest.mark.parametrize("variant, ratio", [("mqa", 4), ("gqa", 2), ("gated", 1)])
def test_cache_bytes_per_source_token_shrink_with_kv_heads(variant, ratio):
  mha = config.load(ALGORITHMIC, SMALL)
  other = config.load(ALGORITHMIC, {**SMALL, "model.cross_attention": variant,
                                    "model.cross_kv_heads": 2})
  per_token = accounting.cache_bytes_per_source_token(mha)
  assert per_token == 2 * 4 * 4 * 4 * 2              # K+V x heads x head_dim x f32 x layers
  assert accounting.cache_bytes_per_source_token(other) * ratio == per_token
  none = config.load(ALGORITHMIC, {**SMALL, "model.cross_attention": "none"})
  assert accounting.cache_bytes_per_source_token(none) == 0


@pytest.mark.slow   # an integration run (> 20 s); the quick suite covers its parts
def test_report_on_real_runs_measures_and_caches_decode_speed(tmp_path):
  tiny = {**SMALL, "task.num_train": 300, "task.num_eval": 32, "train.num_steps": 10,
          "train.batch_size": 16, "logging.every_steps": 5, "eval.every_steps": 100,
          "checkpoint.every_steps": 100, "logging.tensorboard": False}
  for variant in ("mha", "mqa"):
    loop.train(config.load(ALGORITHMIC, {**tiny, "model.cross_attention": variant}),
               tmp_path / variant)
  text = report.write_report(tmp_path).read_text()
  rows = table_rows(text)
  assert set(rows) == {"cross_attention=mha", "cross_attention=mqa"}
  decode = table_column(text, "decode tok/s")
  assert all(s != "n/a" and float(s.replace(",", "")) > 0 for s in decode.values()), decode
  cached = json.loads((tmp_path / "mqa" / speed.SPEED_FILE).read_text())
  assert cached["step"] == 10 and cached["max_len"] == 7 and cached["tokens_per_s"] > 0
  mtime = (tmp_path / "mqa" / speed.SPEED_FILE).stat().st_mtime_ns
  report.write_report(tmp_path)                    # cached: not measured again
  assert (tmp_path / "mqa" / speed.SPEED_FILE).stat().st_mtime_ns == mtime


def test_plot_labels_colours_and_off_scale_groups():
  from encdec import plots  # pylint: disable=import-outside-toplevel
  names = [f"cross_attention={v}" for v in ("mha", "mqa", "none")]
  assert plots.short_labels(names) == {n: n.split("=")[1] for n in names}
  mixed = ["cross_attention=mha.seed_group=1", "cross_attention=mqa"]
  assert plots.short_labels(mixed) == {n: n for n in mixed}     # more than one key: unchanged
  eleven = [f"v{i}" for i in range(11)]
  assert len(set(plots.colours(eleven).values())) == 11
  wer = {"mha": 56.5, "mqa": 57.2, "gqa": 57.0, "local": 56.6, "none": 100.0}
  assert plots.off_scale(wer) == {"none"}
  assert plots.off_scale({k: v for k, v in wer.items() if k != "none"}) == set()
  assert plots.off_scale({"a": 1.0, "b": 50.0, "c": 99.0}) == set()   # too few to call one off


@pytest.mark.parametrize("first", [2.2, 0.9])
def test_a_curve_far_off_at_its_end_is_named_not_drawn_into_the_range(first, tmp_path,
                                                                        monkeypatch):
  """G2P's train loss: every group starts near 2.2 (or 0.9), the control without
  cross-attention stays at 2.0 while the others fall to 0.2: the axis shows the others' range
  (past their first steps when those reach 2.0) and names the control."""
  from encdec import plots  # pylint: disable=import-outside-toplevel
  saved = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
  steps = range(0, 1100, 100)
  falling = lambda end: {s: first if s == 0 else end + 0.5 / (1 + s / 100) for s in steps}
  groups = {v: [falling(0.2 + i / 100)] for i, v in enumerate(("mha", "mqa", "gqa", "local"))}
  groups["none"] = [{s: first if s == 0 else 2.0 for s in steps}]
  plots.learning_curves({"train loss": groups}, tmp_path / "x.png")
  ax = saved[0].axes[0]
  assert ax.get_ylim()[1] < 1.0
  assert [t.get_text() for t in ax.texts] == ["off scale: none (ends at 2)"]


def test_the_main_metric_plot_shows_each_seed_on_the_groups_range(tmp_path, monkeypatch):
  """Differences of a point between groups at 35-37% WER stay visible: the axis spans them
  (not 0-100), the no-source control at 100% is named instead of drawn, every seed is a dot
  and the baseline's mean a line across."""
  from encdec import plots  # pylint: disable=import-outside-toplevel
  saved = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
  seeds = {"gated": [37.2, 36.8, 37.0], "local": [35.4, 35.2, 35.3], "mha": [35.8, 35.6, 35.4],
           "mqa": [36.9, 36.3, 36.2], "none": [100.0, 100.0, 100.0]}
  plots.metric_points(seeds, "test/wer", tmp_path / "x.png", baseline="mha")
  ax = saved[0].axes[0]
  bottom, top = ax.get_ylim()
  assert 34.5 < bottom < 35.2 and 37.2 < top < 38.0
  notes = [t.get_text() for t in ax.texts if "off scale" in t.get_text()]
  assert notes == ["off scale: none (100)"]
  dots = [line for line in ax.lines
          if line.get_linestyle() == "None" and len(line.get_ydata()) == 3]
  assert sorted(float(y) for line in dots for y in line.get_ydata()) == sorted(
      y for k, v in seeds.items() if k != "none" for y in v)
  assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == pytest.approx(35.6)
             for line in ax.lines)
  assert "mha (baseline)" in [t.get_text() for t in ax.get_xticklabels()]


def test_the_report_does_not_import_the_training_loop_nor_pyplot(sweep_dir):
  """A library call: no training loop, and no pyplot (which would pick a process-wide
  matplotlib backend); the PNGs are drawn all the same."""
  code = ("import sys; from encdec import report; "
          f"report.write_report({str(sweep_dir)!r}, measure_speed=False); "
          "print(' '.join(sorted(sys.modules)))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  modules = proc.stdout.split()
  assert "encdec.report.render" in modules and "encdec.train.loop" not in modules
  assert "matplotlib.pyplot" not in modules and (sweep_dir / "main_metric.png").exists()


def simulated_rejections(seeds: int, seed_spread: float, effect: float, studies: int = 200
                         ) -> tuple[float, float, float]:
  """(rejection rate of the hierarchical test, of the example-only test, mean MDE) over
  simulated studies: two groups of `seeds` runs on the same 300 test examples, each run's
  error rate drawn around 30% (the second group's around 30% + effect) with sd `seed_spread`."""
  rng = np.random.default_rng(1)

  def group(rate):
    rates = np.clip(rate + seed_spread * rng.standard_normal(seeds), 0.01, 0.99)
    errors = np.stack([100.0 * (rng.random(300) < r) for r in rates])
    return np.stack([errors, np.ones_like(errors)], axis=-1)

  results = [stats.compare(group(0.3), group(0.3 + effect), stats.ratio, resamples=400, seed=i)
             for i in range(studies)]
  return (np.mean([c.p_seeds < stats.SIGNIFICANCE for c in results]),
          np.mean([c.p_examples < stats.SIGNIFICANCE for c in results]),
          np.mean([c.mde for c in results]))


def test_one_seed_says_nothing_across_seeds_however_large_the_difference():
  rng = np.random.default_rng(0)
  errors = lambda rate, seeds: np.stack([np.stack([100.0 * (rng.random(300) < rate),
                                                   np.ones(300)], -1) for _ in range(seeds)])
  one = stats.compare(errors(0.3, 1), errors(0.6, 3), stats.ratio, resamples=200)
  assert one.p_seeds is None and one.p_examples < 0.001
  assert one.verdict == "only across test examples"
  two = stats.compare(errors(0.3, 2), errors(0.6, 2), stats.ratio, resamples=200)
  assert two.p_seeds < 0.05 and two.verdict == "significant across seeds"
  assert stats.holm({"one": one.p_seeds, "two": two.p_seeds})["one"] is None


@pytest.mark.slow
def test_hierarchical_test_is_calibrated_where_the_example_test_is_not():
  # No true difference, training seeds that matter (sd 3 points): the hierarchical test rejects
  # near the nominal 5%; the example-only test, blind to seed noise, far more often.
  hierarchical, examples, _ = simulated_rejections(seeds=3, seed_spread=0.03, effect=0.0)
  assert 0.01 <= hierarchical <= 0.10 and examples >= 0.15
  # Seeds that barely differ: conservative (it counts example noise twice), never liberal.
  hierarchical, _, _ = simulated_rejections(seeds=3, seed_spread=0.0, effect=0.0)
  assert hierarchical <= 0.05


@pytest.mark.slow
def test_hierarchical_test_detects_an_effect_of_its_minimum_detectable_size():
  _, _, mde = simulated_rejections(seeds=5, seed_spread=0.03, effect=0.0, studies=50)
  power, _, _ = simulated_rejections(seeds=5, seed_spread=0.03, effect=mde / 100)
  assert 7.0 < mde < 12.0      # error-rate points: 5 seeds, 300 examples, sd 3 points
  assert power >= 0.7          # 80% nominal (0.875 measured)


def test_differences_are_written_with_the_decimals_their_mde_needs():
  """WER points keep 2 decimals; an NLL difference of a few thousandths of a nat gets 4, so
  a significant Δ is not printed as +0.00 [+0.00, +0.01] (the cells: one digit of the seeds'
  spread)."""
  assert [render.decimals(m) for m in (1.2, 0.3, 0.0041, 0.013, 0.0, None)] == [2, 2, 4, 3, 2, 2]
  assert render.decimals(0.00075, significant=1) == 4     # a cell's ± for seeds 0.0008 apart
  nll = stats.Comparison(0.0036, (0.0009, 0.0066), 0.01, 0.001, 0.0041)
  wer = stats.Comparison(1.275, (0.52, 2.07), 0.01, 0.001, 1.08)
  assert render.delta_text(nll) == "+0.0036 [+0.0009, +0.0066]"
  assert render.delta_text(wer) == "+1.27 [+0.52, +2.07]"
  row = lambda **scores: render.Row(None, scores, (0, 0), 0.0, [], [])
  one_seed = [row(nll=[0.2832], wer=[35.69]), row(nll=[0.2874], wer=[36.11])]
  assert [render.column_decimals(one_seed, c) for c in ("nll", "wer")] == [3, 2]
  seeds = [row(nll=[0.28320, 0.28328], wer=[35.69, 36.4])]     # the seeds' spread decides
  assert [render.column_decimals(seeds, c) for c in ("nll", "wer")] == [5, 2]


def test_the_labels_of_points_close_together_do_not_overlap(tmp_path, monkeypatch):
  """The G2P panel at 3 seeds: five variants within 0.9-1.0 of mha's decode time and 0.4
  points of each other; each label is drawn apart from the others and names its own point."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.text import Text  # pylint: disable=import-outside-toplevel
  from encdec import plots  # pylint: disable=import-outside-toplevel
  saved = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
  points = {"all_layers": (0.98, 0.10, -0.57, 0.81, False), "local": (1.0, -0.25, -0.87, 0.36, False),
            "merged": (0.93, 0.11, -0.72, 0.91, False), "parallel": (0.95, 0.33, -0.27, 0.92, False),
            "shared_kv": (0.92, 0.27, -0.36, 0.85, False), "gated": (0.91, 1.42, 0.79, 2.12, True),
            "mqa": (0.75, 0.91, 0.17, 1.61, False), "none": (0.27, 64.4, 63.4, 65.5, True)}
  plots.differences_vs_cost({"G2P": points}, "cost", tmp_path / "x.png")
  fig = saved[0]
  renderer = FigureCanvasAgg(fig).get_renderer()
  fig.draw(renderer)
  texts = {t.get_text(): t for t in fig.axes[0].texts if "off scale" not in t.get_text()}
  assert sorted(texts) == sorted(set(points) - {"none"})
  # The text's own box (an annotation's window extent includes its leader line).
  boxes = {label: Text.get_window_extent(t, renderer) for label, t in texts.items()}
  for a, b in itertools.combinations(boxes, 2):
    assert not boxes[a].overlaps(boxes[b]), (a, b)
  for label, t in texts.items():
    assert t.xy == points[label][:2]                 # each label still points at its own point
