"""The ding_de_en task: the builder on a small file in Ding's format written here (cleaning,
dedupe, the split rule), the missing-file error, the tokenizer, a 2-step training run; and, when
Debian's trans-de-en is installed, the counts on the real dictionary (slow)."""
import collections
import json
import os

import pytest

from encdec import cli, config
from encdec.errors import ConfigError, DataError
from encdec.data import ding, tasks
from encdec.data.builders import ding_de_en

# Sentences whose German hashes into dev / test / train (pinned: the split rule is stable).
DEV, TEST, TRAIN = (0, 10, 32), (17, 60, 88), (1, 2, 3, 4, 5, 6, 7, 8)
HELD_OUT_BUT_SHORT = 99  # a test sentence, but another of its pairs is short: all train
# Phrases whose German hashes into dev / test of the `phrases` configuration (pinned likewise).
PHRASE_DEV, PHRASE_TEST = (3, 30), (13, 133)
PHRASE_WITH_ALTERNATIVE = 230  # a dev phrase, but another of its pairs has a "/": all train


def phrase(i):
  return f"der graue Hund Nummer {i}", f"the grey dog number {i}"


def sentence(i):
  return (f"Der Hund Nummer {i} schläft heute im Garten.",
          f"The dog number {i} sleeps in the garden today.")


LINES = [
    "# Version :: devel test",
    "# License :: GPL Version 2 or later; GNU General Public License",
    "Hund {m} [zool.] | Hunde {pl} | Der Hund bellt. :: dog | dogs | The dog barks.",
    "Katze {f}; Mieze {f} [ugs.] | Katzen {pl} :: cat; puss [coll.] | cats",
    "Aal {m} (auf der Speisekarte) [cook.] :: Eel (on a menu)",
    "etw. ausblenden {vt} [comp.] | ausblendend :: to hide {hid; hidden} sth. | hiding",
    "Armenrecht {n} [jur.] ~Prozesskostenhilfe :: in forma pauperis /IFP/ ~legal aid",
    "(Arbeit; Auftrag) vergeben {vt} :: to farm out <> work (to sb.) [Br.]",
    "Hund {m} [zool.] | Hunde {pl} | Der Hund bellt. :: dog | dogs | The dog barks.",  # duplicate
    "Das ist ganz alleine deine Schuld!; Es ist alles deine Schuld! :: It’s all your own fault.",
    "Ich bin durch die Hölle gegangen. :: I’ve been/gone through hell.",   # "/": train only
    "Baum {m} | Bäume {pl} :: tree",                                        # | counts differ
    "a line without the separator",
    "{f} :: [Br.]",                                                         # empty when cleaned
    *(" :: ".join(sentence(i)) for i in DEV + TEST + TRAIN),
    " :: ".join(sentence(DEV[0])),                                          # duplicate sentence
    "Der Hund Nummer 0 schläft heute im Garten! :: Dog zero sleeps in the garden today!",
    " :: ".join(sentence(HELD_OUT_BUT_SHORT)),
    f"der Hund Nummer {HELD_OUT_BUT_SHORT} schläft heute im Garten :: dog {HELD_OUT_BUT_SHORT}",
    *(" :: ".join(phrase(i)) for i in PHRASE_DEV + PHRASE_TEST + (PHRASE_WITH_ALTERNATIVE,)),
    f"{phrase(PHRASE_WITH_ALTERNATIVE)[0]} :: the grey dog/hound {PHRASE_WITH_ALTERNATIVE}",
]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
  """The directory holding the tiny file (de-en); prepared data and vocabularies go there."""
  root = tmp_path_factory.mktemp("ding")
  (root / "de-en").write_text("\n".join(LINES) + "\n", encoding="utf-8")
  return root


def tiny_task(root, held_out):
  """(task config, task) of the tiny file, held-out configuration `held_out`."""
  cfg = tasks.default_config("ding_de_en")
  cfg.update(path=str(root / "de-en"), data_dir=str(root / "tfds"), spm_dir=str(root / "spm"),
             vocab_size=120, held_out=held_out)
  return cfg, tasks.build(cfg)


@pytest.fixture(scope="module")
def tiny(tiny_file):
  return tiny_task(tiny_file, "sentences")


def test_cleaning_removes_annotations_and_keeps_the_first_synonym():
  clean = ding_de_en.clean
  assert clean("Katze {f}; Mieze {f} [ugs.]") == "Katze"
  assert clean("Aal {m} (auf der Speisekarte) [cook.]") == "Aal"
  assert clean("to hide {hid; hidden} sth.") == "to hide sth."
  assert clean("(Arbeit; Auftrag) vergeben {vt}") == "vergeben"
  assert clean("to farm out <> work (to sb.) [Br.]") == "to farm out work"
  assert clean("in forma pauperis /IFP/ ~legal aid") == "in forma pauperis"
  assert clean("Are you pulling my leg (or what)?") == "Are you pulling my leg?"
  assert clean("It’s  all ((nested) note) fine") == "It's all fine"
  assert clean("{f} [Br.]") == ""
  assert ding_de_en.parse_line("# a comment :: no") == []
  assert ding_de_en.parse_line("Baum {m} | Bäume {pl} :: tree") == []
  assert ding_de_en.parse_line("Hund {m} | Hunde {pl} :: dog | dogs") == [("Hund", "dog"),
                                                                        ("Hunde", "dogs")]


def test_dedupe_and_what_each_split_holds(tiny):
  _, task = tiny
  pairs = {s: [(ex["src"], ex["tgt"]) for ex in task.train_source(s)] for s in task.splits}
  for split in pairs:
    assert len(pairs[split]) == len(set(pairs[split])), split      # exact duplicates kept once
  assert pairs["train"].count(("Hund", "dog")) == 1
  assert {("Katze", "cat"), ("Aal", "Eel"), ("etw. ausblenden", "to hide sth."),
          ("vergeben", "to farm out work"), ("Armenrecht", "in forma pauperis"),
          ("Das ist ganz alleine deine Schuld!", "It's all your own fault."),
          ("Ich bin durch die Hölle gegangen.", "I've been/gone through hell.")} <= set(
              pairs["train"])
  assert not any("Baum" in de or "separator" in de for de, _ in pairs["train"])
  assert {de for de, _ in pairs["dev"]} == {sentence(i)[0] for i in DEV} | {
      "Der Hund Nummer 0 schläft heute im Garten!"}             # same normalised German: dev
  assert {de for de, _ in pairs["test"]} == {sentence(i)[0] for i in TEST}
  assert sentence(HELD_OUT_BUT_SHORT) in pairs["train"]          # its group has a short pair
  for split in ("dev", "test"):
    assert all(ding_de_en.is_sentence_pair(de, en) for de, en in pairs[split])
    assert all(min(len(de.split()), len(en.split())) >= 4 for de, en in pairs[split])
  # Evaluation: one example per German text, all its English texts as references.
  assert [len(e.refs) for e in task.eval_examples("dev")] == [1] * 4


def test_split_is_deterministic_and_disjoint_by_normalised_german(tiny, tmp_path):
  cfg, task = tiny
  keys = {s: {ding_de_en.german_key(e.src) for e in task.eval_examples(s)} for s in task.splits}
  for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
    assert not keys[a] & keys[b], (a, b)
  again = tasks.build({**cfg.to_dict(), "data_dir": str(tmp_path / "again")})  # prepared afresh
  for split in task.splits:
    assert again.eval_examples(split) == task.eval_examples(split)
  pairs = ding_de_en.read_pairs(cfg.path)
  assert as_sets(ding_de_en.split_pairs(pairs)) == as_sets(ding_de_en.split_pairs(pairs[::-1]))


def test_the_phrases_configuration_holds_out_phrases_and_trains_on_sentences(tiny_file, tiny):
  _, task = tiny_task(tiny_file, "phrases")
  pairs = {s: [(ex["src"], ex["tgt"]) for ex in task.train_source(s)] for s in task.splits}
  assert set(pairs["dev"]) == {phrase(i) for i in PHRASE_DEV}
  assert set(pairs["test"]) == {phrase(i) for i in PHRASE_TEST}
  assert phrase(PHRASE_WITH_ALTERNATIVE) in pairs["train"]     # its group has a "/" pair
  for split in ("dev", "test"):
    assert all(ding_de_en.is_phrase_pair(de, en) for de, en in pairs[split])
  # The sentences configuration's held-out sentences are train here, and the other way round;
  # words and phrases no configuration holds out are train in both.
  _, sentences = tiny
  held_out = {s: {e.src for e in sentences.eval_examples(s)} for s in ("dev", "test")}
  assert held_out["dev"] | held_out["test"] <= {de for de, _ in pairs["train"]}
  assert {phrase(i) for i in PHRASE_DEV + PHRASE_TEST} <= {
      (ex["src"], ex["tgt"]) for ex in sentences.train_source("train")}
  assert set(pairs["train"]) & {(ex["src"], ex["tgt"]) for ex in sentences.train_source(
      "train")} >= {("Hund", "dog"), ("Katze", "cat")}


def test_an_unknown_held_out_configuration_is_one_line(tiny_file):
  with pytest.raises(ConfigError, match=r"^unknown task.held_out 'phrase'; valid: "
                                        r"sentences, phrases$"):
    tiny_task(tiny_file, "phrase")


def as_sets(by_split):
  """{split: {(German, sorted English texts)}}: a split's content regardless of order."""
  return {s: {(de, tuple(sorted(ens))) for de, ens in texts.items()}
          for s, texts in by_split.items()}


def test_tokenizer_is_joint_and_round_trips(tiny):
  _, task = tiny
  tok = task.src_tokenizer
  assert task.tgt_tokenizer is tok and tok.special.model_fields() == {
      "pad_id": 0, "bos_id": 1, "eos_id": 2}
  for ex in task.train_source("train"):
    for text in (ex["src"], ex["tgt"]):
      ids = tok.encode(text)
      assert all(3 < i < tok.vocab_size for i in ids) and tok.decode(ids + [2, 5]) == text
  assert task.normalize_source("  Der  Hund ’s ") == "Der Hund 's"


def test_a_missing_file_is_one_line_naming_the_fix(tmp_path, capsys):
  cfg = tasks.default_config("ding_de_en")
  cfg.update(path=str(tmp_path / "nowhere"), data_dir=str(tmp_path))
  with pytest.raises(DataError, match=r"install it with `apt-get install trans-de-en` or set "
                                      r"--config.task.path=FILE") as error:
    tasks.build(cfg)
  assert "\n" not in str(error.value) and str(tmp_path / "nowhere") in str(error.value)
  (tmp_path / "words").write_text("# a comment\nHund {m} :: dog\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"words yields no validation / test pairs"):
    tasks.build({**cfg.to_dict(), "path": str(tmp_path / "words")})
  status = cli.main(["train", "--config", "translation_de_en", "--workdir", str(tmp_path / "run"),
                     f"--config.task.path={tmp_path / 'nowhere'}"])
  stderr = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and stderr[-1].startswith("encdec train: error: Ding dictionary ")


@pytest.mark.slow   # 25 s; the quick suite scores BLEU / chrF in test_metrics.py
def test_two_training_steps_then_bleu_and_chrf(tiny, tmp_path):
  from encdec.train import loop  # pylint: disable=import-outside-toplevel
  task_cfg, _ = tiny
  cfg = config.load("translation_de_en:size=tiny", {
      **{f"task.{k}": task_cfg[k] for k in ("path", "data_dir", "spm_dir", "vocab_size")},
      "model.d_model": 32, "model.d_ff": 64, "model.num_encoder_layers": 1,
      "model.num_decoder_layers": 1, "train.num_steps": 2, "train.batch_size": 8,
      "task.max_src_len": 48, "task.max_tgt_len": 48, "eval.every_steps": 100,
      "checkpoint.every_steps": 100, "logging.every_steps": 1, "eval.batch_size": 8})
  scores = loop.train(cfg, tmp_path)
  assert {"bleu", "chrf"} <= set(scores) and scores["num_examples"] == len(TEST)
  saved = json.loads((tmp_path / "eval" / "test-2.json").read_text())
  assert saved["bleu_signature"].startswith("nrefs:1|") and "chrf_signature" in saved


def test_packaged_config_sizes():
  small, base = (config.load(f"translation_de_en:size={s}") for s in ("small", "base"))
  assert small.task.name == base.task.name == "ding_de_en"
  assert small.decode.beam_size == base.decode.beam_size == 4
  assert small.model.d_model < base.model.d_model


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(ding.DEFAULT_PATH),
                    reason="the Ding dictionary is not installed (apt-get install trans-de-en)")
def test_counts_on_the_installed_dictionary(tmp_path):
  """Prepares the real file twice (about 20 s each); the counts are in the builder's docstring."""
  counts = {(held_out, split): ding.read_split(ding.DEFAULT_PATH, str(tmp_path), held_out, split)
            for held_out in ("sentences", "phrases") for split in ("train", "validation", "test")}
  pairs = {key: sum(len(ens) for _, ens in rows) for key, rows in counts.items()}
  kinds = collections.Counter(
      (key, "sentence" if ding_de_en.is_sentence_pair(de, en) else
       "phrase" if ding_de_en.is_phrase_pair(de, en) else "other")
      for key, rows in counts.items() for de, ens in rows for en in ens)
  for held_out, kind in (("sentences", "sentence"), ("phrases", "phrase")):
    assert 300_000 < pairs[held_out, "train"] < 450_000
    for split in ("validation", "test"):
      assert 800 <= len(counts[held_out, split]) <= 1_300, (held_out, split)
      assert kinds[(held_out, split), kind] == pairs[held_out, split], (held_out, split)
  assert 14_000 <= sum(kinds[(held_out, split), "sentence"]
                       for held_out, split in pairs if held_out == "sentences") <= 22_000
  assert kinds[("phrases", "train"), "sentence"] == sum(
      kinds[("sentences", split), "sentence"] for split in ("train", "validation", "test"))


def test_the_cross_attention_study_translates_held_out_phrases():
  cfg = config.load("cross_attention_study_v2:task=ding_de_en")
  assert cfg.task.name == "ding_de_en" and cfg.task.held_out == "phrases"
  assert cfg.train.bucket_width > 0 and not cfg.train.pack         # every variant, same batches
  assert cfg.eval.final_split == "test" and cfg.eval.extra_final_splits == ""
  assert cfg.model.dropout_rate > 0 and cfg.train.label_smoothing > 0     # real data, as g2p
