"""The predictions TSV a final evaluation writes beside its scores, one row per example:

    source    references (joined by " | ")    prediction    [reference_nll    reference_tokens]

The last two columns are there when the evaluation scored the references under teacher forcing:
their NLL in nats, summed over all of the example's references, and how many tokens that is.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterable, Sequence

import numpy as np

COLUMNS = ("source", "references", "prediction")
SCORED_COLUMNS = ("reference_nll", "reference_tokens")
REFERENCE_SEPARATOR = " | "


@dataclasses.dataclass
class Predictions:
  """A TSV's columns; `reference_nll` [N, 2] (nats, tokens) or None where it has none."""
  sources: list[str]
  refs: list[list[str]]
  predictions: list[str]
  reference_nll: np.ndarray | None = None


def write(path: str | pathlib.Path,
          rows: Iterable[tuple[str, Sequence[str], str, float | None, int | None]]) -> None:
  """Rows of (source, references, prediction, reference NLL or None, its tokens or None); the
  NLL columns are written when the first row has them."""
  rows = list(rows)
  scored = bool(rows) and rows[0][3] is not None
  with pathlib.Path(path).open("w") as f:
    f.write("\t".join(COLUMNS + SCORED_COLUMNS * scored) + "\n")
    for src, refs, prediction, nll, tokens in rows:
      f.write(f"{src}\t{REFERENCE_SEPARATOR.join(refs)}\t{prediction}"
              + (f"\t{nll:.6f}\t{tokens}" if scored else "") + "\n")


def read(path: str | pathlib.Path) -> Predictions:
  """A TSV `write` wrote (or one without the NLL columns, as older runs wrote)."""
  head, *lines = pathlib.Path(path).read_text().splitlines()
  scored = tuple(head.split("\t")[-2:]) == SCORED_COLUMNS
  out, nll = Predictions([], [], []), []
  for line in lines:
    cells = line.split("\t")
    if scored:
      cells, (total, tokens) = cells[:-2], cells[-2:]
      nll.append((float(total), float(tokens)))
    cells += [""] * (3 - len(cells))
    out.sources.append(cells[0])
    out.refs.append(cells[1].split(REFERENCE_SEPARATOR))
    out.predictions.append("\t".join(cells[2:]))
  if scored:
    out.reference_nll = np.array(nll, float).reshape(-1, 2)                # [N, 2]
  return out
