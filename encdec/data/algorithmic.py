"""Algorithmic tasks generated from a seed: copy, reverse, sort, add.

    copy     "hello"   -> "hello"
    reverse  "hello"   -> "olleh"
    sort     "hello"   -> "ehllo"      (in `vocab` order)
    add      "123+45"  -> "168"        (base len(vocab); vocab[i] is the digit of value i)

Sequences (copy/reverse/sort) have a length drawn uniformly from [min_len, max_len] and symbols
drawn uniformly from `vocab`. For `add`, each operand has a number of digits drawn uniformly
from [min_len, max_len] (no leading zeros). The `test_long` split draws lengths from
[long_min_len, long_max_len] instead (longer than anything in training), and `test_longer` from
[longer_min_len, longer_max_len] (longer still: length generalisation at two distances).

Config: `max_len` drives the other lengths: by default long_min_len = max_len + 1,
long_max_len = 2 * max_len, longer_min_len = 2 * max_len + 1, longer_max_len = 4 * max_len,
and max_src_len / max_tgt_len fit the longest training example
(max_len, or 2 * max_len + 1 and max_len + 1 for add), so `task.max_len=30` alone is a
consistent override. Setting one of those fields explicitly unlinks it.

Splits: train (num_train examples, may repeat), dev / test / test_long / test_longer (num_eval
distinct sources each). dev and test contain no source seen in train and none of each other's, so
they measure generalisation rather than memorisation. Every split is a pure function of the config:
split i uses numpy's generator seeded with (seed, i).
"""
from __future__ import annotations

import functools

import ml_collections
import numpy as np

from encdec.errors import ConfigError
from encdec.data import base
from encdec.data.tokenizers import CharTokenizer

SPLITS = ("train", "dev", "test", "test_long", "test_longer")  # index i seeds split i
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


def target(kind: str, src: str, vocab: str) -> str:
  """The correct output of task `kind` for the input `src`."""
  if kind == "copy":
    return src
  if kind == "reverse":
    return src[::-1]
  if kind == "sort":
    return "".join(sorted(src, key=vocab.index))
  if kind == "add":
    a, b = src.split("+")
    return to_base(from_base(a, vocab) + from_base(b, vocab), vocab)
  raise ValueError(f"unknown algorithmic task {kind!r}; valid: copy, reverse, sort, add")


def from_base(digits: str, vocab: str) -> int:
  """"123" --> 123 in base len(vocab), digit values given by positions in `vocab`."""
  value = 0
  for ch in digits:
    value = value * len(vocab) + vocab.index(ch)
  return value


def to_base(value: int, vocab: str) -> str:
  """123 --> "123" in base len(vocab)."""
  digits = []
  while True:
    value, d = divmod(value, len(vocab))
    digits.append(vocab[d])
    if value == 0:
      return "".join(reversed(digits))


def random_sources(kind: str, rng: np.random.Generator, n: int, lo: int, hi: int,
                   vocab: str) -> list[str]:
  """n random task inputs with lengths (or operand digit counts for add) in [lo, hi]."""
  if kind != "add":
    lengths = rng.integers(lo, hi + 1, size=n)                 # [n]
    symbols = rng.integers(0, len(vocab), size=(n, hi))        # [n, hi]
    return ["".join(vocab[s] for s in row[:k]) for row, k in zip(symbols, lengths)]
  operands = [random_numbers(rng, n, lo, hi, vocab) for _ in range(2)]
  return [f"{a}+{b}" for a, b in zip(*operands)]


def random_numbers(rng: np.random.Generator, n: int, lo: int, hi: int, vocab: str) -> list[str]:
  """n numbers (as digit strings) with a digit count in [lo, hi] and no leading zero."""
  lengths = rng.integers(lo, hi + 1, size=n)                   # [n]
  digits = rng.integers(0, len(vocab), size=(n, hi))           # [n, hi]
  first = rng.integers(1, len(vocab), size=n)                  # [n] leading digit, non-zero
  digits[:, 0] = np.where(lengths > 1, first, digits[:, 0])
  return ["".join(vocab[d] for d in row[:k]) for row, k in zip(digits, lengths)]


def distinct_sources(kind: str, rng: np.random.Generator, n: int, lo: int, hi: int, vocab: str,
                     exclude: set[str], max_rounds: int = 100) -> list[str]:
  """n distinct random inputs not in `exclude`, in generation order."""
  out: dict[str, None] = {}
  for _ in range(max_rounds):
    for s in random_sources(kind, rng, n, lo, hi, vocab):
      if s not in exclude and len(out) < n:
        out[s] = None
    if len(out) == n:
      return list(out)
  raise ConfigError(f"cannot draw {n} distinct {kind} inputs of length {lo}..{hi} unseen in "
                    f"training; lower num_eval or raise min_len/max_len")


class AlgorithmicTask:
  """Base of copy/reverse/sort/add; subclasses set `name` (= the kind) and the defaults."""

  name = ""
  metric_family = "exact"
  splits = SPLITS
  DEFAULT_VOCAB = LETTERS

  @classmethod
  def default_config(cls) -> dict:
    """Defaults; the length fields follow `max_len` (FieldReferences) until set explicitly."""
    max_len = ml_collections.FieldReference(16)
    src_len, tgt_len = cls.max_lengths(max_len)
    return dict(seed=0, num_train=20000, num_eval=500, min_len=1, max_len=max_len,
                long_min_len=max_len + 1, long_max_len=max_len * 2,
                longer_min_len=max_len * 2 + 1, longer_max_len=max_len * 4, vocab=cls.DEFAULT_VOCAB,
                max_src_len=src_len, max_tgt_len=tgt_len)

  @staticmethod
  def max_lengths(max_len: int) -> tuple[int, int]:
    """(source, target) token lengths of the longest training example."""
    return max_len + 0, max_len + 0  # "+ 0": new derived references, not aliases of max_len

  def __init__(self, cfg):
    self.cfg = cfg
    self.validate(cfg)
    self.src_tokenizer = self.tgt_tokenizer = CharTokenizer(self.symbols(cfg.vocab))

  @staticmethod
  def symbols(vocab: str) -> str:
    return vocab

  def validate(self, cfg) -> None:
    """ValueErrors for inconsistent lengths or vocabularies (names the field to change)."""
    if len(set(cfg.vocab)) != len(cfg.vocab) or len(cfg.vocab) < 2:
      raise ConfigError(f"task.vocab={cfg.vocab!r} needs at least 2 distinct characters")
    if not 1 <= cfg.min_len <= cfg.max_len:
      raise ConfigError(f"task.min_len={cfg.min_len}, task.max_len={cfg.max_len}: need "
                        "1 <= min_len <= max_len")
    if not cfg.max_len < cfg.long_min_len <= cfg.long_max_len:
      raise ConfigError(f"task.long_min_len={cfg.long_min_len}, task.long_max_len="
                        f"{cfg.long_max_len}: need max_len < long_min_len <= long_max_len so "
                        "test_long is longer than training")
    if not cfg.long_max_len < cfg.longer_min_len <= cfg.longer_max_len:
      raise ConfigError(f"task.longer_min_len={cfg.longer_min_len}, task.longer_max_len="
                        f"{cfg.longer_max_len}: need long_max_len < longer_min_len <= "
                        "longer_max_len so test_longer is longer than test_long")
    if min(cfg.num_train, cfg.num_eval) < 1:
      raise ConfigError("task.num_train and task.num_eval must be >= 1")
    src_len, tgt_len = self.max_lengths(cfg.max_len)
    if cfg.max_src_len < src_len or cfg.max_tgt_len < tgt_len:
      raise ConfigError(f"task.max_len={cfg.max_len} needs task.max_src_len >= {src_len} and "
                        f"task.max_tgt_len >= {tgt_len} (got {cfg.max_src_len}, "
                        f"{cfg.max_tgt_len}); raise them")

  @functools.cached_property
  def _sources(self) -> dict[str, list[str]]:
    cfg, kind = self.cfg, self.name
    rng = {s: np.random.default_rng([cfg.seed, i]) for i, s in enumerate(SPLITS)}
    train = random_sources(kind, rng["train"], cfg.num_train, cfg.min_len, cfg.max_len,
                           cfg.vocab)
    seen = set(train)
    dev = distinct_sources(kind, rng["dev"], cfg.num_eval, cfg.min_len, cfg.max_len, cfg.vocab,
                           seen)
    test = distinct_sources(kind, rng["test"], cfg.num_eval, cfg.min_len, cfg.max_len,
                            cfg.vocab, seen | set(dev))
    long = distinct_sources(kind, rng["test_long"], cfg.num_eval, cfg.long_min_len,
                            cfg.long_max_len, cfg.vocab, set())
    longer = distinct_sources(kind, rng["test_longer"], cfg.num_eval, cfg.longer_min_len,
                              cfg.longer_max_len, cfg.vocab, set())
    splits = {"train": train, "dev": dev, "test": test, "test_long": long, "test_longer": longer}
    return {split: [self.written(s) for s in sources] for split, sources in splits.items()}

  def written(self, source: str) -> str:
    """A generated source as the task writes it (AddTask may reverse its digits)."""
    return source

  def target(self, source: str) -> str:
    """The correct output for a (written) source."""
    return target(self.name, source, self.cfg.vocab)

  def sources(self, split: str) -> list[str]:
    base.check_split(self, split)
    return self._sources[split]

  def train_source(self, split: str) -> base.ListSource:
    return base.ListSource([{"src": s, "tgt": self.target(s)} for s in self.sources(split)])

  def eval_examples(self, split: str) -> list[base.EvalExample]:
    return [base.EvalExample(s, (self.target(s),)) for s in self.sources(split)]

  def normalize_source(self, text: str) -> str:
    """"12 + 3" --> "12+3" (sources have no whitespace)."""
    return "".join(text.split())


class CopyTask(AlgorithmicTask):
  name = "copy"


class ReverseTask(AlgorithmicTask):
  name = "reverse"


class SortTask(AlgorithmicTask):
  name = "sort"


class AddTask(AlgorithmicTask):
  """Addition of two numbers: source "a+b", target the sum; `vocab` is the digit alphabet.

  `little_endian`: operands and sum written least significant digit first ("321+54" -> "861"
  is 123 + 45 = 168), so each output digit depends on the operand digits at its own position
  and the carry from the one before: the order in which an autoregressive decoder can compute
  a sum (Lee et al. 2023, "Teaching Arithmetic to Small Transformers", find reversed output
  makes addition learnable where the plain order is not).
  """

  name = "add"
  DEFAULT_VOCAB = DIGITS

  @classmethod
  def default_config(cls) -> dict:
    return {**super().default_config(), "little_endian": False}

  def written(self, source: str) -> str:
    if not self.cfg.little_endian:
      return source
    return "+".join(operand[::-1] for operand in source.split("+"))

  def target(self, source: str) -> str:
    if not self.cfg.little_endian:
      return super().target(source)
    return super().target(self.written(source))[::-1]   # written() is its own inverse

  @staticmethod
  def max_lengths(max_len: int) -> tuple[int, int]:
    return max_len * 2 + 1, max_len + 1

  @staticmethod
  def symbols(vocab: str) -> str:
    return vocab + "+"

  def validate(self, cfg) -> None:
    if "+" in cfg.vocab:
      raise ConfigError(f"task.vocab={cfg.vocab!r} must not contain '+' (the operator)")
    super().validate(cfg)
