"""Cross-attention maps: extract them from a forward pass and plot them as heatmaps.

Where a variant records its weights, and what they attend to, is the variant's own business
(`weights_path`, `weights_keys` on its class in model/cross_attention.py); this module reads
those attributes, so a new variant gets attention maps without an edit here.
"""
from __future__ import annotations

import pathlib
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np

from encdec.errors import ConfigError
from encdec.model import transformer


class Maps(NamedTuple):
  """Teacher-forced cross-attention probabilities of the decoder layers that have them."""
  layers: tuple[int, ...]   # their decoder layer indices (0-based; placement may skip some)
  weights: np.ndarray       # float [len(layers), B, heads, T, K]
  keys: str                 # what the K axis indexes: "source" positions or "latents"


def check_available(config: Any) -> None:
  """A one-line ConfigError if the model's cross-attention variant records no weights."""
  variant = config.variant
  if variant.weights_path is None:
    why = (variant.__doc__ or variant.__name__).strip().splitlines()[0].rstrip(".")
    raise ConfigError(f"model.cross_attention={config.cross_attention!r} records no "
                      f"cross-attention weights to plot ({why}); run eval without --plot-attention")


def cross_attention_weights(module: nn.Module, variables: Any, src: jax.Array,
                            tgt_in: jax.Array) -> Maps:
  """One teacher-forced forward pass, src [B, S] and tgt_in [B, T] --> Maps of every decoder
  layer that has cross-attention (model.cross_attention_layers), in layer order."""
  config = module.config
  check_available(config)
  # Unrolled, every decoder layer is its own scope `layer_<i>`, scanned or not, placed or not.
  module, params = transformer.unrolled(module, variables["params"])
  _, state = module.apply({"params": params}, src, tgt_in, mutable=["intermediates"])
  decoder = state["intermediates"]["decoder"]
  layers = tuple(i for i, has in enumerate(config.cross_layers()) if has)
  weights = []
  for i in layers:
    node = decoder[f"layer_{i}"]["cross_attention"]
    for key in config.variant.weights_path:
      node = node[key]
    weights.append(np.asarray(node[0]))                                    # [B, H, T, K]
  return Maps(layers, np.stack(weights), config.variant.weights_keys)       # [L', B, H, T, K]


def key_labels(maps: Maps, src_labels: Sequence[str]) -> list[str]:
  """Labels of the K axis: the source pieces, or z0, z1, ... for latents."""
  if maps.keys == "source":
    return list(src_labels)
  return [f"z{i}" for i in range(maps.weights.shape[-1])]


def plot_example(weights: np.ndarray, key_labels_: Sequence[str], tgt_labels: Sequence[str],
                 path: str | pathlib.Path, title: str = "",
                 layers: Sequence[int] | None = None) -> None:
  """One example's maps [layers, heads, T, K]: a row per layer (head mean, then each head),
  titled with the decoder layer indices `layers` (default 0, 1, ...)."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel (slow)

  n_layers, n_heads = weights.shape[:2]
  layers = range(n_layers) if layers is None else layers
  t, k = len(tgt_labels), len(key_labels_)
  weights = weights[:, :, :t, :k]
  cols = n_heads + 1
  cell = 0.22
  fig, axes = plt.subplots(n_layers, cols, squeeze=False,
                           figsize=(cols * max(2.0, k * cell + 0.8),
                                    n_layers * max(2.0, t * cell + 0.8)))
  for row, layer in enumerate(layers):
    panels = [("mean over heads", weights[row].mean(0))] + [
        (f"head {h}", weights[row, h]) for h in range(n_heads)]
    for col, (name, w) in enumerate(panels):
      ax = axes[row, col]
      ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
      ax.set_title(f"layer {layer}: {name}", fontsize=8)
      ax.set_xticks(range(k), key_labels_, fontsize=7, rotation=90)
      ax.set_yticks(range(t), tgt_labels, fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
