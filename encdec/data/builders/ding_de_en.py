"""TFDS builder for German -> English pairs from the Ding dictionary (Debian `trans-de-en`).

The data is the installed plain-text file (`apt-get install trans-de-en`: /usr/share/trans/de-en,
GPL-2+; no download). One entry per line, `German :: English`; `#` lines are comments. Each side
holds alternatives separated by ` | `, aligned by index (a headword, its plural, example phrases
and sentences); each alternative may hold `;`-separated synonyms. One example per German text:

    {"de": "Ich bin durch die Hölle gegangen.", "en": ["I've been/gone through hell."]}

Cleaning (`clean`), per alternative:
  * Ding's annotations are removed: `{f}`/`{pl}`/`{vt}`/`{hid; hidden}` (grammar), `[Br.]`/
    `[ugs.]`/`[techn.]` (usage, region, domain), `(...)` (glosses and optional parts:
    "interest(s)" -> "interest", "Eel (on a menu)" -> "Eel"), `<...>` (spelling variants,
    the `<>` particle marker), `/ABBR/` abbreviation markers and `~see-also` references;
  * synonyms: only the FIRST of the `;`-separated synonyms is kept. Ding lists synonyms on each
    side independently (three German words may face five English ones), so pairing them by
    index or as a cross product would invent wrong pairs; the first ones are the headwords,
    which do face each other. Sentences rarely have synonyms ("Das ist ganz alleine deine
    Schuld!; Es ist alles deine Schuld!" keeps the first);
  * Unicode NFC, the typographic apostrophe (’) as ', whitespace collapsed, no space before
    , . ! ? : (left by removed annotations). `/`-alternatives inside a text ("Das Haus
    bietet/Vom Haus aus bieten ...") are kept as written (training only, see below).
A pair whose side is empty after cleaning is dropped, and so is a line whose sides have different
numbers of alternatives (none in the Debian file); exact duplicate pairs are kept once.

Split (deterministic, by German; no German text in two splits): texts are grouped by their
normalised German (`german_key`: casefolded, letters and digits only). Two configurations decide
which groups may be held out (`HELD_OUT`); a group is held out when every pair in it passes the
configuration's test, and its bucket `int(md5(key).hexdigest(), 16) % modulus` sends it to
validation ("dev"), test or train. Every other group is train.

* `sentences` (the default; version 1.0.0's split): sentence pairs (`is_sentence_pair`: the
  German starts with a capital letter or digit and ends with . ! or ?, both sides have at least
  `MIN_WORDS` words, and neither holds a `/`-alternative, so references are clean); buckets
  0-87 of 100 -> train, 88-93 -> validation, 94-99 -> test.
* `phrases`: dictionary phrases (`is_phrase_pair`: 2-6 German words, no `/`-alternative, not a
  sentence pair), e.g. "ein signiertes Exemplar des Buches" -> "a signed copy of the book";
  buckets 970-984 of 1000 -> validation, 985-999 -> test, the rest and every sentence -> train.
  Short held-out texts a small model can learn: the study's translation task at its scale.

Counts on Debian's trans-de-en 1.9-6 (Ding devel 2023-01-30): 206,233 entries, 391,763 aligned
sub-pairs, 391,699 non-empty after cleaning, 388,349 after dedupe, of which 16,286 sentence
pairs (about 19k with the `/`-alternatives, which stay in train):

    config      split        German texts   pairs     held-out kind
    sentences   train        326,814        386,367   (14,304 sentence pairs)
    sentences   validation   998            1,002     sentence pairs
    sentences   test         975            980       sentence pairs
    phrases     train        326,479        385,905   (all 16,286 sentence pairs)
    phrases     validation   1,132          1,197     phrase pairs (2.9 / 3.1 words a side)
    phrases     test         1,176          1,247     phrase pairs (2.9 / 3.1 words a side)

Preparation takes about 20 s a configuration (2 CPU cores).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import unicodedata
from typing import Callable

import tensorflow_datasets as tfds

from encdec.errors import DataError
from encdec.data.ding import DEFAULT_PATH

MIN_WORDS = 4               # a held-out sentence pair: at least this many words a side
PHRASE_WORDS = range(2, 7)  # a held-out phrase: this many German words

# Innermost bracketed annotations ({...} [...] (...) <...>), removed until none is left (nested).
_ANNOTATION = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]|\([^()]*\)|<[^<>]*>")
_ABBREVIATION = re.compile(r"(?<!\S)/[^/\s]+/(?!\S)")   # "in forma pauperis /IFP/"
_SEE_ALSO = re.compile(r"(?:^|\s)~.*$")                 # "lakelet ~tarn"
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?:])")
_SENTENCE_END = re.compile(r"[.!?][\"“”'»«]?$")


def normalize(text: str) -> str:
  """Unicode NFC, ’ as ', whitespace collapsed, no space before , . ! ? : (both sides; also a
  user's input at inference)."""
  text = " ".join(unicodedata.normalize("NFC", text).replace("\u2019", "'").split())
  return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def clean(text: str) -> str:
  """One side of one alternative, cleaned (module docstring); "" if nothing is left."""
  previous = None
  while previous != text:
    previous, text = text, _ANNOTATION.sub(" ", text)
  text = next((s for s in (s.strip() for s in text.split(";")) if s), "")
  return normalize(_SEE_ALSO.sub("", _ABBREVIATION.sub(" ", text)))


def parse_line(line: str) -> list[tuple[str, str]]:
  """The cleaned (German, English) pairs of one dictionary line (none for comments, malformed
  lines and alternatives whose counts differ between the sides)."""
  line = line.strip()
  if not line or line.startswith("#") or line.count(" :: ") != 1:
    return []
  german, english = (side.split(" | ") for side in line.split(" :: "))
  if len(german) != len(english):
    return []
  pairs = ((clean(de), clean(en)) for de, en in zip(german, english))
  return [(de, en) for de, en in pairs if de and en]


def read_pairs(path: str) -> list[tuple[str, str]]:
  """The cleaned pairs of a Ding file, duplicates removed, in file order."""
  with open(path, encoding="utf-8") as f:
    return list(dict.fromkeys(pair for line in f for pair in parse_line(line)))


def german_key(text: str) -> str:
  """The normalised German that decides the split: casefolded words of letters and digits."""
  return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def is_sentence_pair(de: str, en: str) -> bool:
  """Whether a pair may be held out: a German sentence (capital or digit ... . ! ?), at least
  MIN_WORDS words on both sides, no `/`-alternative on either side."""
  first = de.lstrip("\"„“»«'")[:1]
  return ((first.isupper() or first.isdigit()) and bool(_SENTENCE_END.search(de))
          and min(len(de.split()), len(en.split())) >= MIN_WORDS and "/" not in de + en)


def is_phrase_pair(de: str, en: str) -> bool:
  """Whether a pair may be held out as a phrase: PHRASE_WORDS German words, no `/`-alternative
  on either side, not a sentence pair."""
  return (len(de.split()) in PHRASE_WORDS and "/" not in de + en
          and not is_sentence_pair(de, en))


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """A configuration's held-out groups: those whose every pair passes `is_pair`, sent to
  validation or test by their bucket md5(key) % modulus (any other bucket: train). `since`:
  the builder version that introduced the split; it names the split's vocabulary, so runs
  trained before a later version keep theirs."""
  is_pair: Callable[[str, str], bool]
  modulus: int
  validation: range
  test: range
  since: str

  def split(self, key: str) -> str:
    """The split ("train" / "validation" / "test") of a held-out group; stable across runs."""
    bucket = int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % self.modulus
    return ("validation" if bucket in self.validation else "test" if bucket in self.test
            else "train")


HELD_OUT = {
    "sentences": HeldOut(is_sentence_pair, 100, validation=range(88, 94), test=range(94, 100),
                         since="1.0.0"),
    "phrases": HeldOut(is_phrase_pair, 1000, validation=range(970, 985), test=range(985, 1000),
                       since="1.1.0"),
}
SPLITS = ("train", "validation", "test")


def split_pairs(pairs: list[tuple[str, str]], held_out: HeldOut = HELD_OUT["sentences"]
               ) -> dict[str, dict[str, list[str]]]:
  """{split: {German: [English, ...]}}: groups by `german_key` held out only when all of their
  pairs pass `held_out.is_pair`; German texts in first-seen order."""
  groups = collections.defaultdict(list)
  for de, en in pairs:
    groups[german_key(de)].append((de, en))
  out = {name: {} for name in SPLITS}
  for key, group in groups.items():
    split = (held_out.split(key) if all(held_out.is_pair(de, en) for de, en in group)
             else "train")
    for de, en in group:
      out[split].setdefault(de, []).append(en)
  return out


class DingDeEn(tfds.core.GeneratorBasedBuilder):
  """Ding German -> English pairs, split by German (see module docstring). `path`: the file;
  `config`: which texts are held out, "sentences" or "phrases"."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: first synonyms, annotations removed, md5 split.",
                   "1.1.0": "Configurations: sentences (1.0.0's split, unchanged) and phrases."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="sentences", description="held out: German sentences of "
                              f">= {MIN_WORDS} words"),
      tfds.core.BuilderConfig(name="phrases", description="held out: German phrases of "
                              f"{PHRASE_WORDS.start}-{PHRASE_WORDS.stop - 1} words"),
  ]

  def __init__(self, *, path: str = DEFAULT_PATH, **kwargs):
    self.path = path
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="German-English pairs (words, phrases, sentences) from the Ding dictionary.",
        features=tfds.features.FeaturesDict({
            "de": tfds.features.Text(),
            "en": tfds.features.Sequence(tfds.features.Text()),
        }),
        homepage="https://dict.tu-chemnitz.de/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data is the installed file.
    by_split = split_pairs(read_pairs(self.path), HELD_OUT[self.builder_config.name])
    empty = [name for name, texts in by_split.items() if not texts]
    if empty:  # TFDS cannot write an empty split
      raise DataError(f"{self.path} yields no {' / '.join(empty)} pairs "
                      f"({self.builder_config.description}); give a complete Ding file "
                      "(`German :: English` lines)")
    return {name: self._generate_examples(texts) for name, texts in by_split.items()}

  def _generate_examples(self, texts: dict[str, list[str]]):
    for de, ens in texts.items():
      yield de, {"de": de, "en": ens}
