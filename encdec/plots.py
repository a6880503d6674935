"""PNG plots comparing groups of runs (one colour per group), for `encdec report`.

Every function takes plain data (label -> numbers), writes one PNG with matplotlib's Agg
backend (no display needed) and returns its path.
"""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import numpy as np

# A seed's curve: {step: value}.
Curve = Mapping[int, float]


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def colours(labels: Sequence[str]) -> dict[str, str]:
  """A fixed colour per group label (matplotlib's default cycle C0..C9, in label order)."""
  palette = [f"C{i}" for i in range(10)]
  return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def seed_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, min, max) over seeds, on the steps every seed logged."""
  steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
  if not steps:
    empty = np.zeros((0,))
    return empty, empty, empty, empty
  values = np.array([[c[s] for s in steps] for c in curves], float)       # [seeds, steps]
  return np.array(steps), values.mean(0), values.min(0), values.max(0)


def learning_curves(panels: Mapping[str, Mapping[str, Sequence[Curve]]],
                    path: str | pathlib.Path) -> pathlib.Path:
  """One subplot per panel title (e.g. "train loss"), each group's mean over seeds as a line
  and its min–max over seeds as a band."""
  plt = _pyplot()
  labels = list(dict.fromkeys(label for groups in panels.values() for label in groups))
  colour = colours(labels)
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
  for ax, (title, groups) in zip(axes[0], panels.items()):
    for label, curves in groups.items():
      steps, mean, low, high = seed_band([c for c in curves if c])
      if not len(steps):
        continue
      ax.plot(steps, mean, color=colour[label], marker="o", markersize=3,
              label=f"{label} (n={len(curves)})")
      if len(curves) > 1:
        ax.fill_between(steps, low, high, color=colour[label], alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  return _save(fig, plt, path)


def quality_vs_speed(points: Mapping[str, tuple[float, float, float, float]], xlabel: str,
                     ylabel: str, path: str | pathlib.Path) -> pathlib.Path:
  """Scatter of groups: label -> (x mean, x std, y mean, y std), with error bars."""
  plt = _pyplot()
  colour = colours(list(points))
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for label, (x, x_std, y, y_std) in points.items():
    ax.errorbar([x], [y], xerr=[x_std], yerr=[y_std], fmt="o", color=colour[label], capsize=3,
                label=label)
    ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, plt, path)


def metric_bars(values: Mapping[str, tuple[float, float]], ylabel: str,
                path: str | pathlib.Path, highlight: str | None = None) -> pathlib.Path:
  """A bar per group: label -> (mean, std), std as an error bar; `highlight` gets hatching."""
  plt = _pyplot()
  labels = list(values)
  colour = colours(labels)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 4))
  bars = ax.bar(range(len(labels)), [values[k][0] for k in labels],
                yerr=[values[k][1] for k in labels], capsize=4,
                color=[colour[k] for k in labels])
  if highlight in values:
    bars[labels.index(highlight)].set_hatch("//")
  ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, plt, path)


def _save(fig, plt, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
