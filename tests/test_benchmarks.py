"""benchmarks/: the FLOP formula, the baseline decoder's agreement, the PyTorch peer, run.py end
to end. Each cross-attention variant's own FLOP count is checked in tests/test_variant_metadata.py.

Correctness only: no assertion here depends on a timing.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import baseline_decoder, flops
from encdec import decoding, model
from encdec.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = dict(src_vocab_size=12, tgt_vocab_size=10, d_model=8, num_heads=2, d_ff=16,
            num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)


def test_forward_flops_by_hand():
  # B=2, S=3, T=5; d=8, H=2 heads of D=4 (H*D=8), d_ff=16, V=10: 6 source, 10 target tokens.
  f = flops.forward_flops(TINY, batch=2, src_len=3, tgt_len=5)
  hand = {
      "encoder_qkv": 2 * 6 * 8 * 24,          # [6, 8] @ [8, 3*8]          = 2304
      "encoder_attention": 2 * 2 * 6 * 3 * 8,  # QK^T and AV: 6 queries x 3 keys x 8 = 576
      "encoder_out": 2 * 6 * 8 * 8,           #                              768
      "encoder_mlp": 2 * 2 * 6 * 8 * 16,      # wi and wo                   = 3072
      "decoder_self_qkv": 2 * 10 * 8 * 24,    #                              3840
      "decoder_self_attention": 2 * 2 * 10 * 5 * 8,  # causal, counted in full = 1600
      "decoder_self_out": 2 * 10 * 8 * 8,     #                              1280
      "cross_q": 2 * 10 * 8 * 8,              #                              1280
      "cross_kv": 2 * 6 * 8 * 16,             # encoder output -> K and V   = 1536
      "cross_attention": 2 * 2 * 10 * 3 * 8,  # 10 target queries x 3 source keys = 960
      "cross_out": 2 * 10 * 8 * 8,            #                              1280
      "decoder_mlp": 2 * 2 * 10 * 8 * 16,     #                              5120
      "logits": 2 * 10 * 8 * 10,              #                              1600
  }
  assert {k: v for k, v in f.items() if k != "total"} == hand
  assert f["total"] == 25216
  assert flops.train_flops(TINY, 2, 3, 5) == 3 * 25216


def test_flops_follow_depth_and_cross_attention_variant():
  base = flops.forward_flops(TINY, 2, 3, 5)
  deeper = flops.forward_flops({**TINY, "num_encoder_layers": 3, "num_decoder_layers": 2}, 2, 3, 5)
  assert deeper["encoder_mlp"] == 3 * base["encoder_mlp"]
  assert deeper["cross_kv"] == 2 * base["cross_kv"] and deeper["logits"] == base["logits"]
  mqa = flops.forward_flops({**TINY, "cross_attention": "mqa"}, 2, 3, 5)
  assert mqa["cross_kv"] == base["cross_kv"] / 2          # 1 K/V head instead of 2
  assert mqa["total"] - mqa["cross_kv"] == base["total"] - base["cross_kv"]
  none = flops.forward_flops({**TINY, "cross_attention": "none"}, 2, 3, 5)
  assert not [k for k in none if k.startswith("cross")]
  assert none["total"] == base["total"] - sum(v for k, v in base.items() if k.startswith("cross"))
  first = flops.forward_flops({**TINY, "num_decoder_layers": 3, "cross_attention_layers": "first"},
                              2, 3, 5)
  assert first["cross_q"] == base["cross_q"] and first["decoder_mlp"] == 3 * base["decoder_mlp"]
  with pytest.raises(ConfigError, match="cross_attention 'nope'"):
    flops.forward_flops({**TINY, "cross_attention": "nope"}, 2, 3, 5)


@pytest.mark.parametrize("overrides", [{}, {"tie_output": False, "cross_attention": "gqa"}])
def test_flops_match_the_models_weights(overrides):
  """Projection FLOPs = 2 x kernel weights x the tokens each kernel sees, from the real model."""
  cfg = {**TINY, "d_model": 16, "num_heads": 4, "num_encoder_layers": 2,
         "num_decoder_layers": 3, **overrides}
  batch, src_len, tgt_len = 2, 3, 5
  m = model.build(cfg)
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.ones((batch, src_len), jnp.int32),
                          jnp.ones((batch, tgt_len), jnp.int32))["params"]
  expected = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    size = int(np.prod(getattr(leaf, "value", leaf).shape))
    if names[-1] == "kernel":
      sees_source = names[0] == "encoder" or ("cross_attention" in names and "kv" in names)
      expected += 2 * size * batch * (src_len if sees_source else tgt_len)
    elif names[-1] == "embedding" and names[0] == "tgt_embed" and cfg.get("tie_output", True):
      expected += 2 * size * batch * tgt_len                 # tied output projection
  f = flops.forward_flops(cfg, batch, src_len, tgt_len)
  scores = f["encoder_attention"] + f["decoder_self_attention"] + f["cross_attention"]
  assert f["total"] - scores == expected


@pytest.fixture(scope="module")
def tiny_model():
  m = model.build({**TINY, "src_vocab_size": 40, "tgt_vocab_size": 40, "d_model": 32,
                   "num_heads": 4, "d_ff": 64, "num_encoder_layers": 2, "num_decoder_layers": 2,
                   "share_embeddings": True})
  src = jax.random.randint(jax.random.key(1), (3, 7), 4, 40)
  return m, m.init(jax.random.key(0), src, src), src


@pytest.mark.slow   # 17 s: PyTorch's transformer against ours, both compiled
def test_baseline_reads_the_same_parameters(tiny_model):
  m, v, src = tiny_model
  np.testing.assert_allclose(baseline_decoder.baseline_for(m).apply(v, src, src),
                             m.apply(v, src, src), atol=1e-5)
  unrolled = model.build({**TINY, "num_decoder_layers": 2, "scan_layers": False, "norm": "post",
                          "tie_output": False, "position_encoding": "learned"})
  uv = unrolled.init(jax.random.key(2), src % 12, src % 10)
  np.testing.assert_allclose(baseline_decoder.baseline_for(unrolled).apply(uv, src % 12, src % 10),
                             unrolled.apply(uv, src % 12, src % 10), atol=1e-5)


@pytest.mark.slow   # compiles four searches twice (~9 s); the quick suite keeps its budget
@pytest.mark.parametrize("hoistable", [False, True])
def test_baseline_decodes_the_same_tokens(tiny_model, hoistable):
  m, v, src = tiny_model
  b = baseline_decoder.baseline_for(m, hoistable=hoistable)
  np.testing.assert_array_equal(decoding.greedy(b, v, src, max_len=12, eos_id=-1),
                                decoding.greedy(m, v, src, max_len=12, eos_id=-1))
  np.testing.assert_array_equal(decoding.beam_search(b, v, src, 4, 12, eos_id=-1),
                                decoding.beam_search(m, v, src, 4, 12, eos_id=-1))
  np.testing.assert_array_equal(decoding.beam_search(b, v, src, 3, 12),
                                decoding.beam_search(m, v, src, 3, 12))


def test_baseline_is_only_defined_for_multi_head_cross_attention():
  m = model.build({**TINY, "cross_attention": "mqa"})
  src = jnp.ones((1, 3), jnp.int32)
  with pytest.raises(ValueError, match="model.cross_attention='mqa'"):
    baseline_decoder.baseline_for(m).init(jax.random.key(0), src, src)


@pytest.mark.slow
def test_run_quick_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as users run it
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
                        capture_output=True, text=True, env=env, timeout=600, check=False,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(out.read_text())
  for key in ("train_tgt_tokens_per_s", "train_step_s", "train_compile_s", "mfu",
              "matmul_peak_flops", "train_flops_per_step", "peak_rss_mb",
              "decode_greedy_tokens_per_s", "decode_beam4_tokens_per_s",
              "baseline_decode_beam4_tokens_per_s", "decode_beam4_speedup_vs_baseline",
              "decode_beam4_speedup_vs_hoistable_baseline",
              "compile_s_ratio", "device_kind", "platform", "jax_version", "date", "cpu_count"):
    assert key in r, key
    assert r[key] is not None, key
  shallow, deep = r["compile_layers"]
  assert f"compile_s_{shallow}_layers" in r and f"compile_s_{deep}_layers" in r
  assert r["baseline_beam4_token_agreement"] == 1.0
  assert r["baseline_greedy_token_agreement"] == 1.0
  assert r["compile_s_cache_cold"] > 0 and r["compile_s_cache_warm"] > 0
  # Real G2P batches: packing fills the rows that padding leaves mostly empty.
  assert r["packed_real_tgt_tokens_per_s"] > 0 and r["padded_real_tgt_tokens_per_s"] > 0
  assert r["packed_tgt_padding_fraction"] < 0.5 < r["padded_tgt_padding_fraction"]
  assert r["packed_src_padding_fraction"] < r["padded_src_padding_fraction"]
  assert "| metric | value | notes |" in proc.stdout


def test_run_as_a_script_names_the_module_command():
  proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"],
                        capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
  assert proc.returncode == 1
  assert proc.stderr.strip().endswith("&& python -m benchmarks.run --quick")


def test_the_torch_peer_is_a_module_of_the_repository():
  """A clone stands alone: run.py starts its peer from benchmarks/peers/, nothing outside."""
  from benchmarks import run  # pylint: disable=import-outside-toplevel
  python, flag, module = run.PEER_TORCH
  assert (python, flag) == (sys.executable, "-m")
  origin = pathlib.Path(importlib.util.find_spec(module).origin)
  assert origin.is_relative_to(REPO / "benchmarks" / "peers") and origin.is_file()


def test_torch_peer_runs_in_a_subprocess_and_keeps_its_best(tmp_path, monkeypatch):
  """The peer path without torch: a stand-in script, faster under OMP_WAIT_POLICY=PASSIVE."""
  from benchmarks import run  # pylint: disable=import-outside-toplevel
  peer = tmp_path / "torch_train.py"
  peer.write_text("import json, os, sys\nprint('warming up')\n"
                  "fast = os.environ.get('OMP_WAIT_POLICY') == 'PASSIVE'\n"
                  "print(json.dumps({'tgt_tokens_per_s': 200.0 if fast else 100.0, 'step_s': 1.0,"
                  " 'argv': sys.argv[1:]}))\n")
  monkeypatch.setattr(run, "PEER_TORCH", (sys.executable, str(peer)))
  monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: object() if name == "torch" else real_find_spec(name, *a))
  args = run.parse_args(["--quick"])
  r = run.run_torch_peer(args, run.load_config(args))
  assert r["peer_torch_status"] == "ok" and r["peer_torch_env"] == "omp_passive"
  assert r["peer_torch_tgt_tokens_per_s"] == 200.0
  argv = r["peer_torch_runs"]["default"]["argv"]
  assert argv[argv.index("--layers") + 1] == "2" and argv[argv.index("--d") + 1] == "64"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is an optional dependency: pip install -e '.[peers]'")
def test_torch_peer_trains_on_a_tiny_config(monkeypatch):
  """benchmarks/peers/torch_transformer.py, as run.py starts it: a step time and a finite loss."""
  from benchmarks import run  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")       # one run of the peer, not two
  args = run.parse_args(["--quick", "--steps", "1", "--warmup", "1"])
  cfg = run.load_config(args, layers=1, **{"model.d_model": 16, "model.num_heads": 2,
                                           "model.d_ff": 32, "model.src_vocab_size": 40,
                                           "model.tgt_vocab_size": 40, "train.batch_size": 2})
  r = run.run_torch_peer(args, cfg)
  assert r["peer_torch_status"] == "ok", r
  assert r["peer_torch_step_s"] > 0 and r["peer_torch_tgt_tokens_per_s"] > 0
  assert math.isfinite(r["peer_torch_final_loss"])
  (result,) = r["peer_torch_runs"].values()
  assert result["peer"] == "torch-nn.Transformer" and result["steps"] == 1


def test_architecture_benchmark_lists_every_scheme_and_preset_after_its_reference():
  from benchmarks import architectures  # pylint: disable=import-outside-toplevel
  from encdec.model import presets, schema  # pylint: disable=import-outside-toplevel
  names = list(architectures.architectures())
  assert names[0] == architectures.REFERENCE
  assert len(names) == 1 + len(schema.POSITION_ENCODINGS) + len(presets.PRESETS)
  speeds = {"train_tgt_tokens_per_s": 100.0, "decode_greedy_tokens_per_s": 50.0,
            "decode_beam4_tokens_per_s": 20.0}
  ratios = architectures.with_ratios({architectures.REFERENCE: speeds,
                                      "x": {k: v / 2 for k, v in speeds.items()}})
  assert ratios[architectures.REFERENCE]["decode_beam4_tokens_per_s_ratio"] == 1.0
  assert ratios["x"]["train_tgt_tokens_per_s_ratio"] == 0.5


@pytest.mark.slow
def test_architecture_benchmark_measures_the_architecture_it_names(tmp_path):
  from benchmarks import architectures  # pylint: disable=import-outside-toplevel
  out = tmp_path / "arch.json"
  r = architectures.main(["--quick", "--steps", "1", "--warmup", "1", "--decode_len", "4",
                          "--json", str(out), "--only", "preset=modern,position_encoding=alibi"])
  assert list(json.loads(out.read_text())["architectures"]) == [
      architectures.REFERENCE, "position_encoding=alibi", "preset=modern"]
  modern = r["architectures"]["preset=modern"]
  assert modern["resolved"]["position_encoding"] == "rope" and modern["resolved"]["mlp"] == "swiglu"
  assert r["architectures"]["position_encoding=alibi"]["resolved"]["position_encoding"] == "alibi"
  for speeds in r["architectures"].values():
    assert speeds["train_tgt_tokens_per_s"] > 0 and speeds["decode_beam4_tokens_per_s"] > 0
    assert 0 < speeds["mfu"] < 1


@pytest.mark.slow
def test_batched_benchmark_times_every_size_against_the_lone_step():
  from benchmarks import batched  # pylint: disable=import-outside-toplevel
  r = batched.main(["--quick", "--sizes", "1,3", "--steps", "1", "--warmup", "1"])
  assert [x["runs"] for x in r["results"]] == [1, 3]
  for x in r["results"]:
    assert x["step_s"] > 0 and x["runs_per_hour_ratio"] == pytest.approx(
        x["runs"] * x["lone_step_s"] / x["step_s"])
    assert x["decode_s"] > 0 and x["decode_ratio"] == pytest.approx(
        x["runs"] * x["lone_decode_s"] / x["decode_s"])


# --------------------------------------------------------------- interleaved runs (issue 21)
HLO = """\
HloModule jit_step

%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_slice (p0: f32[8,4]) -> f32[4,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  ROOT %slice.2 = f32[4,4]{1,0} slice(%p0), slice={[0:4], [0:4]}
}

%fused_softmax (p0: f32[4,4]) -> f32[4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %exp.3 = f32[4,4]{1,0} exponential(%p0)
  ROOT %reduce.4 = f32[4]{0} reduce(%exp.3, %c), dimensions={1}, to_apply=%add
}

ENTRY %main (a: f32[8,4]) -> (f32[4,4], f32[4]) {
  %a = f32[8,4]{1,0} parameter(0)
  %slice_fusion = f32[4,4]{1,0} fusion(%a), kind=kLoop, calls=%fused_slice
  %output_fusion = f32[4,4]{1,0} fusion(%slice_fusion, %slice_fusion), kind=kOutput, calls=%fused_dot
  %loop_fusion.7 = f32[4]{0} fusion(%output_fusion), kind=kLoop, calls=%fused_softmax
  %tanh.9 = f32[4]{0} tanh(%loop_fusion.7)
  ROOT %tuple.5 = (f32[4,4]{1,0}, f32[4]{0}) tuple(%output_fusion, %tanh.9)
}
"""


def test_xla_ops_are_classed_by_what_their_fusion_computes():
  """A fusion holding a dot is a GEMM whatever its name; a slice-only fusion moves data."""
  from benchmarks import interleaved  # pylint: disable=import-outside-toplevel
  classes = interleaved.hlo_op_classes(HLO)
  assert classes["output_fusion"] == "matmul"
  assert classes["slice_fusion"] == "data movement"
  assert classes["loop_fusion.7"] == "reduce/softmax"
  assert classes["tanh.9"] == "elementwise"
  assert interleaved.classify_xla_ops("dot.3", set()) == "matmul"   # a name alone: by the name
  assert interleaved.classify_torch_op("aten::addmm") == "matmul"
  assert interleaved.classify_torch_op("aten::native_layer_norm") == "reduce/softmax"
  assert interleaved.classify_torch_op("aten::bernoulli_") == "rng/dropout"
  assert interleaved.classify_torch_op("aten::gelu") == "elementwise"


def test_non_gemm_time_is_grouped_by_the_operation_it_comes_from():
  from benchmarks import interleaved  # pylint: disable=import-outside-toplevel
  enc = "jvp(EncoderDecoder)/EncoderDecoder.encode/encoder/layer_0/"
  sources = {"f1": enc + "mlp_residual/mlp/Dropout_0/jit(_where)/select_n",
             "f2": enc + "attention_residual/self_attention/qkv/squeeze",
             "f3": enc + "attention_residual/norm/mul",
             "f4": "add",                                             # optax's update: bare
             "f5": enc + "attention_residual/self_attention/reduce_max",
             "f6": enc + "attention_residual/self_attention/jit(_where)/select_n",
             "f7": "state.params['decoder']['layer_1']['cross_attention']['kv']['kernel']",
             "dot": enc + "mlp_residual/mlp/wi/dot_general", "f8": "something_new"}
  expected = {"f1": "dropout and ReLU masks (forward and backward)",
              "f2": "attention layouts (QKV slices, head transposes)", "f3": "norms",
              "f4": "optimizer (AdamW, clipping)", "f5": "attention softmax",
              "f6": "attention masks", "f7": "parameter layout copies", "f8": "other"}
  for op, name in expected.items():
    assert interleaved.origin(sources[op]) == name, op
  per_op = {"f1": 2.0, "f2": 1.0, "f4": 0.5, "f8": 0.25, "dot": 6.25}
  classes = {op: "elementwise" for op in per_op} | {"dot": "matmul"}
  out = interleaved.non_gemm_by_origin(per_op, classes, sources)
  assert list(out) == [expected["f1"], expected["f2"], expected["f4"], "other"]  # largest first
  assert out[expected["f1"]] == [2.0, 0.2]        # seconds, share of all op time (GEMMs too)


def test_mfu_is_against_each_peak():
  from benchmarks import interleaved  # pylint: disable=import-outside-toplevel
  r = {"gemm_gflops": {"a": {"xla": [100.0, 120.0], "torch": [150.0, 90.0]}},
       "nominal_peak_flops": 300e9, "train_flops_per_step": 60e9,
       "encdec_step_s_median": 1.0, "torch_step_s_median": 2.0}
  out = interleaved.mfu_table(r)
  assert out["peak_flops"]["best_gemm"] == 150e9 and out["peak_flops"]["xla_gemm"] == 120e9
  assert out["encdec_mfu_vs_best_gemm"] == pytest.approx(0.4)
  assert out["encdec_mfu_vs_nominal"] == pytest.approx(0.2)
  assert out["torch_mfu_vs_xla_gemm"] == pytest.approx(0.25)


@pytest.mark.parametrize("info, lanes", [
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "flags": "avx512f fma"}, 16),
    ({"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "1", "flags": "avx2 fma"}, 8),
    ({"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "49", "flags": "avx2 fma"}, 16),
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2", "flags": "avx512f"}, 32),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "avx2 fma avx512f"}, 32),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "avx avx2 fma"}, 16),
])
def test_nominal_fma_lanes_follow_the_microarchitecture(info, lanes):
  from encdec import machine  # pylint: disable=import-outside-toplevel
  assert machine.fma_lanes_per_cycle(info)[0] == lanes


def test_nominal_peak_counts_physical_cores(monkeypatch):
  """2 logical CPUs that are one core's two hyperthreads have one core's peak."""
  from encdec import machine  # pylint: disable=import-outside-toplevel
  info = {"vendor_id": "GenuineIntel", "flags": "avx2 fma avx512f", "cpu MHz": "2000.0",
          "siblings": "2", "cpu cores": "1"}
  monkeypatch.setattr(machine, "cpu_info", lambda: info)
  monkeypatch.setattr(machine.os, "sched_getaffinity", lambda _: {0, 1})
  peak = machine.nominal_peak()
  assert peak["nominal_peak_flops"] == pytest.approx(1 * 32 * 2 * 2.0e9)
  assert "1 physical cores (2 logical" in peak["nominal_peak_derivation"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="the torch peer needs torch (pip install -e '.[peers]')")
def test_interleaved_quick_writes_every_section(tmp_path):
  out = tmp_path / "il.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.interleaved", "--quick", "--rounds",
                         "2", "--steps", "1", "--warmup", "1", "--gemm_repeats", "1",
                         "--profile_steps", "1", "--json", str(out)],
                        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  r = json.loads(out.read_text())
  assert len(r["speed_ratio_rounds"]) == 2 and r["speed_ratio_median"] > 0
  assert set(r["gemm_gflops"]) >= {"qkv", "mlp_in", "mlp_out", "logits", "square_1024"}
  for system in ("encdec", "torch"):
    by_class = r[f"profile_{system}"]["seconds_per_step_by_class"]
    assert by_class["matmul"] > 0, by_class
    assert 0 < r[f"{system}_mfu_vs_best_gemm"] < 1.5
  origins = r["profile_encdec"]["non_gemm_by_origin"]
  assert "dropout and ReLU masks (forward and backward)" in origins, origins
  assert "| encdec |" in proc.stdout


# ----------------------------------------------------------------- the Flax WMT peer (issue 21)
def test_flax_wmt_peer_names_what_is_missing(tmp_path):
  from benchmarks.peers import flax_wmt  # pylint: disable=import-outside-toplevel
  (tmp_path / "models.py").write_text("")
  with pytest.raises(FileNotFoundError, match="no decode.py"):
    flax_wmt.load(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FLAX_WMT_DIR"),
                    reason="set FLAX_WMT_DIR to a google/flax checkout's examples/wmt")
def test_flax_wmt_beam_search_runs_every_step():
  """The example's search, driven as its predict_step drives it: [batch, beam, steps + 1]
  tokens, BOS (0) first, distinct hypotheses per source."""
  from benchmarks.peers import flax_wmt  # pylint: disable=import-outside-toplevel
  models, decode = flax_wmt.load(os.environ["FLAX_WMT_DIR"])
  src = jnp.asarray(np.random.default_rng(0).integers(4, 64, (2, 8)), jnp.int32)
  search = flax_wmt.beam_search(models, decode, vocab=64, d_model=32, num_heads=2,
                                num_layers=1, d_ff=64, src=src, steps=6)
  tokens = np.asarray(search(src))
  assert tokens.shape == (2, 4, 7)
  assert (tokens[..., 0] == 0).all() and tokens[..., 1:].any()
  assert all(len({tuple(hyp) for hyp in beams}) == 4 for beams in tokens)


def test_variant_benchmark_lists_every_registered_variant_after_mha():
  from benchmarks import variants  # pylint: disable=import-outside-toplevel
  from encdec import model  # pylint: disable=import-outside-toplevel
  names = variants.variants()
  assert names[0] == "mha" and sorted(names) == sorted(model.CROSS_ATTENTION)


def test_variant_benchmark_times_the_variants_in_alternating_rounds():
  from benchmarks import variants  # pylint: disable=import-outside-toplevel
  calls_made = []
  calls = {v: {s: (lambda v=v, s=s: calls_made.append((v, s)) or np.zeros(1))
               for s in ("decode_greedy", "decode_beam4")} for v in ("mha", "mqa", "gqa")}
  seconds = variants.decode_rounds(calls, rounds=3)
  forward = [(v, s) for v in ("mha", "mqa", "gqa") for s in ("decode_greedy", "decode_beam4")]
  backward = [(v, s) for v in ("gqa", "mqa", "mha") for s in ("decode_greedy", "decode_beam4")]
  assert calls_made == forward + backward + forward
  assert all(len(t) == 3 for searches in seconds.values() for t in searches.values())
  class Args:  # pylint: disable=too-few-public-methods
    decode_batch, decode_len = 2, 5
  speeds = variants.decode_speeds(Args, {"decode_greedy": [1.0, 0.1, 2.0]})
  assert speeds["decode_greedy_tokens_per_s"] == pytest.approx(10.0)   # the median round


def test_variant_benchmark_compares_placements_of_multi_head_cross_attention():
  from benchmarks import variants  # pylint: disable=import-outside-toplevel
  field, models = variants.compared("all,first,every:2")
  assert field == "model.cross_attention_layers" and list(models) == ["all", "first", "every:2"]
  assert models["every:2"] == {"model.cross_attention": "mha",
                               "model.cross_attention_layers": "every:2"}
  field, models = variants.compared("")
  assert field == "model.cross_attention" and list(models) == variants.variants()
  ratios = variants.with_ratios({"all": {k: 4.0 for k in variants.RATIO_KEYS},
                                 "first": {k: 1.0 for k in variants.RATIO_KEYS}})
  assert ratios["first"]["cache_bytes_per_source_token_ratio"] == 0.25   # against the first


def test_benchmarks_take_vocabulary_sizes_from_the_configs_task():
  """The study configs leave the vocabulary sizes to the task (0); a model built from them as
  they are could not embed a single token."""
  from benchmarks import run  # pylint: disable=import-outside-toplevel
  from encdec.data import tasks  # pylint: disable=import-outside-toplevel
  cfg = run.load_config(run.parse_args(["--config", "cross_attention_study_v2:task=reverse"]))
  task = tasks.build(cfg.task)
  assert cfg.model.src_vocab_size == task.src_tokenizer.vocab_size > 0
  assert cfg.model.tgt_vocab_size == task.tgt_tokenizer.vocab_size > 0
  quick = run.load_config(run.parse_args(["--quick"]))
  assert quick.model.src_vocab_size == run.QUICK_MODEL["model.src_vocab_size"]


@pytest.mark.slow
def test_variant_benchmark_quick_writes_ratios(tmp_path):
  out = tmp_path / "variants.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.variants", "--quick", "--src_len", "16",
                         "--only", "gqa", "--json", str(out)], cwd=REPO, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())["variants"]
  assert sorted(results) == ["gqa", "mha"]
  assert results["mha"]["decode_beam4_tokens_per_s_ratio"] == 1.0
  # GQA with half the K/V heads caches half the bytes per source token.
  assert results["gqa"]["cache_bytes_per_source_token_ratio"] == pytest.approx(0.5)


@pytest.mark.slow
def test_variant_benchmark_quick_compares_placements(tmp_path):
  out = tmp_path / "placements.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.variants", "--quick", "--src_len", "16",
                         "--placements", "all,first", "--set", "model.num_decoder_layers=4",
                         "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["compared"] == "model.cross_attention_layers"
  assert result["overrides"] == {"model.num_decoder_layers": 4}
  # Cross-attention in 1 of 4 decoder layers caches a quarter of the bytes.
  assert result["variants"]["first"]["cache_bytes_per_source_token_ratio"] == pytest.approx(0.25)


def test_layer_stack_benchmark_weighs_each_shape_by_its_share_of_the_data():
  from benchmarks import layer_stack  # pylint: disable=import-outside-toplevel
  batch = lambda s, t: {"src": np.zeros((4, s)), "tgt_in": np.zeros((4, t))}
  shares = layer_stack.shape_shares([batch(8, 8), batch(16, 8), batch(8, 8), batch(8, 8)])
  assert shares == {(8, 8): 0.75, (16, 8): 0.25} and list(shares)[0] == (8, 8)
  assert layer_stack.parse_shapes("8x8,16x24") == {(8, 8): 0.5, (16, 24): 0.5}
  for bad in ("8", "8x", "0x8", "8x8x8", ""):
    with pytest.raises(ConfigError, match="--shapes"):
      layer_stack.parse_shapes(bad)
  results = [{"scanned": {"step_s": 0.04, "compile_s": 1.0},
              "unrolled": {"step_s": 0.04, "compile_s": 2.0}},
             {"scanned": {"step_s": 0.12, "compile_s": 1.0},
              "unrolled": {"step_s": 0.06, "compile_s": 2.0}}]
  overall = layer_stack.weighted(results, [0.75, 0.25])
  assert overall["scanned_step_s"] == pytest.approx(0.06)    # 0.75 * 0.04 + 0.25 * 0.12
  assert overall["unrolled_step_s"] == pytest.approx(0.045)
  assert overall["unrolled_speedup"] == pytest.approx(0.06 / 0.045)
  assert overall["unrolled_compile_s"] == 4.0


def test_layer_stack_benchmark_alternates_which_stack_leads_a_round():
  from benchmarks import layer_stack  # pylint: disable=import-outside-toplevel
  order = []
  class Fake:  # pylint: disable=too-few-public-methods
    def __init__(self, name, seconds):
      self.name, self.seconds = name, seconds
    def median_step_s(self, steps):
      order.append((self.name, steps))
      return self.seconds
  seconds = layer_stack.timed_rounds({"scanned": Fake("s", 2.0), "unrolled": Fake("u", 1.0)},
                                     rounds=3, steps=7)
  assert order == [("s", 7), ("u", 7), ("u", 7), ("s", 7), ("s", 7), ("u", 7)]
  assert seconds == {"scanned": [2.0] * 3, "unrolled": [1.0] * 3}


def test_layer_stack_benchmark_counts_the_shapes_of_bucketed_training_batches():
  """A bucketed config's shapes come from its own training batches; an unbucketed one has its
  config's one shape without reading data."""
  from benchmarks import layer_stack, run  # pylint: disable=import-outside-toplevel
  cfg = run.load_config(run.parse_args(["--config", "algorithmic:task=reverse"]),
                        **{"train.bucket_width": 4})
  shares = layer_stack.data_shapes(cfg, 40, seed=0)
  assert sum(shares.values()) == pytest.approx(1.0) and len(shares) > 1
  assert all(s % 4 == 0 or s == cfg.task.max_src_len + 1 for s, _ in shares)
  cfg.train.bucket_width = 0
  assert layer_stack.data_shapes(cfg, 40, seed=0) == {
      (cfg.task.max_src_len + 1, cfg.task.max_tgt_len + 1): 1.0}


@pytest.mark.slow
def test_layer_stack_benchmark_quick_times_both_stacks(tmp_path):
  out = tmp_path / "layer_stack.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.layer_stack", "--quick", "--shapes",
                         "8x8,16x8", "--rounds", "2", "--steps", "2", "--json", str(out)],
                        cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert [(s["src_len"], s["tgt_len"], s["share"]) for s in result["shapes"]] == [
      (8, 8, 0.5), (16, 8, 0.5)]
  for shape in result["shapes"]:
    assert len(shape["scanned"]["step_s_rounds"]) == len(shape["unrolled"]["step_s_rounds"]) == 2
    assert shape["unrolled_speedup"] == pytest.approx(
        shape["scanned"]["step_s"] / shape["unrolled"]["step_s"])
