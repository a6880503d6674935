"""English grapheme-to-phoneme conversion on CMUdict (the embedded default main job).

    encdec train                                        # = --config configs/g2p_cmudict.py
    encdec train --config configs/g2p_cmudict.py:size=base --workdir runs/g2p_base

size=small: under 10 minutes on 2 CPU cores (packed batches of 128 rows, about 3.5 steps/s).
size=base: the quality configuration (about 2 h 06 min on 2 idle CPU cores; experiments/results/).
"""
from encdec import config
from encdec.data import tasks

SIZES = {
    #        d_model heads d_ff  enc dec  steps  batch  warmup  lr
    "tiny": (64, 4, 256, 2, 2, 300, 64, 100, 2e-3),
    "small": (128, 4, 512, 3, 3, 1800, 128, 300, 2e-3),
    "base": (256, 4, 1024, 3, 3, 10000, 128, 1000, 1e-3),
}


def get_config(arg=None):
  arg = config.parse_arg(arg, size="small")
  d_model, heads, d_ff, enc, dec, steps, batch, warmup, lr = SIZES[arg.size]
  c = config.base()
  c.task = tasks.default_config("g2p_cmudict")
  c.model.update(d_model=d_model, num_heads=heads, d_ff=d_ff, num_encoder_layers=enc,
                 num_decoder_layers=dec, dropout_rate=0.1)
  c.train.update(num_steps=steps, batch_size=batch, label_smoothing=0.1, pack=True)
  c.optim.update(learning_rate=lr, warmup_steps=warmup, schedule="cosine")
  c.model.attention_dropout_rate = 0.1 if arg.size == "base" else 0.0
  c.checkpoint.every_steps = max(steps // 20, 100)
  c.eval.update(every_steps=max(steps // 3, 100), split="dev", max_examples=1000,
                final_split="test")
  c.logging.every_steps = max(steps // 30, 10)
  return c
