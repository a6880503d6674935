"""What each cross-attention variant says it costs (class methods in
encdec/model/cross_attention.py) against the model it builds, for every registered variant:

- analytic forward FLOPs (benchmarks/flops.py, the variant's `flops`) = the FLOPs of every
  matmul in the traced forward pass (a jaxpr count, itself checked against XLA's cost analysis);
- decode-time K/V cache bytes (`cache_bytes`) = the cache decoding allocates for the variant,
  less the self-attention cache (that of the same model without cross-attention);
- a throwaway variant, registered by the test alone, gets both, and the report's accounting,
  right with no other edit; no code outside cross_attention.py compares a variant's name.
"""
import ast
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from benchmarks import flops
from compiled import structural_quick
from encdec import config, decoding, model
from encdec.model import cross_attention

# head_dim 5 (H*D = 20 != d_model = 24), S != T != M, encoder and decoder depths differ: a
# formula that mixes them up does not match.
CFG = dict(src_vocab_size=23, tgt_vocab_size=29, d_model=24, num_heads=4, head_dim=5, d_ff=40,
           num_encoder_layers=2, num_decoder_layers=3, dropout_rate=0.0, tie_output=False,
           cross_kv_heads=2, cross_latents=3, cross_window=2)
BATCH, SRC_LEN, TGT_LEN = 2, 7, 5
VARIANTS = sorted(model.CROSS_ATTENTION)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def dot_flops(jaxpr) -> int:
  """2 × the multiply-adds of every dot_general in a jaxpr, sub-jaxprs included (a scan's body
  `length` times)."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    assert name not in ("while", "cond"), f"cannot count a {name} (its trip count is unknown)"
    if name == "dot_general":
      (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      rhs_free = [n for i, n in enumerate(rhs) if i not in (*rhs_contract, *rhs_batch)]
      total += 2 * math.prod(lhs) * math.prod(rhs_free)
    repeat = eqn.params["length"] if name == "scan" else 1
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)                    # ClosedJaxpr --> Jaxpr
        if hasattr(sub, "eqns"):
          total += repeat * dot_flops(sub)
  return total


def traced_forward_flops(m, batch: int, src_len: int, tgt_len: int) -> int:
  """Matmul FLOPs of m's teacher-forced forward pass (traced on shapes, nothing computed)."""
  src = jax.ShapeDtypeStruct((batch, src_len), jnp.int32)
  tgt = jax.ShapeDtypeStruct((batch, tgt_len), jnp.int32)
  params = jax.eval_shape(lambda s, t: nn.unbox(m.init(jax.random.key(0), s, t)["params"]),
                          src, tgt)
  return dot_flops(jax.make_jaxpr(lambda p, s, t: m.apply({"params": p}, s, t))(
      params, src, tgt).jaxpr)


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def measured_cache_bytes(cfg: dict, src_len: int, beams: int = 2) -> int:
  """Bytes of decoding.init_cache for one source (all `beams` rows)."""
  m = model.build(cfg)
  src = jax.ShapeDtypeStruct((1, src_len), jnp.int32)
  params = jax.eval_shape(lambda s: nn.unbox(m.init(jax.random.key(0), s, s)["params"]), src)
  return tree_bytes(jax.eval_shape(
      lambda p, s: decoding.init_cache(m, {"params": p}, s, max_len=4, beams=beams), params, src))


def variant_cache_bytes_measured(cfg: dict, src_len: int) -> int:
  """The variant's share of the decode cache: the model's, less the same model's without
  cross-attention (whose cache is the self-attention one alone)."""
  return (measured_cache_bytes(cfg, src_len)
          - measured_cache_bytes({**cfg, "cross_attention": "none"}, src_len))


def test_the_jaxpr_count_is_what_xla_counts_for_matmuls():
  def f(a, b, c):
    return jnp.einsum("bij,bjk->bik", a, b) @ c                  # batched, then plain
  args = (jnp.ones((3, 8, 16)), jnp.ones((3, 16, 32)), jnp.ones((32, 24)))
  cost = jax.jit(f).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert dot_flops(jax.make_jaxpr(f)(*args).jaxpr) == cost["flops"] == 2 * 3 * 8 * 32 * (16 + 24)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("placement", ["all", "first"])
def test_analytic_flops_are_the_models_matmul_flops(variant, placement):
  cfg = {**CFG, "cross_attention": variant, "cross_attention_layers": placement}
  analytic = flops.forward_flops(cfg, BATCH, SRC_LEN, TGT_LEN)["total"]
  assert analytic == traced_forward_flops(model.build(cfg), BATCH, SRC_LEN, TGT_LEN)


@pytest.mark.parametrize("overrides", [{"scan_layers": False, "tie_output": True},
                                       {"cross_attention": "latent", "scan_layers": False},
                                       {"preset": "modern", "head_dim": 6},
                                       {"preset": "t5_v1_1"}])
def test_analytic_flops_hold_for_other_layer_builds_and_blocks(overrides):
  cfg = {**CFG, **overrides}
  analytic = flops.forward_flops(cfg, BATCH, SRC_LEN, TGT_LEN)["total"]
  assert analytic == traced_forward_flops(model.build(cfg), BATCH, SRC_LEN, TGT_LEN)


@pytest.mark.parametrize("variant", structural_quick())
def test_cache_bytes_are_the_cache_decoding_allocates(variant):
  cfg = {**CFG, "cross_attention": variant}
  variant_cls, schema_cfg = model.CROSS_ATTENTION[variant], flops.model_config(cfg)
  for src_len in (SRC_LEN, 12):                      # the latents' cache does not grow
    assert variant_cls.cache_bytes(schema_cfg, src_len) == variant_cache_bytes_measured(
        cfg, src_len), src_len


@pytest.mark.parametrize("overrides", [
    {"dtype": "bfloat16"},
    {"cross_attention": "shared_kv", "scan_layers": False, "cross_attention_layers": "every:2"},
    {"cross_attention": "mqa", "cross_attention_layers": "last"}])
def test_cache_bytes_follow_dtype_and_placement(overrides):
  cfg = {**CFG, **overrides}
  schema_cfg = flops.model_config(cfg)
  assert (schema_cfg.variant.cache_bytes(schema_cfg, SRC_LEN)
          == variant_cache_bytes_measured(cfg, SRC_LEN))


# --- a variant registered by this test only -----------------------------------------------------

class ProjectedSourceCrossAttention(cross_attention.MultiHeadCrossAttention):
  """Throwaway: one K/V head over a learned d × d projection of the source."""

  def project_kv(self, memory, mask):
    source = nn.Dense(self.config.d_model, use_bias=False, name="source")(memory)
    return super().project_kv(source, mask)

  @classmethod
  def kv_heads(cls, config):
    return 1

  @classmethod
  def flops(cls, config, batch, src_len, tgt_len):
    source = 2 * batch * src_len * config.d_model * config.d_model
    return {**super().flops(config, batch, src_len, tgt_len),
            "cross_source": cls.kv_projections(config) * source}


@pytest.fixture(name="throwaway")
def fixture_throwaway():
  """The variant registered as "throwaway" for one test: the one line a new variant adds."""
  model.CROSS_ATTENTION["throwaway"] = ProjectedSourceCrossAttention
  yield "throwaway"
  del model.CROSS_ATTENTION["throwaway"]


def test_a_new_variant_needs_no_edit_for_flops_and_cache_accounting(throwaway):
  cfg = {**CFG, "cross_attention": throwaway}
  forward = flops.forward_flops(cfg, BATCH, SRC_LEN, TGT_LEN)
  assert forward["cross_source"] > 0
  assert forward["total"] == traced_forward_flops(model.build(cfg), BATCH, SRC_LEN, TGT_LEN)
  assert (ProjectedSourceCrossAttention.cache_bytes(flops.model_config(cfg), SRC_LEN)
          == variant_cache_bytes_measured(cfg, SRC_LEN)
          == 3 * 2 * 1 * SRC_LEN * 5 * 4)       # layers x K+V x heads x S x head_dim x f32


def test_a_new_variant_needs_no_edit_for_the_reports_accounting(throwaway):
  from encdec.report import accounting  # pylint: disable=import-outside-toplevel
  small = {"model.d_model": 16, "model.d_ff": 32, "model.num_heads": 4,
           "model.num_encoder_layers": 1, "model.num_decoder_layers": 2, "task.max_len": 6}
  new = config.load("algorithmic:task=copy", {**small, "model.cross_attention": throwaway})
  mha = config.load("algorithmic:task=copy", small)
  # layers x K+V x heads x head_dim x f32: 1 K/V head instead of 4
  assert accounting.cache_bytes_per_source_token(new) == 2 * 2 * 1 * 4 * 4
  assert accounting.cache_bytes_per_source_token(mha) == 2 * 2 * 4 * 4 * 4
  total, cross = accounting.param_counts(new)
  mha_total, mha_cross = accounting.param_counts(mha)
  # + the 16 x 16 source projection, - 3 of the 4 heads' K/V kernels, in each of 2 layers
  assert cross - mha_cross == total - mha_total == 2 * (16 * 16 - 16 * 2 * 3 * 4)


# --- no name switches ---------------------------------------------------------------------------

def name_switches(path: pathlib.Path, names: set[str]) -> list[str]:
  """Comparisons of something named like a variant (`cross_attention`, `variant`) with a
  registered variant's name: `if cfg.cross_attention == "mqa"`, `variant in ("mha", ...)`."""
  tree = ast.parse(path.read_text())
  label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Compare):
      continue
    sides = [node.left, *node.comparators]
    literals = {n.value for side in sides for n in ast.walk(side)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    subject = " ".join(ast.unparse(side) for side in sides)
    if literals & names and ("cross_attention" in subject or "variant" in subject):
      found.append(f"{label}:{node.lineno}: {ast.unparse(node)}")
  return found


def test_no_code_outside_cross_attention_switches_on_a_variant_name():
  allowed = ROOT / "encdec" / "model" / "cross_attention.py"
  files = [p for folder in ("encdec", "benchmarks", "experiments")
           for p in sorted((ROOT / folder).rglob("*.py")) if p != allowed]
  assert len(files) > 20
  switches = [s for p in files for s in name_switches(p, set(VARIANTS))]
  assert not switches, "\n".join(switches)


def test_the_name_switch_check_finds_them(tmp_path):
  path = tmp_path / "probe.py"
  path.write_text("def heads(cfg, variant):\n"
                  "  if variant in ('mha', 'gated') or cfg.remat == 'none':\n"
                  "    return cfg.num_heads\n"
                  "  return 1 if cfg.cross_attention == 'mqa' else 0\n")
  assert name_switches(path, set(VARIANTS)) == [
      "probe.py:2: variant in ('mha', 'gated')", "probe.py:4: cfg.cross_attention == 'mqa'"]
