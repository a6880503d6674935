"""Cross-attention maps: extract them from a forward pass and plot them as heatmaps."""
from __future__ import annotations

import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def cross_attention_weights(module: nn.Module, variables: Any, src: jax.Array,
                            tgt_in: jax.Array) -> np.ndarray:
  """Teacher-forced cross-attention probabilities: float [layers, B, heads, T, S]."""
  _, state = module.apply({"params": variables["params"]}, src, tgt_in,
                          mutable=["intermediates"])
  decoder = state["intermediates"]["decoder"]
  if "layers" in decoder:                                   # scanned: stacked on axis 0
    return np.asarray(decoder["layers"]["cross_attention"]["weights"][0])
  layers = sorted((k for k in decoder if k.startswith("layer_")), key=lambda k: int(k[6:]))
  return np.stack([np.asarray(decoder[k]["cross_attention"]["weights"][0]) for k in layers])


def plot_example(weights: np.ndarray, src_labels: Sequence[str], tgt_labels: Sequence[str],
                 path: str | pathlib.Path, title: str = "") -> None:
  """One example's maps [layers, heads, T, S]: a row per layer (head mean, then each head)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  n_layers, n_heads = weights.shape[:2]
  t, s = len(tgt_labels), len(src_labels)
  weights = weights[:, :, :t, :s]
  cols = n_heads + 1
  cell = 0.22
  fig, axes = plt.subplots(n_layers, cols, squeeze=False,
                           figsize=(cols * max(2.0, s * cell + 0.8),
                                    n_layers * max(2.0, t * cell + 0.8)))
  for layer in range(n_layers):
    panels = [("mean over heads", weights[layer].mean(0))] + [
        (f"head {h}", weights[layer, h]) for h in range(n_heads)]
    for col, (name, w) in enumerate(panels):
      ax = axes[layer, col]
      ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
      ax.set_title(f"layer {layer}: {name}", fontsize=8)
      ax.set_xticks(range(s), src_labels, fontsize=7, rotation=90)
      ax.set_yticks(range(t), tgt_labels, fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
