"""A Hugging Face checkpoint's own tokenizer, for tasks (`task.tokenizer=hf:DIR`).

    src_tok, tgt_tok = tokenizer.load("checkpoints/t5-small")
    src_tok.encode("translate English to German: Hello")   # ids, no EOS (the pipeline adds it)

Read from the checkpoint directory, in this order: `tokenizer.json` (the `tokenizers`
library: T5, BART's byte-level BPE, ...), `spiece.model` (T5's sentencepiece) or Marian's
`source.spm` / `target.spm` with `vocab.json` (the ids; the two sides may differ). The special
ids are the checkpoint's (families.special_tokens): masks, loss and decoding read them.
Encoding adds no special tokens: encdec's pipeline appends EOS and the model starts decoding
from the checkpoint's decoder start token.
"""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from encdec.data.tokenizers import SpecialTokens, UNK_TEXT
from encdec.errors import DataError
from encdec.hf import families, files

PREFIX = "hf:"


class HFTokenizer:
  """encdec's Tokenizer protocol over a checkpoint's tokenizer. `encode_pieces` (text -->
  pieces) and `piece_ids` (pieces <--> ids) are the backend's; decoding drops the special ids
  and stops at EOS."""

  def __init__(self, special: SpecialTokens, vocab_size: int, encode, decode, id_to_piece):
    self.special, self.vocab_size = special, vocab_size
    self._encode, self._decode, self._id_to_piece = encode, decode, id_to_piece

  def encode(self, text: str) -> list[int]:
    return [self.special.unk if i is None else i for i in self._encode(text)]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    out = []
    specials = {self.special.pad, self.special.bos, self.special.eos}
    for i in np.asarray(ids, np.int64).reshape(-1).tolist():
      if i == self.special.eos:
        break
      if i not in specials and 0 <= i < self.vocab_size:
        out.append(i)
    return self._decode(out)

  def pieces(self, ids) -> list[str]:
    ids = np.asarray(ids, np.int64).reshape(-1).tolist()
    return [self._id_to_piece(i) or UNK_TEXT for i in ids]


def _from_tokenizer_json(path: pathlib.Path, special: SpecialTokens) -> HFTokenizer:
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  tok = Tokenizer.from_file(str(path))
  return HFTokenizer(special, tok.get_vocab_size(with_added_tokens=True),
                     lambda text: tok.encode(text, add_special_tokens=False).ids,
                     lambda ids: tok.decode(ids, skip_special_tokens=False), tok.id_to_token)


def _from_sentencepiece(model: pathlib.Path, special: SpecialTokens,
                        vocab: dict[str, int] | None = None) -> HFTokenizer:
  """A sentencepiece model; with `vocab` (Marian's vocab.json) its pieces get those ids."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=str(model))
  if vocab is None:
    return HFTokenizer(special, sp.get_piece_size(), sp.encode, sp.decode, sp.id_to_piece)
  pieces = {i: p for p, i in vocab.items()}
  return HFTokenizer(special, max(pieces) + 1,
                     lambda text: [vocab.get(p) for p in sp.encode(text, out_type=str)],
                     lambda ids: sp.decode([pieces[i] for i in ids]), pieces.get)


def load(directory: str | pathlib.Path) -> tuple[HFTokenizer, HFTokenizer]:
  """(source, target) tokenizers of a checkpoint directory; a DataError naming the files if
  it has none encdec reads."""
  directory = pathlib.Path(directory).expanduser()
  config = files.read_config(directory)
  special = families.special_tokens(families.detect(config), config)
  if (directory / "tokenizer.json").is_file():
    tok = _from_tokenizer_json(directory / "tokenizer.json", special)
    return tok, tok
  if (directory / "spiece.model").is_file():
    tok = _from_sentencepiece(directory / "spiece.model", special)
    return tok, tok
  if (directory / "source.spm").is_file() and (directory / "vocab.json").is_file():
    vocab = json.loads((directory / "vocab.json").read_text())
    return (_from_sentencepiece(directory / "source.spm", special, vocab),
            _from_sentencepiece(directory / "target.spm", special, vocab))
  raise DataError(f"no tokenizer in {directory}: expected tokenizer.json, spiece.model, or "
                  "source.spm + target.spm + vocab.json (download them with the checkpoint)")
