"""German -> English translation on the Ding dictionary (task `ding_de_en`), fully offline.

    apt-get install trans-de-en          # Debian/Ubuntu: the Ding dictionary (GPL-2+), 25 MB
    encdec train --config translation_de_en --workdir runs/de_en

Data: the installed file `task.path` (default /usr/share/trans/de-en), cleaned and split by the
TFDS builder in builders/ding_de_en.py (cleaning, synonym rule, split rule and counts documented
there), prepared on first use (about 20 s) into `data_dir`/ding_de_en-<hash of the file> and
read with `as_data_source()`; a new Ding release or another file is prepared afresh. Splits:
train (words, phrases and sentences) / dev (the builder's "validation") / test, disjoint by
normalised German. `task.held_out` picks the builder's configuration, what dev and test hold:
"sentences" (the default: sentence pairs, >= 4 words on both sides, about 1,000 each) or
"phrases" (dictionary phrases of 2-6 German words, about 1,000 each; sentences are then train).

Vocabulary: one sentencepiece model shared by German and English, trained on at most
`spm_max_sentences` evenly spaced train pairs (deterministic), cached in `spm_dir` under a name
hashing the file, the builder version and the settings (trained once, about a minute).
Training: one example per (German, English) pair. Evaluation: one example per German text with
all of its English texts as references; BLEU and chrF (sacrebleu; signatures in the eval JSON).
"""
from __future__ import annotations

import functools
import pathlib

from encdec.errors import ConfigError, DataError
from encdec.data import base, parallel_text
from encdec.data.tokenizers import cached_sentencepiece

DEFAULT_PATH = "/usr/share/trans/de-en"   # Debian's trans-de-en
TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def source_file(path: str) -> pathlib.Path:
  """The Ding file at `path`; a one-line DataError saying how to install or point to it."""
  p = pathlib.Path(base.expand(path))
  if not p.is_file():
    raise DataError(f"Ding dictionary {p} not found; install it with `apt-get install "
                    "trans-de-en` or set --config.task.path=FILE (a `German :: English` file)")
  return p


def file_hash(path: str) -> str:
  """sha256 of the Ding file at `path` (names its prepared data and its vocabulary)."""
  return parallel_text.file_digest([str(source_file(path))])


def prepared_builder(path: str, data_dir: str, held_out: str):
  """The ding_de_en builder (configuration `held_out`) of the file at `path`, prepared in
  `data_dir` if needed.

  Each file (by content hash) has its own directory; preparation holds a file lock there
  (base.prepared), so runs started together (a sweep) prepare it once.
  """
  from encdec.data.builders import ding_de_en  # pylint: disable=import-outside-toplevel (TFDS)
  src = source_file(path)
  root = pathlib.Path(base.expand(data_dir)) / f"ding_de_en-{file_hash(path)[:12]}"
  make = functools.partial(ding_de_en.DingDeEn, path=str(src), data_dir=str(root),
                           config=held_out, file_format="array_record")
  return base.prepared(make, root / ".lock", "about 20 s")


@functools.lru_cache(maxsize=8)
def read_split(path: str, data_dir: str, held_out: str, split: str
               ) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """((German, English texts), ...) of a TFDS split, in stored order (cached)."""
  source = prepared_builder(path, data_dir, held_out).as_data_source(split)
  rows = source.__getitems__(list(range(len(source))))
  return tuple((base.decode_text(r["de"]), tuple(base.decode_text(e) for e in r["en"]))
               for r in rows)


class DingDeEnTask:
  """Ding German --> English (words, phrases and sentences); metrics: BLEU/chrF."""

  name = "ding_de_en"
  metric_family = "text"
  splits = tuple(TFDS_SPLITS)

  @staticmethod
  def default_config() -> dict:
    return dict(
        path=DEFAULT_PATH,                 # the Ding file (apt-get install trans-de-en)
        held_out="sentences",              # dev/test: "sentences" or "phrases" (2-6 words)
        data_dir=base.default_data_dir(),  # TFDS data_dir (~ expanded at use)
        spm_dir=base.default_data_dir() + "/encdec_spm",  # sentencepiece cache
        vocab_size=8000, spm_model_type="unigram", spm_character_coverage=1.0,
        spm_max_sentences=200_000,         # train pairs the vocabulary is trained on
        max_src_len=64, max_tgt_len=64,    # sentencepiece tokens
    )

  def __init__(self, cfg):
    from encdec.data.builders import ding_de_en  # pylint: disable=import-outside-toplevel (TFDS)
    if cfg.held_out not in ding_de_en.HELD_OUT:
      raise ConfigError(f"unknown task.held_out {cfg.held_out!r}; valid: "
                        f"{', '.join(ding_de_en.HELD_OUT)}")
    self.cfg = cfg
    self.src_tokenizer = self.tgt_tokenizer = self._tokenizer()

  def texts(self, split: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """((German, English texts), ...) of `split`."""
    base.check_split(self, split)
    return read_split(self.cfg.path, self.cfg.data_dir, self.cfg.held_out, TFDS_SPLITS[split])

  def _tokenizer(self):
    from encdec.data.builders import ding_de_en  # pylint: disable=import-outside-toplevel (TFDS)
    cfg = self.cfg
    pairs = parallel_text.evenly_spaced(
        [(de, en) for de, ens in self.texts("train") for en in ens], cfg.spm_max_sentences)
    key = (file_hash(cfg.path), ding_de_en.HELD_OUT[cfg.held_out].since, len(pairs))
    return cached_sentencepiece(cfg.spm_dir, "ding_de_en-shared", key,
                                lambda: [t for p in pairs for t in p], cfg.vocab_size,
                                model_type=cfg.spm_model_type,
                                character_coverage=cfg.spm_character_coverage)

  def train_source(self, split: str) -> base.ListSource:
    return base.ListSource([{"src": de, "tgt": en} for de, ens in self.texts(split)
                            for en in ens])

  def eval_examples(self, split: str) -> list[base.EvalExample]:
    return [base.EvalExample(de, ens) for de, ens in self.texts(split)]

  def normalize_source(self, text: str) -> str:
    """A user's German as the sources are written (NFC, ' for ’, single spaces)."""
    from encdec.data.builders import ding_de_en  # pylint: disable=import-outside-toplevel (TFDS)
    return ding_de_en.normalize(text)
