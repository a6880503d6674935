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
normalised German (`german_key`: casefolded, letters and digits only), and a group is a
*sentence group* when every pair in it is a sentence pair (`is_sentence_pair`: the German
starts with a capital letter or digit and ends with . ! or ?, both sides have at least
`MIN_WORDS` words, and neither holds a `/`-alternative, so references are clean). The bucket
of a sentence group is `int(md5(key).hexdigest(), 16) % 100`: buckets 0-87 -> train, 88-93 ->
validation ("dev"), 94-99 -> test (`SPLIT_BUCKETS`). Every other group (words, phrases, and
sentences with a `/`-alternative or under MIN_WORDS words) is train.

Counts on Debian's trans-de-en 1.9-6 (Ding devel 2023-01-30): 206,233 entries, 391,763 aligned
sub-pairs, 391,699 non-empty after cleaning, 388,349 after dedupe, of which 16,286 sentence
pairs (about 19k with the `/`-alternatives, which stay in train):

    split        German texts   pairs     sentence pairs
    train        326,814        386,367   14,304
    validation   998            1,002     1,002
    test         975            980       980

Preparation takes about 20 s (2 CPU cores).
"""
from __future__ import annotations

import collections
import hashlib
import re
import unicodedata

import tensorflow_datasets as tfds

from encdec.errors import DataError
from encdec.data.ding import DEFAULT_PATH

MIN_WORDS = 4
SPLIT_BUCKETS = {"train": range(0, 88), "validation": range(88, 94), "test": range(94, 100)}

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


def bucket_split(key: str) -> str:
  """The split ("train" / "validation" / "test") of a sentence group; stable across runs."""
  bucket = int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % 100
  return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def split_pairs(pairs: list[tuple[str, str]]) -> dict[str, dict[str, list[str]]]:
  """{split: {German: [English, ...]}}: groups by `german_key` held out only when all of their
  pairs are sentence pairs; German texts in first-seen order."""
  groups = collections.defaultdict(list)
  for de, en in pairs:
    groups[german_key(de)].append((de, en))
  out = {name: {} for name in SPLIT_BUCKETS}
  for key, group in groups.items():
    held_out = all(is_sentence_pair(de, en) for de, en in group)
    split = bucket_split(key) if held_out else "train"
    for de, en in group:
      out[split].setdefault(de, []).append(en)
  return out


class DingDeEn(tfds.core.GeneratorBasedBuilder):
  """Ding German -> English pairs, split by German (see module docstring). `path`: the file."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: first synonyms, annotations removed, md5 split."}

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
    by_split = split_pairs(read_pairs(self.path))
    empty = [name for name, texts in by_split.items() if not texts]
    if empty:  # TFDS cannot write an empty split
      raise DataError(f"{self.path} yields no {' / '.join(empty)} pairs (held out: German "
                      f"sentences of >= {MIN_WORDS} words); give a complete Ding file "
                      "(`German :: English` lines)")
    return {name: self._generate_examples(texts) for name, texts in by_split.items()}

  def _generate_examples(self, texts: dict[str, list[str]]):
    for de, ens in texts.items():
      yield de, {"de": de, "en": ens}
