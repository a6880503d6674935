"""Threefry lowered unrolled on CPU: the same random bits and dropout masks, without a loop."""
import json
import os
import subprocess
import sys

# Run in a fresh process: the lowering is process-wide, and other tests may have installed it.
BEFORE_AND_AFTER = """
import json, jax, numpy as np
from encdec import threefry
key = jax.random.key(7)

def draws():
  fn = jax.jit(lambda k: (jax.random.bits(k, (3, 1000)),
                          jax.random.bernoulli(jax.random.fold_in(k, 1), 0.9, (4, 257))))
  loops = fn.lower(key).compile().as_text().count(" while(")
  bits, keep = fn(key)
  return np.asarray(bits).tolist(), np.asarray(keep).tolist(), loops

rolled = draws()
installed = threefry.unroll_on_cpu()
unrolled = draws()
print(json.dumps({"installed": installed, "rolled": rolled, "unrolled": unrolled}))
"""


def test_unrolled_threefry_draws_the_same_bits_without_a_loop():
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", BEFORE_AND_AFTER], capture_output=True, text=True,
                       env=env, check=True, timeout=300)
  result = json.loads(out.stdout.splitlines()[-1])
  assert result["installed"]
  rolled_bits, rolled_keep, rolled_loops = result["rolled"]
  bits, keep, loops = result["unrolled"]
  assert rolled_loops > 0 and loops == 0        # the switch took effect
  assert bits == rolled_bits and keep == rolled_keep
  assert 0.85 < sum(map(sum, keep)) / (4 * 257) < 0.95
