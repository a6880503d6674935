"""Dropout randomness on CPU without a loop: Threefry lowered unrolled, as on GPU/TPU.

Every dropout mask draws its bits from JAX's Threefry-2x32 hash (20 rounds). On CPU, JAX lowers
the hash as a 5-iteration `while` loop to keep compile times short. That loop materialises and
copies its whole state (two uint32 arrays the size of the mask) every iteration, and XLA cannot
fuse it with the mask's comparison. The bench train step has 30 dropout sites, so 30 such loops.
Lowered unrolled (what JAX does on every other platform), each mask is one fused elementwise
loop: the bench train step is 3% faster with scanned layers and 13% with unrolled ones
(benchmarks/RESULTS.md), for about 0.2 s more compile time.

The hash and its bits are the same either way (tests/test_threefry.py checks that bit for bit),
so numerics do not change. JAX has no public switch for this. `unroll_on_cpu` re-registers
JAX's own unrolled lowering rule for the CPU platform (private names, pinned jax version); if
those names move, it changes nothing and returns False.

It is a process-wide change, so only its explicit callers make it: the trainer
(`train.loop.Trainer`, unless `train.cpu_unrolled_threefry=False`) and benchmarks/run.py.
Building a train step (`train.step.make_train_step`) does not.
"""
from __future__ import annotations

import functools


@functools.cache
def unroll_on_cpu() -> bool:
  """Lower Threefry-2x32 unrolled on CPU for the rest of the process (idempotent).

  Affects computations traced afterwards. Returns whether the rule could be installed.
  """
  try:
    # pylint: disable=import-outside-toplevel,protected-access
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32
    primitive = threefry2x32.threefry2x32_p
    unrolled_rule = threefry2x32._threefry2x32_lowering_rule
  except (ImportError, AttributeError):
    return False
  mlir.register_lowering(primitive, unrolled_rule, platform="cpu")
  return True
