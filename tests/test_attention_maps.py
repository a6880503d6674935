"""`encdec eval --plot-attention`: maps for every registered variant and every placement of
cross-attention, or a one-line error saying why a variant has none. Tiny untrained models."""
import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from compiled import structural_quick
from encdec import assembly, attention_maps, config, evaluate, inference, run as run_lib
from encdec.data import tasks
from encdec.errors import ConfigError
from encdec.model import transformer

PREDICTIONS = [evaluate.Prediction("abcd", ("abcd",), "abc"),
               evaluate.Prediction("ef", ("ef",), "efgh")]


def tiny_run(**model):
  """A TrainedRun of an untrained 3-decoder-layer model on the copy task (letters)."""
  cfg = config.load("configs/algorithmic.py:task=copy", {
      "task.max_len": 6, "model.d_model": 16, "model.num_heads": 2, "model.d_ff": 32,
      "model.num_encoder_layers": 1, "model.num_decoder_layers": 3, "model.cross_kv_heads": 1,
      "model.cross_latents": 5, **{f"model.{k}": v for k, v in model.items()}})
  task = tasks.build(cfg.task)
  module = assembly.build_model(cfg, task)
  params = jax.jit(module.init)(jax.random.key(0), *assembly.example_inputs(cfg))["params"]
  return run_lib.TrainedRun(cfg, task, module, nn.unbox(params), step=0)


def plotted(run, tmp_path, monkeypatch) -> list[dict]:
  """Run inference.plot_attention_maps; what it passed to each plot_example call."""
  calls, plot = [], attention_maps.plot_example

  def spy(weights, keys, tgt_labels, path, **kwargs):
    calls.append(dict(weights=weights, keys=keys, tgt_labels=tgt_labels, **kwargs))
    plot(weights, keys, tgt_labels, path, **kwargs)

  monkeypatch.setattr(attention_maps, "plot_example", spy)
  paths = inference.plot_attention_maps(run, PREDICTIONS, tmp_path / "maps")
  assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG"] * len(PREDICTIONS)
  return calls


# Quick: maps over latents (latent), none to plot (none); the other variants are slow (maps
# over the source (mha) and over source and target prefix (merged) are plotted quick below).
@pytest.mark.parametrize("variant", structural_quick(("latent", "none")))
def test_every_variant_plots_its_maps_or_says_why_not(variant, tmp_path, monkeypatch):
  run = tiny_run(cross_attention=variant)
  variant_cls = run.module.config.variant
  if variant_cls.weights_path is None:
    with pytest.raises(ConfigError, match=rf"model.cross_attention='{variant}' records no "
                                          r"cross-attention weights to plot \(") as error:
      plotted(run, tmp_path, monkeypatch)
    assert len(str(error.value).splitlines()) == 1
    return
  calls = plotted(run, tmp_path, monkeypatch)
  for call, p in zip(calls, PREDICTIONS):
    src_len, tgt_len = len(p.src) + 1, len(p.prediction) + 1                # + EOS
    keys = src_len if variant_cls.weights_keys == "source" else 5          # model.cross_latents
    assert call["layers"] == (0, 1, 2)
    assert call["weights"].shape == (3, 2, tgt_len, keys)                  # [layers, H, T, K]
    assert len(call["keys"]) == keys and len(call["tgt_labels"]) == tgt_len
    # Probabilities over the keys: each query's weights sum to 1 (to at most 1 where one
    # softmax also covers the target prefix, as in `merged`), and some differ from uniform.
    sums = call["weights"].sum(-1)
    assert np.all(call["weights"] >= 0) and np.all(sums <= 1 + 1e-5) and np.all(sums > 0.05)
    assert not np.allclose(call["weights"], call["weights"][..., :1])


@pytest.mark.parametrize("variant, placement, layers", [
    ("mha", "every:2", (1,)), ("merged", "0,2", (0, 2))] + [
    pytest.param(*case, marks=pytest.mark.slow) for case in [
        ("mha", "first", (0,)), ("gated", "last", (2,)), ("shared_kv", "middle", (1,)),
        ("latent", "1,2", (1, 2)), ("parallel", "every:1", (0, 1, 2))]])
def test_only_layers_with_cross_attention_are_plotted_under_their_own_index(
    variant, placement, layers, tmp_path, monkeypatch):
  run = tiny_run(cross_attention=variant, cross_attention_layers=placement)
  calls = plotted(run, tmp_path, monkeypatch)
  assert [c["layers"] for c in calls] == [layers] * len(PREDICTIONS)
  assert [c["weights"].shape[0] for c in calls] == [len(layers)] * len(PREDICTIONS)


def test_maps_are_the_attention_itself_scanned_or_unrolled():
  """A padded source position gets no weight, each query's weights sum to 1, and the layers'
  layout (scanned, or unrolled with the same parameters) does not change them."""
  run = tiny_run(scan_layers=True)
  unrolled = transformer.EncoderDecoder(dataclasses.replace(run.module.config, scan_layers=False))
  src = np.array([[4, 5, 6, 2, 0, 0], [7, 2, 0, 0, 0, 0]], np.int32)     # [B, S], PAD = 0
  tgt_in = np.array([[1, 4, 5], [1, 7, 8]], np.int32)                     # [B, T]
  maps = attention_maps.cross_attention_weights(run.module, {"params": run.params}, src, tgt_in)
  assert maps.layers == (0, 1, 2) and maps.keys == "source"
  assert maps.weights.shape == (3, 2, 2, 3, 6)                             # [L, B, H, T, S]
  np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
  assert np.all(maps.weights[:, 0, :, :, 4:] == 0) and np.all(maps.weights[:, 1, :, :, 2:] == 0)
  same = attention_maps.cross_attention_weights(
      unrolled, {"params": transformer.unstack_layers(run.params)}, src, tgt_in)
  assert same.layers == maps.layers
  np.testing.assert_allclose(same.weights, maps.weights, atol=1e-6)
