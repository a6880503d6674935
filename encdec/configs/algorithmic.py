"""Algorithmic tasks that need the source: copy, reverse, sort, add.

    encdec train --config configs/algorithmic.py:task=reverse --workdir runs/reverse
"""
from encdec import config
from encdec.data import tasks


def get_config(arg=None):
  arg = config.parse_arg(arg, task="reverse")
  c = config.base()
  c.task = tasks.default_config(arg.task)
  c.model.update(d_model=64, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2,
                 dropout_rate=0.0)
  c.train.update(num_steps=1500, batch_size=64, label_smoothing=0.0)
  c.optim.update(learning_rate=3e-3, warmup_steps=200, schedule="cosine")
  c.checkpoint.every_steps = 500
  c.eval.update(every_steps=500, split="dev", max_examples=256, final_split="test_long")
  c.logging.every_steps = 100
  return c
