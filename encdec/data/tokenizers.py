"""Tokenizers: text <-> token ids. encdec's own reserve PAD=0, BOS=1, EOS=2, UNK=3.

    tok = CharTokenizer("abc")          # a -> 4, b -> 5, c -> 6
    tok.encode("cab?")                  # [6, 4, 5, 3]   (no BOS/EOS; unknown -> UNK)
    tok.decode([6, 4, 2, 5])            # "ca"           (stops at the first EOS)

Three kinds: `CharTokenizer` (one character per token), `SymbolTokenizer` (space-separated
symbols, e.g. ARPAbet "HH AH L OW") and `SentencePieceTokenizer` (a trained subword model; train
one with `train_sentencepiece`, or load-or-train a cached one with `cached_sentencepiece`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
from typing import Iterable, Protocol, Sequence

import numpy as np

from encdec import files
from encdec.errors import ConfigError, DataError



@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """The special token ids of a vocabulary: the one place they are defined.

  A tokenizer carries them (`tokenizer.special`); the model config receives them from the
  task's target tokenizer (assembly.model_config), and masks, loss and decoding read them
  there. encdec's own vocabularies use the defaults; imported checkpoints bring theirs
  (T5: PAD 0, EOS 1, the decoder starting from PAD; BART: BOS 0, PAD 1, EOS 2).
  """
  pad: int = 0
  bos: int = 1      # the token the decoder starts from
  eos: int = 2
  unk: int = 3

  def model_fields(self) -> dict[str, int]:
    """The TransformerConfig fields these ids set."""
    return {"pad_id": self.pad, "bos_id": self.bos, "eos_id": self.eos}


SPECIAL = SpecialTokens()                        # encdec's own vocabularies
PAD, BOS, EOS, UNK = SPECIAL.pad, SPECIAL.bos, SPECIAL.eos, SPECIAL.unk
NUM_RESERVED = 4
RESERVED_PIECES = ("<pad>", "<s>", "</s>", "<unk>")
UNK_TEXT = "\u2047"  # "⁇", what decode() writes for UNK (as sentencepiece does)


class Tokenizer(Protocol):
  """What tasks, the pipeline and decoding need from a tokenizer."""

  vocab_size: int  # includes the 4 reserved ids
  special: SpecialTokens

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS/EOS; unknown symbols map to UNK."""

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids`, stopping at the first EOS and dropping PAD/BOS."""

  def pieces(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    """One printable label per id (attention-map axes); does not stop at EOS."""


def strip_special(ids: Sequence[int] | np.ndarray, special: SpecialTokens = SPECIAL
                  ) -> list[int]:
  """ids up to (excluding) the first EOS, with PAD and BOS removed, as Python ints."""
  out = []
  for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
    if i == special.eos:
      break
    if i not in (special.pad, special.bos):
      out.append(i)
  return out


def id_pieces(ids, vocab_size: int, piece_of) -> list[str]:
  """A printable label per id: <pad> <s> </s> <unk> for the reserved ids, piece_of(i) for the
  vocabulary, <i?> for ids outside it."""
  out = []
  for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
    if 0 <= i < NUM_RESERVED:
      out.append(RESERVED_PIECES[i])
    else:
      out.append(piece_of(i) if i < vocab_size else f"<{i}?>")
  return out


class _VocabTokenizer:
  """Shared logic for tokenizers over a fixed, ordered symbol list (ids 4, 5, ...)."""
  special = SPECIAL

  def __init__(self, symbols: Iterable[str]):
    self.symbols = tuple(symbols)
    if len(set(self.symbols)) != len(self.symbols):
      dupes = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
      raise ConfigError(f"duplicate tokenizer symbols {dupes}; list each symbol once")
    if not self.symbols:
      raise ConfigError("tokenizer needs at least one symbol; pass a non-empty symbol list")
    self._ids = {s: i + NUM_RESERVED for i, s in enumerate(self.symbols)}
    self.vocab_size = len(self.symbols) + NUM_RESERVED

  def _symbol(self, i: int) -> str:
    if NUM_RESERVED <= i < self.vocab_size:
      return self.symbols[i - NUM_RESERVED]
    return UNK_TEXT

  def pieces(self, ids) -> list[str]:
    return id_pieces(ids, self.vocab_size,
                     lambda i: self._symbol(i).replace(" ", "\u2423"))  # "␣" for a space

  def __repr__(self) -> str:
    return f"{type(self).__name__}({len(self.symbols)} symbols, vocab_size={self.vocab_size})"


class CharTokenizer(_VocabTokenizer):
  """One token per character; `symbols` is the ordered alphabet (a string or a list of chars)."""

  def __init__(self, symbols: Iterable[str]):
    super().__init__(symbols)
    bad = [s for s in self.symbols if len(s) != 1]
    if bad:
      raise ConfigError(f"CharTokenizer symbols must be single characters, got {bad[:5]}; "
                        "use SymbolTokenizer for multi-character symbols")

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(ch, UNK) for ch in text]

  def decode(self, ids) -> str:
    return "".join(self._symbol(i) for i in strip_special(ids, self.special))


class SymbolTokenizer(_VocabTokenizer):
  """One token per whitespace-separated symbol, e.g. ARPAbet phonemes "HH AH L OW"."""

  def __init__(self, symbols: Iterable[str]):
    super().__init__(symbols)
    bad = [s for s in self.symbols if not s or any(ch.isspace() for ch in s)]
    if bad:
      raise ConfigError(f"SymbolTokenizer symbols must be non-empty without whitespace, got "
                        f"{bad[:5]}")

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(s, UNK) for s in text.split()]

  def decode(self, ids) -> str:
    return " ".join(self._symbol(i) for i in strip_special(ids, self.special))


class SentencePieceTokenizer:
  """A trained sentencepiece model whose ids follow the convention pad=0, bos=1, eos=2, unk=3."""
  special = SPECIAL

  def __init__(self, model_file: str | os.PathLike):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_file = str(model_file)
    if not pathlib.Path(self.model_file).is_file():
      raise DataError(f"sentencepiece model {self.model_file} not found; train one with "
                              "encdec.data.tokenizers.train_sentencepiece")
    self._sp = spm.SentencePieceProcessor(model_file=self.model_file)
    ids = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
    if ids != (PAD, BOS, EOS, UNK):
      raise DataError(f"sentencepiece model {self.model_file} has pad/bos/eos/unk ids {ids}, "
                      f"expected {(PAD, BOS, EOS, UNK)}; retrain it with train_sentencepiece")
    self.vocab_size = self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """encode() over many texts at once (sentencepiece's C++ threads)."""
    return self._sp.encode(list(texts))

  def decode(self, ids) -> str:
    return self._sp.decode(strip_special(ids, self.special))

  def pieces(self, ids) -> list[str]:
    return id_pieces(ids, self.vocab_size, self._sp.id_to_piece)

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({self.model_file!r}, vocab_size={self.vocab_size})"


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_prefix: str | os.PathLike,
                        *, model_type: str = "unigram", character_coverage: float = 1.0,
                        num_threads: int = 1) -> SentencePieceTokenizer:
  """Train a sentencepiece model on in-memory `texts`; writes `<model_prefix>.model` atomically.

  Ids: pad=0, bos=1, eos=2, unk=3. Deterministic for the same texts, settings and
  `num_threads` (no input sampling or shuffling). `vocab_size` is an upper bound: a corpus too
  small for it gets a smaller vocabulary instead of an error.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if vocab_size <= NUM_RESERVED:
    raise ConfigError(f"vocab_size={vocab_size} leaves no room for subwords; use a value > 4")
  texts = [t for t in texts if t.strip()]
  if not texts:
    raise DataError("train_sentencepiece got no non-empty text; pass the training sentences")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, character_coverage=character_coverage, num_threads=num_threads,
      pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, pad_piece=RESERVED_PIECES[PAD],
      bos_piece=RESERVED_PIECES[BOS], eos_piece=RESERVED_PIECES[EOS],
      unk_piece=RESERVED_PIECES[UNK], hard_vocab_limit=False, input_sentence_size=0,
      shuffle_input_sentence=False, minloglevel=2)
  path = pathlib.Path(f"{model_prefix}.model")
  path.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomically(path, model.getvalue())
  return SentencePieceTokenizer(path)


def cached_sentencepiece(spm_dir: str | os.PathLike, name: str, key: Sequence[object],
                         texts_fn, vocab_size: int, **train_kwargs) -> SentencePieceTokenizer:
  """Load `<spm_dir>/<name>-<hash(key, settings)>.model`, training it from `texts_fn()` if absent.

  `key` identifies the training data (paths + content hashes, dataset name + version...), so a
  changed corpus or setting trains a new model instead of reusing a stale one.
  """
  digest = hashlib.sha256(repr((tuple(key), vocab_size, sorted(train_kwargs.items())))
                          .encode()).hexdigest()[:12]
  prefix = pathlib.Path(os.path.expanduser(str(spm_dir))) / f"{name}-{digest}"
  if pathlib.Path(f"{prefix}.model").is_file():
    return SentencePieceTokenizer(f"{prefix}.model")
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.info("training sentencepiece vocabulary %s.model (vocab_size=%d)", prefix, vocab_size)
  return train_sentencepiece(texts_fn(), vocab_size, prefix, **train_kwargs)
