"""WMT translation over TFDS `wmt14_translate` / `wmt17_translate` (task `wmt`).

    task.tfds_name = "wmt14_translate/de-en"; task.src_lang = "en"; task.tgt_lang = "de"

The dataset must be prepared beforehand in array_record format (it is downloaded, which this
code never does at runtime):

    tfds build wmt14_translate/de-en --data_dir=DATA_DIR --file_format=array_record

and is read with `builder.as_data_source()` (no TensorFlow needed for reading). Splits: train,
dev (TFDS "validation"), test. The vocabulary is a sentencepiece model trained on at most
`spm_max_sentences` evenly spaced train pairs (both languages when shared), cached in
`spm_dir` under a name hashing the dataset name/version, languages and settings.

The WMT builder modules are imported explicitly: without TensorFlow, `tfds.builder`'s lazy
registry lookup of the `translate` package fails, while the modules themselves import fine.
"""
from __future__ import annotations

import importlib
import pathlib
import re
from typing import TYPE_CHECKING

from encdec.errors import ConfigError, DataError
from encdec.data import base
from encdec.data.tokenizers import cached_sentencepiece

if TYPE_CHECKING:   # annotations only: TFDS is imported where a builder is made
  import tensorflow_datasets as tfds

TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def builder(tfds_name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel (slow)
  """The TFDS builder for `tfds_name` (e.g. "wmt14_translate/de-en") in `data_dir`."""
  dataset = tfds_name.split("/")[0].split(":")[0]
  match = re.fullmatch(r"(wmt\d\d|wmt_t2t)_translate", dataset)
  if match:
    importlib.import_module(f"tensorflow_datasets.translate.{match.group(1)}")
  try:
    return tfds.builder(tfds_name, data_dir=base.expand(data_dir))
  except Exception as e:  # DatasetNotFoundError, bad config name, ...
    raise ConfigError(f"unknown TFDS dataset {tfds_name!r} ({type(e).__name__}); use e.g. "
                      "task.tfds_name='wmt14_translate/de-en'") from None


def build_command(tfds_name: str, data_dir: str) -> str:
  return f"tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record"


def data_source(b: tfds.core.DatasetBuilder, tfds_name: str, data_dir: str, split: str):
  """`b.as_data_source(split)`, or a one-line error saying how to prepare the dataset."""
  try:
    return b.as_data_source(split)
  except Exception as e:  # not prepared / prepared as tfrecord / split missing
    if not (pathlib.Path(b.data_dir) / "dataset_info.json").exists():
      raise DataError(f"dataset {tfds_name} is not prepared in {b.data_dir}; prepare it "
                              f"with: {build_command(tfds_name, data_dir)}") from None
    raise DataError(f"cannot read {tfds_name} split {split!r} from {b.data_dir} as "
                    f"array_record ({type(e).__name__}: {str(e).splitlines()[0]}); rebuild "
                    f"with: {build_command(tfds_name, data_dir)}") from None


class PairSource:
  """A TFDS translation data source as {"src": str, "tgt": str} (len + __getitem__)."""

  def __init__(self, source, src_lang: str, tgt_lang: str):
    self._source, self._src, self._tgt = source, src_lang, tgt_lang

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, str]:
    row = self._source[int(index)]
    return {"src": base.decode_text(row[self._src]), "tgt": base.decode_text(row[self._tgt])}


class WmtTask:
  """WMT news translation; metrics: BLEU/chrF."""

  name = "wmt"
  metric_family = "text"
  splits = tuple(TFDS_SPLITS)

  @staticmethod
  def default_config() -> dict:
    return dict(
        tfds_name="wmt14_translate/de-en", src_lang="en", tgt_lang="de",
        data_dir=base.default_data_dir(),
        spm_dir=base.default_data_dir() + "/encdec_spm",
        vocab_size=32000, shared_vocab=True, spm_model_type="unigram",
        spm_character_coverage=1.0, spm_max_sentences=500_000, spm_threads=4,
        max_src_len=128, max_tgt_len=128,
    )

  def __init__(self, cfg):
    self.cfg = cfg
    self._builder = builder(cfg.tfds_name, cfg.data_dir)
    langs = tuple(self._builder.info.features.keys())
    for field in ("src_lang", "tgt_lang"):
      if cfg[field] not in langs:
        raise ConfigError(f"task.{field}={cfg[field]!r} is not a language of {cfg.tfds_name}; "
                          f"valid: {', '.join(langs)}")
    if cfg.src_lang == cfg.tgt_lang:
      raise ConfigError("task.src_lang and task.tgt_lang are equal; pick two languages")
    self._sources: dict[str, PairSource] = {}
    self.src_tokenizer, self.tgt_tokenizer = self._tokenizers()

  def train_source(self, split: str) -> PairSource:
    base.check_split(self, split)
    if split not in self._sources:
      source = data_source(self._builder, self.cfg.tfds_name, self.cfg.data_dir,
                           TFDS_SPLITS[split])
      self._sources[split] = PairSource(source, self.cfg.src_lang, self.cfg.tgt_lang)
    return self._sources[split]

  def eval_examples(self, split: str) -> list[base.EvalExample]:
    source = self.train_source(split)
    return [base.EvalExample(ex["src"], (ex["tgt"],)) for ex in map(source.__getitem__,
                                                                     range(len(source)))]

  def _sample(self) -> list[dict[str, str]]:
    """At most spm_max_sentences evenly spaced train pairs."""
    source = self.train_source("train")
    n, limit = len(source), self.cfg.spm_max_sentences
    indices = range(n) if limit <= 0 or n <= limit else (i * n // limit for i in range(limit))
    return [source[i] for i in indices]

  def _tokenizers(self):
    cfg = self.cfg
    key = (cfg.tfds_name, str(self._builder.version), len(self.train_source("train")))
    kwargs = dict(model_type=cfg.spm_model_type, character_coverage=cfg.spm_character_coverage,
                  num_threads=cfg.spm_threads)
    name = cfg.tfds_name.replace("/", "-")

    def train(side: str, texts_fn):
      return cached_sentencepiece(cfg.spm_dir, f"{name}-{side}", key, texts_fn,
                                  cfg.vocab_size, **kwargs)

    if cfg.shared_vocab:
      tok = train("shared", lambda: [ex[k] for ex in self._sample() for k in ("src", "tgt")])
      return tok, tok
    return (train(cfg.src_lang, lambda: [ex["src"] for ex in self._sample()]),
            train(cfg.tgt_lang, lambda: [ex["tgt"] for ex in self._sample()]))

  def normalize_source(self, text: str) -> str:
    """Surrounding whitespace removed (sentencepiece normalizes the rest)."""
    return text.strip()
