"""The Phonetisaurus G2P peer (experiments/peers/phonetisaurus_g2p.py): lexicon export, a real
train/decode on a tiny regular lexicon, our scoring and TSV format, resuming, the bootstrap.

Tests that run the binaries skip when the optional `phonetisaurus` package is not installed."""
import json
import pathlib

import pytest

from encdec import metrics, predictions_tsv
from encdec.data import base
from experiments.peers import phonetisaurus_g2p as peer

CONSONANTS = {"b": "B", "d": "D", "k": "K", "l": "L", "m": "M", "n": "N", "p": "P", "s": "S",
              "sh": "SH", "t": "T"}
VOWELS = {"a": ("AE",), "ee": ("IY",), "i": ("IH",), "o": ("AA", "AO"), "u": ("AH",)}


class TinyTask:
  """A task-shaped stub: consonant-vowel-consonant words with a regular spelling ("o" has two
  pronunciations: two references, two training pairs); every 10th word dev, every 10th + 5 test."""
  metric_family = "g2p"

  def __init__(self):
    words = {}
    for c1, p1 in CONSONANTS.items():
      for v, vowel_prons in VOWELS.items():
        for c2, p2 in CONSONANTS.items():
          words[c1 + v + c2] = tuple(f"{p1} {pv} {p2}" for pv in vowel_prons)
    self.split = {"train": [], "dev": [], "test": []}
    for i, (word, prons) in enumerate(sorted(words.items())):
      name = {0: "dev", 5: "test"}.get(i % 10, "train")
      self.split[name].append((word, prons))

  def train_source(self, split):
    return [{"src": w, "tgt": p} for w, prons in self.split[split] for p in prons]

  def eval_examples(self, split):
    return [base.EvalExample(w, prons) for w, prons in self.split[split]]


@pytest.fixture(scope="module")
def env():
  pytest.importorskip("phonetisaurus")
  return peer.tool_env()


@pytest.fixture(scope="module")
def tiny_run(env, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("phonetisaurus")
  lines = []
  summary = peer.run(TinyTask(), workdir, [2, 3], env, log=lines.append)
  return workdir, summary, lines


def test_missing_package_is_one_line_naming_the_pip_install(monkeypatch, tmp_path):
  monkeypatch.setattr(peer.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(SystemExit) as info:
    peer.main(["--workdir", str(tmp_path / "w")])
  message = str(info.value.code)
  assert "pip install phonetisaurus==0.3.0" in message and "\n" not in message
  assert not (tmp_path / "w").exists()    # nothing started


def test_lexicon_export_is_the_tasks_training_pairs():
  task = TinyTask()
  lines = peer.lexicon_text(task).splitlines()
  assert [tuple(line.split("\t")) for line in lines] == [
      (ex["src"], ex["tgt"]) for ex in task.train_source("train")]
  word, prons = next((w, prons) for w, prons in task.split["train"] if len(prons) == 2)
  assert {f"{word}\t{p}" for p in prons} <= set(lines)    # every pronunciation has its line


def test_decoder_output_parsing_and_our_scoring_on_a_hand_made_case():
  decoded = peer.parse_decoded("cat\t1.5\tK AE T\nread\t2.0\tR IY D\nxq\t\t\n")
  assert decoded == {"cat": "K AE T", "read": "R IY D", "xq": ""}
  task = TinyTask()
  examples = [base.EvalExample("cat", ("K AE T",)), base.EvalExample("read", ("R EH D", "R IY D")),
              base.EvalExample("xq", ("K S",)), base.EvalExample("dog", ("D AO G",))]
  predictions = peer.predictions_for(examples, decoded)
  assert [p.prediction for p in predictions] == ["K AE T", "R IY D", "", ""]
  from encdec import evaluate
  scores = evaluate.score(task, predictions)
  # 2 of 4 words wrong; phoneme edits: 0 + 0 + 2 ("" vs K S) + 3 ("" vs D AO G) over 3+3+2+3.
  assert scores["wer"] == pytest.approx(50.0)
  assert scores["per"] == pytest.approx(100.0 * 5 / 11)
  assert scores == metrics.g2p_metrics([p.prediction for p in predictions],
                                       [list(e.refs) for e in examples])


def test_trains_tunes_and_decodes_a_tiny_lexicon(tiny_run):
  workdir, summary, _ = tiny_run
  assert set(summary["dev"]) == {"2", "3"} and summary["order"] in (2, 3)
  assert summary["order"] == peer.best_order({int(k): v for k, v in summary["dev"].items()})
  # The spelling is regular: unseen test words come out right (either "o" pronunciation).
  assert summary["test"]["wer"] <= 10.0 and summary["test"]["num_examples"] == 50
  assert summary["data"]["lexicon_lines"] == len(TinyTask().train_source("train"))
  seconds = summary["seconds"]
  assert seconds["train_wall"] > 0 and seconds["train_cpu"] > 0 and seconds["decode_test_wall"] > 0
  assert seconds["tuning_wall"] >= seconds["train_wall"]
  assert set(seconds["stages"]) == {"align", "estimate_order2", "estimate_order3", "convert_order2",
                                    "convert_order3", "decode_dev_order2", "decode_dev_order3",
                                    f"decode_test_order{summary['order']}"}
  assert summary["machine"]["cpu_model"]
  assert json.loads((workdir / "eval" / "peer.json").read_text())["test"] == summary["test"]


def test_predictions_tsv_round_trips_through_report_stats(tiny_run):
  _, summary, _ = tiny_run
  read = predictions_tsv.read(pathlib.Path(summary["predictions"]))
  task = TinyTask()
  assert read.sources == [w for w, _ in task.split["test"]]
  assert read.refs == [list(prons) for _, prons in task.split["test"]]
  assert metrics.g2p_metrics(read.predictions, read.refs) == summary["test"]


def test_rerun_skips_finished_stages(tiny_run, env):
  workdir, summary, _ = tiny_run
  fst = workdir / "model" / f"order{summary['order']}.fst"
  before = fst.stat().st_mtime_ns
  lines = []
  again = peer.run(TinyTask(), workdir, [2, 3], env, log=lines.append)
  assert any(": done (" in line for line in lines)
  assert not any(line.endswith(" ...") for line in lines)    # no stage started again
  assert fst.stat().st_mtime_ns == before
  assert again["test"] == summary["test"] and again["seconds"] == summary["seconds"]


def test_a_workdir_from_other_data_is_refused_not_mixed(tiny_run, env):
  workdir, _, _ = tiny_run
  task = TinyTask()
  task.split["train"] = task.split["train"][1:]
  before = (workdir / "lexicon" / "train.tsv").read_text()
  with pytest.raises(SystemExit, match="differs from the task's current train split; use a fresh"):
    peer.run(task, workdir, [2, 3], env, log=lambda line: None)
  assert (workdir / "lexicon" / "train.tsv").read_text() == before


def _write_tsv(path: pathlib.Path, rows) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("source\treferences\tprediction\n"
                  + "".join(f"{s}\t{' | '.join(r)}\t{p}\n" for s, r, p in rows))
  return path


def test_compare_pairs_words_and_bootstraps_with_report_stats(tmp_path):
  refs = {"a": ("EY",), "b": ("B IY",), "c": ("S IY", "K IY"), "d": ("D IY",)}
  peer_tsv = _write_tsv(tmp_path / "peer.tsv",
                        [(w, r, r[0]) for w, r in refs.items()][:2]
                        + [("c", refs["c"], "S EH"), ("d", refs["d"], "T IY")])
  run = tmp_path / "run"
  _write_tsv(run / "eval" / "test-50-predictions.tsv", [])     # older: ignored
  newest = _write_tsv(run / "eval" / "test-100-predictions.tsv",   # other order, 1 wrong
                      [("d", refs["d"], "D IY"), ("c", refs["c"], "K IY"), ("b", refs["b"], "B"),
                       ("a", refs["a"], "EY")])
  beam = _write_tsv(run / "eval" / "test-beam4-100-predictions.tsv",
                    [(w, r, "S EH" if w == "c" else ("T IY" if w == "d" else r[0]))
                     for w, r in refs.items()])
  assert peer.run_predictions(run) == sorted([newest, beam], key=str)
  better = peer.compare(peer_tsv, newest, resamples=200)
  assert better["peer"]["wer"] == 50.0 and better["other"]["wer"] == 25.0
  assert better["delta_wer"] == pytest.approx(-25.0) and 0.0 <= better["p_wer"] <= 1.0
  same = peer.compare(peer_tsv, beam, resamples=200)
  assert same["delta_wer"] == 0.0 and same["p_wer"] == 1.0 and same["delta_per"] == 0.0
  table = peer.comparison_table([better, same])
  assert "| -25.00 |" in table and "| +0.00 | 1.0000 |" in table
  assert peer.format_p(0.0, 10000) == "< 0.0002"
  other_words = _write_tsv(tmp_path / "x.tsv", [("z", ("Z IY",), "Z IY")])
  with pytest.raises(SystemExit, match="other test words"):
    peer.compare(peer_tsv, other_words)
  (tmp_path / "empty").mkdir()
  with pytest.raises(SystemExit, match="no test predictions"):
    peer.run_predictions(tmp_path / "empty")
  with pytest.raises(SystemExit, match="no such run directory"):
    peer.run_predictions(tmp_path / "missing")


@pytest.mark.slow
def test_lexicon_export_is_exactly_the_cmudict_train_split(tmp_path):
  from encdec.data import tasks
  cfg = tasks.default_config("g2p_cmudict")
  cfg.data_dir = str(tmp_path / "tfds")     # never the user's ~/tensorflow_datasets
  task = tasks.build(cfg)
  lines = peer.lexicon_text(task).splitlines()
  pairs = sorted(tuple(line.split("\t")) for line in lines)
  assert pairs == sorted((w, p) for w, prons in task.words("train") for p in prons)
  held_out = {w for split in ("dev", "test") for w, _ in task.words(split)}
  assert not {w for w, _ in pairs} & held_out
  assert all(not any(ch.isdigit() for ch in p) for _, p in pairs)    # stress removed
  assert not any(set(line) & set("}|_") for line in lines)          # Phonetisaurus' reserved
