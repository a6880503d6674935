"""The Hugging Face fixtures of tests/test_hf_*.py (tests/fixtures/hf/, made by its
make_fixtures.py): each converted to an encdec model without a run directory."""
import pathlib

import numpy as np

from encdec import model
from encdec.hf import families, files, weights

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf"
NAMES = ("t5_v1_0", "t5_v1_1", "bart", "bart_untied", "marian", "marian_untied")
MAX_NEW_TOKENS = 12   # make_fixtures.MAX_NEW_TOKENS


def converted(name: str, root: pathlib.Path = FIXTURES, **changes):
  """(module, variables, expected arrays) of fixture `root/name`; `changes`: model fields."""
  directory = root / name
  hf_config, tensors = files.read_config(directory), files.read_tensors(directory)
  family = families.detect(hf_config)
  cfg = model.schema.from_mapping({**families.model_fields(family, hf_config, tensors),
                                   **families.special_tokens(family, hf_config).model_fields(),
                                   **changes})
  expected = dict(np.load(directory / "expected.npz"))
  return (model.EncoderDecoder(cfg), {"params": weights.to_params(family, cfg, tensors)},
          {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in expected.items()})


def finished_rows(tokens: np.ndarray, eos: int) -> list[int]:
  """Rows that end with EOS (where transformers' and encdec's beam searches agree)."""
  return [r for r, row in enumerate(tokens) if eos in row.tolist()]
