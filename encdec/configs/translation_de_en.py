"""German -> English translation on the Ding dictionary (task `ding_de_en`; offline after
`apt-get install trans-de-en`).

    encdec train --config translation_de_en --workdir runs/de_en              # size=small
    encdec train --config translation_de_en:size=base --workdir runs/de_en_base
    encdec eval --workdir runs/de_en_base --split test                        # beam 4 (decode)

size=small (the default): 1200 steps at 1.24 steps/s, about 19 minutes with the final beam-4
test decoding on a 2-core AMD EPYC (test BLEU 0.45, chrF 12.9: experiments/results/).
size=base: the best test BLEU in at most 3 CPU-hours here: 1300 steps at about 3.3 s a step,
1 h 18 min for the whole command on a 2-core AMD EPYC (about 2 CPU-hours; test BLEU 0.97 greedy,
0.73 beam 4, chrF 14.0 / 13.5: experiments/results/translation_de_en_base.md).
size=tiny: smoke tests only.
Both train on packed rows of words, phrases and sentences, evaluate greedily on dev during
training and decode the test sentences at the end with beam 4 (`decode.beam_size`, as `encdec
eval` does), the sacrebleu signatures in the eval JSON.
"""
from encdec import config
from encdec.data import tasks

SIZES = {
    #        d_model heads d_ff  enc dec  steps  batch  warmup  lr    dropout  vocab
    "tiny": (64, 4, 256, 2, 2, 300, 32, 100, 2e-3, 0.0, 4000),
    "small": (128, 4, 512, 3, 3, 1200, 64, 200, 3e-3, 0.0, 4000),
    "base": (256, 4, 1024, 4, 4, 1300, 64, 400, 1e-3, 0.1, 8000),
}


def get_config(arg=None):
  arg = config.parse_arg(arg, size="small")
  d_model, heads, d_ff, enc, dec, steps, batch, warmup, lr, dropout, vocab = config.choose(
      SIZES, arg.size, "size")
  c = config.base()
  c.task = tasks.default_config("ding_de_en")
  c.task.vocab_size = vocab
  c.model.update(d_model=d_model, num_heads=heads, d_ff=d_ff, num_encoder_layers=enc,
                 num_decoder_layers=dec, dropout_rate=dropout)
  c.train.update(num_steps=steps, batch_size=batch, label_smoothing=0.1, pack=True)
  c.optim.update(learning_rate=lr, warmup_steps=warmup, schedule="cosine")
  c.checkpoint.every_steps = max(steps // 20, 100)
  c.eval.update(every_steps=max(steps // 4, 100), split="dev", max_examples=200,
                final_split="test", batch_size=128)
  c.decode.update(beam_size=4, alpha=0.6)
  c.logging.every_steps = max(steps // 50, 10)
  return c
