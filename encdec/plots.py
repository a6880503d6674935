"""PNG plots comparing groups of runs (one colour per group), for `encdec report`.

Every function takes plain data (label -> numbers), writes one PNG and returns its path.
Figures are made with matplotlib's object API (`matplotlib.figure.Figure`), not pyplot: no
backend is chosen and no global state is touched, so a notebook's own backend is left alone
and no display is needed.
"""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import numpy as np

# A seed's curve: {step: value}.
Curve = Mapping[int, float]


def _figure(width: float, height: float):
  """A new figure, outside pyplot (saved with the PNG canvas, closed by garbage collection)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height))


def colours(labels: Sequence[str]) -> dict[str, tuple | str]:
  """A distinct colour per group label, in label order: matplotlib's default cycle C0..C9, or
  the 20 colours of tab20 for more groups."""
  if len(labels) <= 10:
    return {label: f"C{i}" for i, label in enumerate(labels)}
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  palette = colormaps["tab20"].colors
  return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def short_labels(labels: Sequence[str]) -> dict[str, str]:
  """Drop a 'key=' prefix that every label shares ('cross_attention=mqa' -> 'mqa')."""
  keys = {label.split("=", 1)[0] for label in labels if "=" in label}
  if len(keys) != 1 or not all("=" in label and "." not in label for label in labels):
    return {label: label for label in labels}
  return {label: label.split("=", 1)[1] for label in labels}


def off_scale(values: Mapping[str, float], factor: float = 10.0) -> set[str]:
  """Groups whose value lies more than `factor` median absolute deviations (of all groups'
  values) from their median, e.g. a no-source control at 100% WER beside variants at 55-60%.
  Plots leave them out of the axis range and name them instead of squashing the others."""
  if len(values) < 4:
    return set()
  centre = float(np.median(list(values.values())))
  spread = float(np.median([abs(v - centre) for v in values.values()]))
  if spread == 0:
    return set()
  return {label for label, v in values.items() if abs(v - centre) > factor * spread}


def _limits(values: Sequence[float], margin: float = 0.08) -> tuple[float, float]:
  low, high = min(values), max(values)
  pad = margin * (high - low) or abs(high) * margin or 1.0
  return low - pad, high + pad


def _note_off_scale(ax, names: Sequence[str]) -> None:
  if names:
    ax.text(0.01, 0.99, "off scale: " + ", ".join(names), transform=ax.transAxes, va="top",
            fontsize=8, color="0.3")


def seed_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, min, max) over seeds, on the steps every seed logged."""
  steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
  if not steps:
    empty = np.zeros((0,))
    return empty, empty, empty, empty
  values = np.array([[c[s] for s in steps] for c in curves], float)       # [seeds, steps]
  return np.array(steps), values.mean(0), values.min(0), values.max(0)


def _band_values_past(band, fraction: float) -> list[float]:
  """A seed band's min and max values from `fraction` of its step range on."""
  steps, _, lows, highs = band
  keep = steps >= steps[0] + fraction * (steps[-1] - steps[0])
  return [*lows[keep], *highs[keep]]


def learning_curves(panels: Mapping[str, Mapping[str, Sequence[Curve]]],
                    path: str | pathlib.Path, *, xlabel: str = "step",
                    xmarks: Mapping[str, float] | None = None,
                    hide_off_scale: bool = True) -> pathlib.Path:
  """One subplot per panel title (e.g. "train loss"), each group's mean over seeds as a line
  and its min–max over seeds as a band. A curve maps x (a step, or e.g. an input length) to a
  value; `xmarks`: panel title -> x of a dotted vertical line (e.g. the longest training
  input); `hide_off_scale`: leave groups far from the others out of the y range (see
  off_scale)."""
  labels = list(dict.fromkeys(label for groups in panels.values() for label in groups))
  colour, name = colours(labels), short_labels(labels)
  fig = _figure(5.5 * len(panels), 4)
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (title, groups) in zip(axes[0], panels.items()):
    bands = {label: seed_band([c for c in curves if c]) for label, curves in groups.items()}
    bands = {label: band for label, band in bands.items() if len(band[0])}
    hidden = (off_scale({label: float(band[1][-1]) for label, band in bands.items()})
              if hide_off_scale else set())
    for i, (label, (steps, mean, low, high)) in enumerate(bands.items()):
      ax.plot(steps, mean, color=colour[label], marker="o", markersize=3,
              linestyle=("-", "--")[i // 10 % 2], label=f"{name[label]} (n={len(groups[label])})")
      if len(groups[label]) > 1:
        ax.fill_between(steps, low, high, color=colour[label], alpha=0.2, linewidth=0)
    # The others' whole curves set the range, or, where their first values (a loss at step 0)
    # already reach the hidden groups' ends, the curves past their first tenth.
    for skip in (0.0, 0.1) if hidden else ():
      low, high = _limits([v for label, band in bands.items() if label not in hidden
                           for v in _band_values_past(band, skip)])
      outside = sorted(k for k in hidden if not low <= bands[k][1][-1] <= high)
      if outside:
        ax.set_ylim(low, high)
        _note_off_scale(ax, [f"{name[k]} (ends at {bands[k][1][-1]:.3g})" for k in outside])
        break
    if title in (xmarks or {}):
      ax.axvline(xmarks[title], color="0.4", linestyle=":", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  return _save(fig, path)


def quality_vs_speed(points: Mapping[str, tuple[float, float, float, float]], xlabel: str,
                     ylabel: str, path: str | pathlib.Path) -> pathlib.Path:
  """Scatter of groups: label -> (x mean, x std, y mean, y std), with error bars."""
  colour, name = colours(list(points)), short_labels(list(points))
  hidden = off_scale({label: p[2] for label, p in points.items()})
  shown = {label: p for label, p in points.items() if label not in hidden}
  fig = _figure(7, 5)
  ax = fig.subplots()
  for label, (x, x_std, y, y_std) in shown.items():
    ax.errorbar([x], [y], xerr=[x_std], yerr=[y_std], fmt="o", color=colour[label], capsize=3,
                label=name[label])
  _note_off_scale(ax, [f"{name[k]} ({ylabel} {points[k][2]:.3g}, {xlabel} {points[k][0]:.3g})"
                       for k in sorted(hidden)])
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()                          # the axes' final place, which the labels follow
  _label_points(ax, {name[label]: (p[0], p[2]) for label, p in shown.items()}, fontsize=8)
  return _save(fig, path)


def differences_vs_cost(panels: Mapping[str, Mapping[str, tuple[float, float, float, float,
                                                                   bool]]],
                        xlabel: str, path: str | pathlib.Path) -> pathlib.Path:
  """One panel per title: label -> (cost x, difference Δ, interval low, interval high, whether
  the difference is significant), Δ with its interval as a vertical bar; filled markers are
  significant, hollow ones not. x on a log scale (cost ratios), a line at Δ = 0.

  A label whose Δ is `off_scale` (a control tens of points away) does not set the Δ axis: it
  is a triangle at the panel's edge, its Δ and interval written beside it, so the differences
  that matter are not squeezed into a line."""
  from matplotlib.ticker import FormatStrFormatter  # pylint: disable=import-outside-toplevel
  labels = sorted({label for points in panels.values() for label in points})
  colour = colours(labels)
  fig = _figure(5.0 * len(panels), 4.5)
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  outside_of = {title: off_scale({label: p[1] for label, p in points.items()})
                for title, points in panels.items()}
  for ax, (title, points) in zip(axes, panels.items()):
    outside = outside_of[title]
    for label, (x, delta, low, high, significant) in points.items():
      if label in outside:
        continue
      ax.errorbar([x], [delta], yerr=[[delta - low], [high - delta]], fmt="o", capsize=3,
                  color=colour[label], markerfacecolor=colour[label] if significant else "white")
    ax.axhline(0.0, color="grey", lw=0.8)
    bottom, top = ax.get_ylim()
    for label in sorted(outside):
      x, delta, low, high, _ = points[label]
      edge, marker = (top, "^") if delta > top else (bottom, "v")
      ax.plot([x], [edge], marker=marker, color=colour[label], clip_on=False)
      ax.annotate(f"{label}: {delta:+.3g} [{low:+.3g}, {high:+.3g}] (off scale)", (x, edge),
                  textcoords="offset points", xytext=(6, -10 if delta > top else 4), fontsize=7)
    ax.set_ylim(bottom, top)
    ax.set_xscale("log")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
      axis(FormatStrFormatter("%.1f"))        # ratios as 0.6, 0.8, 1.0, not 6 x 10^-1
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("Δ against standard multi-head (95% interval)")
  fig.tight_layout()                          # the axes' final place, which the labels follow
  for ax, (title, points) in zip(axes, panels.items()):
    _label_points(ax, {label: p[:2] for label, p in points.items()
                       if label not in outside_of[title]})
  return _save(fig, path)


def _label_points(ax, anchors: Mapping[str, tuple[float, float]], fontsize: float = 7) -> None:
  """Each label to the upper right of its point (data x, y), raised just enough that it does
  not overlap a label placed before it (lowest points first); a raised label gets a leader
  line to its point. Call it once the axes' limits and place are final."""
  to_pixels, dpi = ax.transData.transform, ax.figure.dpi
  points_per_pixel = 72 / dpi
  height = 1.25 * fontsize / points_per_pixel                # a line of text, in pixels
  placed: list[tuple[float, float, float]] = []               # (left, bottom, right) in pixels
  gap = 3 / points_per_pixel
  for label, (x, y) in sorted(anchors.items(), key=lambda kv: to_pixels(kv[1])[1]):
    px, py = to_pixels((x, y))
    left, right = px + gap, px + gap + 0.62 * fontsize * len(label) / points_per_pixel
    bottom = py + gap
    while clash := [other_bottom for other_left, other_bottom, other_right in placed
                    if other_left < right and left < other_right
                    and abs(other_bottom - bottom) < height - 0.5]:   # 0.5: float rounding
      bottom = max(clash) + height
    placed.append((left, bottom, right))
    raised = bottom - py > 2 * gap
    ax.annotate(label, (x, y), textcoords="offset points", fontsize=fontsize,
                xytext=(gap * points_per_pixel, (bottom - py) * points_per_pixel),
                arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5") if raised else None)


def differences_by_bin(series: Mapping[str, Sequence[tuple[float, float, float, bool] | None]],
                       bins: Sequence[str], xlabel: str, ylabel: str,
                       path: str | pathlib.Path) -> pathlib.Path:
  """Label -> per bin (Δ, interval low, interval high, significant) or None: each label's Δ
  with its interval across the bins, the labels side by side within a bin; filled markers are
  significant, hollow ones not. A label `off_scale` in every bin (a control far away) is named
  instead of drawn."""
  labels = list(series)
  colour = colours(labels)
  typical = {label: float(np.median([p[0] for p in points if p])) for label, points in
             series.items() if any(points)}
  outside = off_scale(typical)
  drawn = [label for label in labels if label in typical and label not in outside]
  fig = _figure(max(6.0, 1.2 * len(bins) + 2.5), 4.5)
  ax = fig.subplots()
  width = 0.8 / max(len(drawn), 1)
  for i, label in enumerate(drawn):
    x = np.arange(len(bins)) - 0.4 + width * (i + 0.5)
    points = [(xi, p) for xi, p in zip(x, series[label]) if p is not None]
    for xi, (delta, low, high, significant) in points:
      ax.errorbar([xi], [delta], yerr=[[delta - low], [high - delta]], fmt="o", capsize=2,
                  ms=4, color=colour[label],
                  markerfacecolor=colour[label] if significant else "white")
    ax.plot([xi for xi, _ in points], [p[0] for _, p in points], color=colour[label], lw=0.8,
            alpha=0.6, label=label)
  ax.axhline(0.0, color="grey", lw=0.8)
  _note_off_scale(ax, sorted(outside))
  ax.set_xticks(range(len(bins)), bins, fontsize=8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.legend(fontsize=7, ncol=2, loc="best")
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, path)


def metric_points(values: Mapping[str, Sequence[float]], ylabel: str,
                  path: str | pathlib.Path, baseline: str | None = None) -> pathlib.Path:
  """Each group's seeds as dots and their mean ± std as a bar with its value written: label ->
  one value per seed. The axis spans the groups (not zero, where differences of a point would
  vanish), a group `off_scale` (a control far away) is named instead; `baseline`'s mean is a
  dashed line across."""
  labels = list(values)
  colour, name = colours(labels), short_labels(labels)
  means = {k: float(np.mean(v)) for k, v in values.items()}
  hidden = off_scale(means)
  fig = _figure(max(4.0, 0.8 * len(labels) + 1.5), 4)
  ax = fig.subplots()
  for i, label in enumerate(labels):
    if label in hidden:
      continue
    seeds = np.asarray(values[label], float)
    jitter = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    ax.plot(i + jitter, seeds, "o", color=colour[label], alpha=0.5, markersize=4)
    std = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else 0.0
    ax.errorbar([i + 0.3], [means[label]], yerr=[std], fmt="D", color=colour[label], capsize=4,
                markersize=6, markerfacecolor="white" if label == baseline else colour[label])
    ax.annotate(f"{means[label]:.4g}", (i + 0.3, means[label]), textcoords="offset points",
                xytext=(5, 0), va="center", fontsize=7)
  if baseline in means and baseline not in hidden:
    ax.axhline(means[baseline], color="0.4", linestyle="--", linewidth=0.8)
  _note_off_scale(ax, [f"{name[k]} ({means[k]:.3g})" for k in labels if k in hidden])
  ax.set_xlim(-0.6, len(labels) - 0.2)
  ax.set_xticks(range(len(labels)), [name[k] + (" (baseline)" if k == baseline else "")
                                     for k in labels], rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, path)


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
