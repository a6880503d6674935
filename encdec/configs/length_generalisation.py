"""Length generalisation: every position scheme x {mha, local, none} x 3 seeds on one task.

    encdec sweep --config configs/length_generalisation.py:task=reverse \
        --sweep schemes --workdir runs/length_generalisation/reverse
    encdec report runs/length_generalisation/reverse --baseline \
        position_encoding=sinusoidal.cross_attention=mha

task = copy | reverse | sort | add. Training inputs have 1-16 symbols (add: operands of 1-16
digits); `test` has the same lengths, `test_long` 17-32 and `test_longer` 33-64 (see
encdec/data/algorithmic.py). `test_long` is the final split, so the report's paired bootstrap
tests the first step beyond the training lengths; `test` and `test_longer` are scored beside it.

The `schemes` sweep lists mha's runs first, seed-major (every scheme once for seed 0, then for
seed 1, ...), then local's, then the none control's, so an interrupted sweep already holds a
complete first comparison; running the same command again resumes it.
"""
from encdec import config, sweep
from encdec.configs import algorithmic
from encdec.model import schema

SEEDS = (0, 1, 2)
VARIANTS = ("mha", "local", "none")   # none: the control that cannot see the source
# The learned scheme's table (model.max_len, default 512) covers every test length; its rows past
# the training lengths are never trained, which is the point of the comparison.
STEPS = {"copy": 1000, "reverse": 1500, "sort": 1500, "add": 2500}


def get_config(arg=None):
  """configs/algorithmic.py's model and optimiser, without packing, at each task's budget, with
  the final evaluation on the long splits."""
  arg = config.parse_arg(arg, task="reverse")
  c = algorithmic.get_config(f"task={arg.task}")
  c.train.update(num_steps=config.choose(STEPS, arg.task, "task"), pack=False)
  c.optim.warmup_steps = 150
  c.eval.update(final_split="test_long", extra_final_splits="test,test_longer")
  c.logging.every_steps = 50
  return c


def schemes() -> list[sweep.Overrides]:
  """Variant by variant (mha first), and within one, every scheme for seed 0, then seed 1, ..."""
  return sweep.union(*(
      sweep.grid(seeds=(seed,), **{"model.position_encoding": list(schema.POSITION_ENCODINGS),
                                   "model.cross_attention": [variant]})
      for variant in VARIANTS for seed in SEEDS))


SWEEPS = {"schemes": schemes}
