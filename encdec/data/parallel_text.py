"""Your own parallel corpus (task `parallel_text`).

Each split is given either as one TSV file or as two line-aligned files:

    task.train_path = "data/train.tsv"                 # "source<TAB>target" per line
    task.train_src, task.train_tgt = "train.de", "train.en"   # line i of one <-> line i of other

and likewise `dev_*` and `test_*`. `train` is required; dev/test are optional (a split left
empty is not in `task.splits`). Setting both forms for one split is an error. Every line must
hold a non-empty source and target; a TSV line must have exactly one tab. Errors name the file
and line number.

Vocabulary: a sentencepiece model trained on the train split (at most `spm_max_sentences`
pairs, evenly spaced), shared by source and target (`shared_vocab=True`) or one per side. It is
cached in `spm_dir` under a name that hashes the train files' contents and the vocabulary
settings, so it is trained once and retrained only when the corpus or a setting changes.
The corpus is read into memory.

`task.tokenizer="hf:DIR"` uses an imported checkpoint's own tokenizer instead (encdec/hf/
tokenizer.py; its special ids then reach the model): nothing is trained, and no split is
required, so a run directory made by `encdec import-hf` can decode without a corpus.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib

from encdec.errors import ConfigError, DataError
from encdec.data import base
from encdec.data.tokenizers import cached_sentencepiece

SPLITS = ("train", "dev", "test")


def read_tsv(path: str) -> list[tuple[str, str]]:
  """[(src, tgt)] from a "source<TAB>target" file; errors name the file and line."""
  pairs = []
  for lineno, line in enumerate(_read_lines(path), start=1):
    fields = line.split("\t")
    if len(fields) != 2:
      raise DataError(f"{path}:{lineno}: expected 'source<TAB>target', found {len(fields)} "
                      f"tab-separated field(s); fix or remove the line")
    pairs.append(_checked_pair(fields[0], fields[1], path, lineno))
  return pairs


def read_aligned(src_path: str, tgt_path: str) -> list[tuple[str, str]]:
  """[(src, tgt)] from two line-aligned files; errors name the file and line."""
  src, tgt = _read_lines(src_path), _read_lines(tgt_path)
  if len(src) != len(tgt):
    raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; aligned "
                    "files need one line per sentence on both sides")
  return [_checked_pair(s, t, f"{src_path} / {tgt_path}", i)
          for i, (s, t) in enumerate(zip(src, tgt), start=1)]


def _read_lines(path: str) -> list[str]:
  p = pathlib.Path(base.expand(path))
  if not p.is_file():
    raise DataError(f"parallel_text file {p} not found; check the task.*_path / "
                            "task.*_src / task.*_tgt config fields")
  lines = p.read_text(encoding="utf-8").splitlines()
  if not lines:
    raise DataError(f"{p} is empty; give a file with one example per line")
  return lines


def _checked_pair(src: str, tgt: str, where: str, lineno: int) -> tuple[str, str]:
  src, tgt = src.strip(), tgt.strip()
  if not src or not tgt:
    side = "source" if not src else "target"
    raise DataError(f"{where}:{lineno}: empty {side}; fix or remove the line")
  return src, tgt


def file_digest(paths: list[str]) -> str:
  """sha256 of the files' contents (the cache key of the vocabulary trained on them)."""
  h = hashlib.sha256()
  for path in paths:
    h.update(pathlib.Path(base.expand(path)).read_bytes())
  return h.hexdigest()


def evenly_spaced(items: list, limit: int) -> list:
  """At most `limit` items, evenly spaced over `items` (all of them if limit <= 0)."""
  if limit <= 0 or len(items) <= limit:
    return items
  return [items[i * len(items) // limit] for i in range(limit)]


class ParallelTextTask:
  """Translation-style task over local files; metrics: BLEU/chrF."""

  name = "parallel_text"
  metric_family = "text"

  @staticmethod
  def default_config() -> dict:
    return dict(
        train_path="", dev_path="", test_path="",       # TSV files ("src<TAB>tgt")
        train_src="", train_tgt="", dev_src="", dev_tgt="", test_src="", test_tgt="",  # aligned
        spm_dir=base.default_data_dir() + "/encdec_spm",  # sentencepiece cache
        vocab_size=8000, shared_vocab=True, spm_model_type="unigram",
        spm_character_coverage=1.0, spm_max_sentences=1_000_000,
        max_src_len=128, max_tgt_len=128,
        tokenizer="",   # "": sentencepiece trained on train; "hf:DIR": a checkpoint's own
    )

  def __init__(self, cfg):
    self.cfg = cfg
    self.files = {s: self._files(s) for s in SPLITS}
    if not self.files["train"] and not self._hf_tokenizer_dir():
      raise ConfigError("task parallel_text needs a train split: set task.train_path (TSV) or "
                        "task.train_src and task.train_tgt (aligned files)")
    self.splits = tuple(s for s in SPLITS if self.files[s])
    self._pairs: dict[str, list[tuple[str, str]]] = {}
    self.src_tokenizer, self.tgt_tokenizer = self._tokenizers()

  def _files(self, split: str) -> tuple[str, ...]:
    tsv, src, tgt = (self.cfg[f"{split}_{k}"] for k in ("path", "src", "tgt"))
    if tsv and (src or tgt):
      raise ConfigError(f"task.{split}_path and task.{split}_src/_tgt are both set; use one form")
    if bool(src) != bool(tgt):
      raise ConfigError(f"set both task.{split}_src and task.{split}_tgt (aligned files) or "
                        "neither")
    return (tsv,) if tsv else (src, tgt) if src else ()

  def pairs(self, split: str) -> list[tuple[str, str]]:
    """[(src, tgt)] of `split`, read once."""
    base.check_split(self, split)
    if split not in self._pairs:
      files = self.files[split]
      self._pairs[split] = read_tsv(*files) if len(files) == 1 else read_aligned(*files)
    return self._pairs[split]

  def _hf_tokenizer_dir(self) -> str:
    """DIR of task.tokenizer="hf:DIR" ("" otherwise); another value is a ConfigError."""
    spec = self.cfg.tokenizer
    if spec and not spec.startswith("hf:"):
      raise ConfigError(f"task.tokenizer={spec!r}: use '' (train a sentencepiece vocabulary) or "
                        "'hf:DIR' (a Hugging Face checkpoint's own tokenizer)")
    return base.expand(spec[3:]) if spec else ""

  def _tokenizers(self):
    cfg = self.cfg
    if self._hf_tokenizer_dir():
      from encdec.hf import tokenizer  # pylint: disable=import-outside-toplevel
      return tokenizer.load(self._hf_tokenizer_dir())
    pairs = evenly_spaced(self.pairs("train"), cfg.spm_max_sentences)
    key = (file_digest(list(self.files["train"])), len(pairs))
    kwargs = dict(model_type=cfg.spm_model_type, character_coverage=cfg.spm_character_coverage)
    train = functools.partial(cached_sentencepiece, cfg.spm_dir, vocab_size=cfg.vocab_size,
                              **kwargs)
    if cfg.shared_vocab:
      tok = train("parallel_text-shared", key, lambda: [t for p in pairs for t in p])
      return tok, tok
    return (train("parallel_text-src", key, lambda: [s for s, _ in pairs]),
            train("parallel_text-tgt", key, lambda: [t for _, t in pairs]))

  def train_source(self, split: str) -> base.ListSource:
    return base.ListSource([{"src": s, "tgt": t} for s, t in self.pairs(split)])

  def eval_examples(self, split: str) -> list[base.EvalExample]:
    """One example per line (a repeated source is kept as separate examples, as in BLEU)."""
    return [base.EvalExample(s, (t,)) for s, t in self.pairs(split)]

  def normalize_source(self, text: str) -> str:
    """Surrounding whitespace removed (sentencepiece normalizes the rest)."""
    return text.strip()
