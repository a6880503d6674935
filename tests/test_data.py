"""Tests of encdec/data: tokenizers, tasks (G2P, algorithmic, parallel_text, wmt) and the grain
pipeline (shapes, BOS/EOS/PAD layout, packing, sharding, checkpointing, drop counting)."""
import collections
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from encdec.errors import ConfigError, DataError
from encdec.data import g2p, pipeline, tasks
from encdec.data.builders import cmudict_g2p
from encdec.data.tokenizers import (BOS, EOS, PAD, UNK, CharTokenizer, SentencePieceTokenizer,
                                    SymbolTokenizer, train_sentencepiece)


# ----------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def g2p_cfg(tmp_path_factory):
  cfg = tasks.default_config("g2p_cmudict")
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))  # never the user's ~/tensorflow_datasets
  return cfg


@pytest.fixture(scope="session")
def g2p_task(g2p_cfg):
  return tasks.build(g2p_cfg)


def algo(name, **overrides):
  cfg = tasks.default_config(name)
  cfg.update(overrides)
  return cfg, tasks.build(cfg)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# --------------------------------------------------------------------------------- registry

def test_unknown_task_name_lists_valid_names():
  with pytest.raises(ConfigError,
                     match=r"unknown task.name 'g2p'; valid: add, copy, ding_de_en, g2p_cmudict"):
    tasks.default_config("g2p")
  cfg = tasks.default_config("copy")
  cfg.name = "nope"
  with pytest.raises(ConfigError, match="unknown task.name 'nope'"):
    tasks.build(cfg)


def test_build_rejects_unknown_field_and_fills_missing_ones():
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['lenght'\]"):
    tasks.build({"name": "copy", "lenght": 3})
  task = tasks.build({"name": "copy"})
  assert task.cfg.max_src_len == tasks.default_config("copy").max_src_len


def test_normalize_source():
  assert tasks.build({"name": "add"}).normalize_source(" 12 + 3 ") == "12+3"
  assert tasks.TASKS["g2p_cmudict"].normalize_source(None, " Hello ") == "hello"


def test_every_default_config_has_the_common_fields():
  for name in tasks.TASKS:
    cfg = tasks.default_config(name)
    assert cfg.name == name
    assert cfg.max_src_len > 0 and cfg.max_tgt_len > 0


# ------------------------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trip_and_specials():
  tok = CharTokenizer("abc'")
  assert tok.vocab_size == 8
  assert tok.encode("cab'") == [6, 4, 5, 7]
  assert tok.encode("az") == [4, UNK]
  assert tok.decode(tok.encode("abc'")) == "abc'"
  assert tok.decode([BOS, 4, PAD, 5, EOS, 6]) == "ab"          # stops at EOS, drops PAD/BOS
  assert tok.decode(np.asarray([[4, 5, EOS]])) == "ab"         # numpy input
  assert tok.decode([4, UNK]) == "a\u2047"
  assert tok.pieces([BOS, 4, UNK, EOS, PAD]) == ["<s>", "a", "<unk>", "</s>", "<pad>"]
  with pytest.raises(ValueError, match="duplicate"):
    CharTokenizer("aa")


def test_symbol_tokenizer_round_trip():
  tok = SymbolTokenizer(cmudict_g2p.PHONEMES)
  ids = tok.encode("HH AH L OW")
  assert min(ids) >= 4 and len(ids) == 4
  assert tok.decode(ids + [EOS, 5]) == "HH AH L OW"
  assert tok.encode("HH XX") == [tok.encode("HH")[0], UNK]
  assert tok.pieces(ids) == ["HH", "AH", "L", "OW"]
  assert tok.vocab_size == 39 + 4


def test_sentencepiece_training_is_deterministic_and_reserves_ids(tmp_path):
  texts = ["the quick brown fox", "jumps over the lazy dog", "the dog sleeps"] * 30
  a = train_sentencepiece(texts, 64, tmp_path / "a")
  b = train_sentencepiece(iter(texts), 64, tmp_path / "b")
  assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
  assert a.pieces([PAD, BOS, EOS, UNK]) == ["<pad>", "<s>", "</s>", "<unk>"]
  ids = a.encode("the lazy fox")
  assert min(ids) >= 4
  assert a.decode(ids + [EOS] + ids) == "the lazy fox"
  assert UNK in a.encode("the \u00e9")                       # unseen character
  assert SentencePieceTokenizer(tmp_path / "a.model").encode("the dog") == a.encode("the dog")


# ------------------------------------------------------------------------------------- G2P

@pytest.mark.slow   # 20 s: reads every CMUdict split
def test_g2p_dev_and_test_follow_the_split_rule_and_are_disjoint(g2p_task):
  """The quick check (the train split, 90% of the words, is read by the slow test below)."""
  sets = {s: {w for w, _ in g2p_task.words(s)} for s in ("dev", "test")}
  assert sets["dev"].isdisjoint(sets["test"]) and min(map(len, sets.values())) > 5000
  for split, ws in sets.items():
    assert all(cmudict_g2p.split_of(w) == {"dev": "validation"}.get(split, split) for w in ws)
  assert cmudict_g2p.split_of("dog") == cmudict_g2p.split_of("dog's")


@pytest.mark.slow
def test_g2p_splits_are_deterministic_and_disjoint_by_word(g2p_task):
  words = {s: [w for w, _ in g2p_task.words(s)] for s in g2p_task.splits}
  sets = {s: set(w) for s, w in words.items()}
  assert sets["train"].isdisjoint(sets["dev"]) and sets["train"].isdisjoint(sets["test"])
  assert sets["dev"].isdisjoint(sets["test"])
  total = sum(len(w) for w in sets.values())
  assert total > 120_000
  assert 0.88 < len(sets["train"]) / total < 0.92
  for split, ws in sets.items():                          # the rule, applied independently
    assert all(cmudict_g2p.split_of(w) == {"dev": "validation"}.get(split, split)
               for w in list(ws)[:2000])
  assert cmudict_g2p.split_of("dog") == cmudict_g2p.split_of("dog's")
  assert all(set(w) <= set(cmudict_g2p.GRAPHEMES) for w in sets["test"])


def test_g2p_stress_removed_by_default_and_kept_on_request(g2p_task, g2p_cfg):
  refs = [r for e in g2p_task.eval_examples("dev") for r in e.refs]
  assert not any(ch.isdigit() for r in refs for ch in r)
  assert g2p.strip_stress("HH AH0 L OW1") == "HH AH L OW"
  cfg = g2p_cfg.copy_and_resolve_references()
  cfg.stress = True
  stressed = tasks.build(cfg)
  stressed_refs = [r for e in stressed.eval_examples("dev") for r in e.refs]
  assert any(ch in "012" for r in stressed_refs for ch in r)
  assert stressed.tgt_tokenizer.vocab_size == len(cmudict_g2p.STRESSED_PHONEMES) + 4
  tok = stressed.tgt_tokenizer
  assert all(UNK not in tok.encode(r) for r in stressed_refs)


def test_g2p_multiple_references_and_training_pairs(g2p_task):
  examples = g2p_task.eval_examples("test")
  multi = [e for e in examples if len(e.refs) > 1]
  assert len(multi) > 100
  assert all(len(set(e.refs)) == len(e.refs) for e in examples)     # deduped after stress removal
  by_word = {w: prons for w, prons in g2p_task.words("train")}
  everything = {w: p for s in g2p_task.splits for w, p in g2p_task.words(s)}
  assert set(everything["read"]) == {"R EH D", "R IY D"}
  assert everything["the"] == ("DH AH", "DH IY")           # DH AH0 / DH AH1 merged
  source = g2p_task.train_source("train")
  assert len(source) == sum(len(p) for p in by_word.values())        # one example per pair
  pairs = collections.Counter(source[i]["src"] for i in range(len(source)))
  assert all(pairs[w] == len(p) for w, p in list(by_word.items())[:1000])


def test_g2p_vocabularies_cover_the_data(g2p_task):
  src_tok, tgt_tok = g2p_task.src_tokenizer, g2p_task.tgt_tokenizer
  assert src_tok.vocab_size == 27 + 4 and tgt_tok.vocab_size == 39 + 4
  for e in g2p_task.eval_examples("dev"):
    assert UNK not in src_tok.encode(e.src)
    assert src_tok.decode(src_tok.encode(e.src)) == e.src
    assert all(UNK not in tgt_tok.encode(r) for r in e.refs)
    assert all(tgt_tok.decode(tgt_tok.encode(r)) == r for r in e.refs)


# ----------------------------------------------------------------------------- algorithmic

@pytest.mark.parametrize("name", ["copy", "reverse", "sort", "add"])
def test_algorithmic_targets_are_correct(name):
  _, task = algo(name, num_train=300, num_eval=50)
  for split in task.splits:
    for e in task.eval_examples(split):
      (ref,) = e.refs
      if name == "copy":
        assert ref == e.src
      elif name == "reverse":
        assert ref == e.src[::-1]
      elif name == "sort":
        assert list(ref) == sorted(e.src) and collections.Counter(ref) == collections.Counter(e.src)
      else:
        a, b = e.src.split("+")
        assert int(ref) == int(a) + int(b)
        assert not a.startswith("0") or a == "0"


def test_little_endian_add_writes_operands_and_sum_least_significant_digit_first():
  _, plain = algo("add", num_train=200, num_eval=30)
  _, little = algo("add", num_train=200, num_eval=30, little_endian=True)
  for split in plain.splits:
    for p, e in zip(plain.eval_examples(split), little.eval_examples(split)):
      a, b = e.src.split("+")
      assert f"{a[::-1]}+{b[::-1]}" == p.src                 # the same numbers, reversed
      assert e.refs[0] == p.refs[0][::-1]
      assert int(e.refs[0][::-1]) == int(a[::-1]) + int(b[::-1])
  rows = list(little.train_source("train"))
  assert all(r["tgt"] == little.target(r["src"]) for r in rows)
  assert any(r["src"].split("+")[0][0] == "0" for r in rows)   # trailing zeros now lead


def test_algorithmic_is_deterministic_from_seed_and_test_long_is_longer():
  cfg, task = algo("reverse", num_train=500, num_eval=100)
  _, again = algo("reverse", num_train=500, num_eval=100)
  _, other = algo("reverse", num_train=500, num_eval=100, seed=1)
  for split in task.splits:
    assert task.eval_examples(split) == again.eval_examples(split)
  assert task.eval_examples("train") != other.eval_examples("train")
  train = {e.src for e in task.eval_examples("train")}
  assert max(len(s) for s in train) <= cfg.max_len
  long = task.eval_examples("test_long")
  assert min(len(e.src) for e in long) >= cfg.long_min_len > cfg.max_len
  assert max(len(e.src) for e in long) <= cfg.long_max_len
  longer = [len(e.src) for e in task.eval_examples("test_longer")]
  assert cfg.long_max_len < cfg.longer_min_len <= min(longer)
  assert max(longer) <= cfg.longer_max_len == 4 * cfg.max_len
  dev, test = ({e.src for e in task.eval_examples(s)} for s in ("dev", "test"))
  assert len(dev) == len(test) == 100
  assert not (dev & train) and not (test & train) and not (dev & test)
  _, add = algo("add", num_train=100, num_eval=20)
  assert all(len(e.src.split("+")[0]) > add.cfg.max_len for e in add.eval_examples("test_long"))


def test_algorithmic_validation_names_the_fix():
  cfg, _ = algo("add", max_len=30)                  # the other lengths follow max_len
  assert (cfg.max_src_len, cfg.max_tgt_len, cfg.long_min_len) == (61, 31, 31)
  with pytest.raises(ValueError, match="max_src_len >= 30"):
    algo("copy", max_src_len=16, max_len=30)
  with pytest.raises(ValueError, match="long_min_len"):
    algo("copy", long_min_len=5)
  with pytest.raises(ValueError, match="longer_min_len"):
    algo("copy", longer_min_len=20)                 # inside test_long's 17..32
  with pytest.raises(ValueError, match="unknown split 'valid'"):
    algo("copy")[1].eval_examples("valid")


# -------------------------------------------------------------------------------- pipeline

def test_train_batches_shapes_and_bos_eos_pad_layout():
  cfg, task = algo("reverse", num_train=200)
  it = pipeline.train_batches(task, cfg, batch_size=8, seed=0)
  batch = next(it)
  S, T = cfg.max_src_len + 1, cfg.max_tgt_len + 1
  assert set(batch) == {"src", "tgt_in", "tgt_out"}
  assert batch["src"].shape == (8, S) and batch["tgt_in"].shape == batch["tgt_out"].shape == (8, T)
  assert all(v.dtype == np.int32 for v in batch.values())
  tok = task.src_tokenizer
  for src, tin, tout in zip(batch["src"], batch["tgt_in"], batch["tgt_out"]):
    n = int(np.argmax(src == EOS))
    assert (src == EOS).sum() == 1 and (src[n + 1:] == PAD).all() and (src[:n] >= 4).all()
    m = int(np.argmax(tout == EOS))
    assert tin[0] == BOS and (tin[1:m + 1] == tout[:m]).all()     # shifted by one
    assert (tin[m + 1:] == PAD).all() and (tout[m + 1:] == PAD).all()
    assert tok.decode(tout) == tok.decode(src)[::-1]              # reverse really reversed
  for _ in range(3):
    assert next(it)["src"].shape == (8, S)                         # fixed shapes


def test_packed_batches_segments_and_positions():
  cfg, task = algo("reverse", num_train=300)
  batches = take(pipeline.train_batches(task, cfg, batch_size=4, seed=0, pack=True), 6)
  tok = task.src_tokenizer
  keys = {"src", "tgt_in", "tgt_out", "src_segment_ids", "src_positions", "tgt_segment_ids",
          "tgt_positions"}
  packed_rows = 0
  for batch in batches:
    assert set(batch) == keys
    assert all(v.dtype == np.int32 and v.shape[0] == 4 for v in batch.values())
    assert batch["src_segment_ids"].shape == (4, cfg.max_src_len + 1)
    for r in range(4):
      sseg, tseg = batch["src_segment_ids"][r], batch["tgt_segment_ids"][r]
      segments = sorted(set(sseg) - {0})
      assert segments == list(range(1, len(segments) + 1))       # 1, 2, ... per example
      assert segments == sorted(set(tseg) - {0})                   # same examples on both sides
      packed_rows += len(segments) > 1
      assert (batch["src"][r][sseg == 0] == PAD).all()
      assert (batch["tgt_in"][r][tseg == 0] == PAD).all()
      for s in segments:
        src = batch["src"][r][sseg == s]
        tin, tout = batch["tgt_in"][r][tseg == s], batch["tgt_out"][r][tseg == s]
        np.testing.assert_array_equal(batch["src_positions"][r][sseg == s], np.arange(len(src)))
        np.testing.assert_array_equal(batch["tgt_positions"][r][tseg == s], np.arange(len(tin)))
        # Whole example in one row: EOS closes the source, BOS opens the target.
        assert src[-1] == EOS and (src[:-1] != EOS).all()
        assert tin[0] == BOS and tout[-1] == EOS and (tin[1:] == tout[:-1]).all()
        assert tok.decode(tout) == tok.decode(src)[::-1]
  assert packed_rows > 0


def test_sharding_two_shards_are_disjoint_and_cover_the_data():
  cfg, task = algo("copy", num_train=64, min_len=3)
  source = task.train_source("train")
  everything = collections.Counter(source[i]["src"] for i in range(len(source)))
  tok = task.src_tokenizer
  seen = collections.Counter()
  for shard in range(2):
    it = pipeline.train_batches(task, cfg, batch_size=8, seed=0, shard_index=shard,
                                shard_count=2)
    assert it.num_examples == 64 and it.num_dropped == 0
    rows = [tok.decode(r) for b in take(it, 8) for r in b["src"]]    # 8 batches x 4 rows = epoch
    assert len(rows) == 32
    seen.update(rows)
  assert seen == everything                     # multiset equality: a partition of the examples
  # Unpacked shards advance in lockstep: shard 0's saved state resumes shard 1 exactly.
  shards = [pipeline.train_batches(task, cfg, batch_size=8, seed=0, shard_index=i, shard_count=2)
            for i in range(2)]
  take(shards[0], 5), take(shards[1], 5)
  state, expected = shards[0].get_state(), take(shards[1], 2)
  resumed = pipeline.train_batches(task, cfg, batch_size=8, seed=0, shard_index=1, shard_count=2)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 2), expected)
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    pipeline.train_batches(task, cfg, batch_size=8, seed=0, shard_index=0, shard_count=3)


def test_epochs_are_reshuffled_deterministically():
  cfg, task = algo("copy", num_train=32, min_len=4)
  tok = task.src_tokenizer
  rows = [tok.decode(r) for b in take(pipeline.train_batches(task, cfg, batch_size=8, seed=3), 8)
          for r in b["src"]]
  first, second = rows[:32], rows[32:]
  assert sorted(first) == sorted(second) and first != second
  again = [tok.decode(r) for b in take(pipeline.train_batches(task, cfg, batch_size=8, seed=3), 8)
           for r in b["src"]]
  assert rows == again


@pytest.mark.parametrize("layout", [{}, {"pack": True}, {"bucket_width": 4, "bucket_window": 3}])
def test_iterator_state_save_and_restore(layout):
  cfg, task = algo("sort", num_train=100)
  it = pipeline.train_batches(task, cfg, batch_size=4, seed=7, **layout)
  take(it, 5)                                  # bucketed: into the second window
  state = json.loads(json.dumps(it.get_state()))               # survives JSON
  expected = take(it, 3)
  fresh = pipeline.train_batches(task, cfg, batch_size=4, seed=7, **layout)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 3), expected)
  other = pipeline.train_batches(task, cfg, batch_size=8, seed=7, **layout)
  with pytest.raises(ValueError, match="other data settings"):
    other.set_state(state)


def test_bucketed_batches_hold_similar_lengths_each_example_once_per_epoch():
  """64 examples of 1-16 symbols, batches of 8, windows of 4 batches: an epoch is 8 batches
  holding every example once, each batch padded only to the next multiple of 4 past its
  longest source; the same seed gives the same batches, and 2 processes split each batch."""
  cfg, task = algo("reverse", num_train=64)
  tok = task.src_tokenizer
  everything = collections.Counter(task.train_source("train")[i]["src"] for i in range(64))
  bucketed = pipeline.train_batches(task, cfg, batch_size=8, seed=1, bucket_width=4,
                                    bucket_window=4)
  epoch = take(bucketed, 8)
  assert collections.Counter(tok.decode(r) for b in epoch for r in b["src"]) == everything
  S, T = cfg.max_src_len + 1, cfg.max_tgt_len + 1
  spreads = []
  for batch in epoch:
    lengths = (batch["src"] != PAD).sum(1)                         # symbols + EOS
    width = batch["src"].shape[1]
    assert width == min(-(-lengths.max() // 4) * 4, S)
    assert batch["tgt_in"].shape[1] == batch["tgt_out"].shape[1] <= T
    assert ((batch["src"] == EOS).sum(1) == 1).all()
    assert ((batch["tgt_out"] == EOS).sum(1) == 1).all()
    spreads.append(lengths.max() - lengths.min())
  plain = take(pipeline.train_batches(task, cfg, batch_size=8, seed=1), 8)
  plain_spreads = [np.ptp((b["src"] != PAD).sum(1)) for b in plain]
  assert np.mean(spreads) < np.mean(plain_spreads) / 2               # sorted within windows
  assert sum(b["src"].size for b in epoch) < 0.8 * sum(b["src"].size for b in plain)
  again = take(pipeline.train_batches(task, cfg, batch_size=8, seed=1, bucket_width=4,
                                      bucket_window=4), 8)
  assert_batches_equal(again, epoch)
  halves = [take(pipeline.train_batches(task, cfg, batch_size=8, seed=1, bucket_width=4,
                                        bucket_window=4, shard_index=p, shard_count=2), 8)
            for p in range(2)]
  for whole, first, second in zip(epoch, *halves):
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([first[k], second[k]]), whole[k])
  with pytest.raises(ConfigError, match="train.pack and train.bucket_width"):
    pipeline.train_batches(task, cfg, batch_size=8, seed=1, pack=True, bucket_width=4)


def test_drop_counting(g2p_task, g2p_cfg):
  cfg = g2p_cfg.copy_and_resolve_references()
  cfg.max_src_len, cfg.max_tgt_len = 8, 7
  source = g2p_task.train_source("train")
  too_long = sum(len(source[i]["src"]) > 8 or len(source[i]["tgt"].split()) > 7
                 for i in range(len(source)))
  it = pipeline.train_batches(g2p_task, cfg, batch_size=32, seed=0)
  assert it.num_examples == len(source) and it.num_dropped == too_long > 1000
  for batch in take(it, 5):
    assert batch["src"].shape == (32, 9) and batch["tgt_out"].shape == (32, 8)
    assert ((batch["src"] == EOS).sum(1) == 1).all()                # kept ones are whole
    assert ((batch["tgt_out"] == EOS).sum(1) == 1).all()


def test_eval_batches_keep_everything_in_order_with_pad_rows():
  cfg, task = algo("reverse", num_eval=10)
  examples = task.eval_examples("test_long")
  out = list(pipeline.eval_batches(task, cfg, "test_long", batch_size=4))
  assert [len(ex) for _, ex in out] == [4, 4, 2]
  assert [e for _, ex in out for e in ex] == examples
  longest = max(len(e.src) for e in examples)
  for src, ex in out:
    assert src.shape == (4, longest + 1) and src.dtype == np.int32
    for row, e in zip(src, ex):
      assert task.src_tokenizer.decode(row) == e.src
  assert (out[-1][0][2:] == PAD).all()                            # padding rows
  src, _ = next(pipeline.eval_batches(task, cfg, "dev", batch_size=4))
  assert src.shape[1] == cfg.max_src_len + 1                       # at least the training width


def test_g2p_batches(g2p_task, g2p_cfg):
  batch = next(pipeline.train_batches(g2p_task, g2p_cfg, batch_size=16, seed=0, pack=True))
  assert batch["src"].shape == (16, g2p_cfg.max_src_len + 1)
  assert batch["tgt_positions"].shape == (16, g2p_cfg.max_tgt_len + 1)
  src, examples = next(pipeline.eval_batches(g2p_task, g2p_cfg, "dev", batch_size=16))
  assert g2p_task.src_tokenizer.decode(src[0]) == examples[0].src


# --------------------------------------------------------------------------- parallel_text

def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


PAIRS = [("the cat sat on the mat", "die katze sass auf der matte"),
         ("a dog runs home", "ein hund rennt nach hause"),
         ("hello world", "hallo welt")]


def test_parallel_text_tsv(tmp_path):
  cfg = tasks.default_config("parallel_text")
  cfg.train_path = write(tmp_path / "train.tsv", "".join(f"{s}\t{t}\n" for s, t in PAIRS * 20))
  cfg.dev_path = write(tmp_path / "dev.tsv", "hello cat\thallo katze\n")
  cfg.spm_dir, cfg.vocab_size = str(tmp_path / "spm"), 60
  task = tasks.build(cfg)
  assert task.splits == ("train", "dev") and task.metric_family == "text"
  models = list((tmp_path / "spm").glob("*.model"))
  assert len(models) == 1                                          # shared vocabulary, cached
  assert task.src_tokenizer is task.tgt_tokenizer
  assert tasks.build(cfg).src_tokenizer.model_file == str(models[0])   # reused, not retrained
  for s, t in PAIRS:
    assert task.src_tokenizer.decode(task.src_tokenizer.encode(s)) == s
    assert task.tgt_tokenizer.decode(task.tgt_tokenizer.encode(t)) == t
  assert task.eval_examples("dev")[0].refs == ("hallo katze",)
  batch = next(pipeline.train_batches(task, cfg, batch_size=4, seed=0))
  assert batch["src"].shape == (4, cfg.max_src_len + 1)
  cfg.shared_vocab = False
  separate = tasks.build(cfg)
  assert separate.src_tokenizer.model_file != separate.tgt_tokenizer.model_file


def test_parallel_text_aligned_files_and_errors(tmp_path):
  cfg = tasks.default_config("parallel_text")
  cfg.spm_dir, cfg.vocab_size = str(tmp_path / "spm"), 40
  cfg.train_src = write(tmp_path / "train.en", "\n".join(s for s, _ in PAIRS * 5) + "\n")
  cfg.train_tgt = write(tmp_path / "train.de", "\n".join(t for _, t in PAIRS * 5) + "\n")
  task = tasks.build(cfg)
  assert task.train_source("train")[1] == {"src": PAIRS[1][0], "tgt": PAIRS[1][1]}
  bad = cfg.copy_and_resolve_references()
  bad.train_src, bad.train_tgt = "", ""
  bad.train_path = write(tmp_path / "bad.tsv", "a\tb\nno tab here\nc\td\n")
  with pytest.raises(DataError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
    tasks.build(bad)
  bad.train_path = write(tmp_path / "empty.tsv", "")
  with pytest.raises(DataError, match="empty.tsv is empty"):
    tasks.build(bad)
  bad.train_path = str(tmp_path / "missing.tsv")
  with pytest.raises(DataError, match="missing.tsv"):
    tasks.build(bad)
  bad.train_path = ""
  bad.train_src, bad.train_tgt = cfg.train_src, write(tmp_path / "short.de", "x\n")
  with pytest.raises(DataError, match="has 15 lines but .* has 1"):
    tasks.build(bad)


# ------------------------------------------------------------------------------------- wmt

def test_wmt_with_mock_data(tmp_path):
  cfg = tasks.default_config("wmt")
  cfg.data_dir, cfg.spm_dir, cfg.vocab_size = str(tmp_path), str(tmp_path / "spm"), 100
  with pytest.raises(DataError, match="tfds build wmt14_translate/de-en"):
    tasks.build(cfg)
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    task = tasks.build(cfg)
    assert task.splits == ("train", "dev", "test")
    ex = task.train_source("train")[0]
    assert isinstance(ex["src"], str) and isinstance(ex["tgt"], str)
    tok = task.src_tokenizer
    assert " ".join(tok.decode(tok.encode(ex["src"])).split()) == " ".join(ex["src"].split())
    it = pipeline.train_batches(task, cfg, batch_size=4, seed=0)
    assert it.num_examples == 24
    assert next(it)["tgt_out"].shape == (4, cfg.max_tgt_len + 1)
    assert len(task.eval_examples("test")) == 24
  cfg.src_lang = "fr"
  with pytest.raises(ValueError, match="task.src_lang='fr' is not a language"):
    with tfds.testing.mock_data(num_examples=4):
      tasks.build(cfg)
