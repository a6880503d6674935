"""The benchmark configuration shared with the peers (benchmarks/run.py, benchmarks/peers/).

d_model 512, 8 heads, d_ff 2048, 6 + 6 layers, one shared 8192-token vocabulary tied to the
output, batch 16, source and target length 64, dropout 0.1, label smoothing 0.1, AdamW,
clipping 1.0, float32. Layers unrolled (`model.scan_layers=False`): on CPU the step is 13% faster
than scanned, for a longer compile (benchmarks/RESULTS.md); the benchmark's compile-time stage
compares depths with the layers scanned.
"""
from encdec import config


def get_config(arg=None):
  arg = config.parse_arg(arg, layers=6)
  c = config.base()
  c.task = dict(name="copy", max_src_len=63, max_tgt_len=63)  # benchmarks feed random tokens
  c.model.update(src_vocab_size=8192, tgt_vocab_size=8192, d_model=512, num_heads=8, d_ff=2048,
                 num_encoder_layers=arg.layers, num_decoder_layers=arg.layers, dropout_rate=0.1,
                 share_embeddings=True, tie_output=True, dtype="float32",
                 scan_layers=False)
  c.train.update(batch_size=16, label_smoothing=0.1, num_steps=100)
  c.optim.update(learning_rate=1e-4, schedule="constant", warmup_steps=1, weight_decay=0.0,
                 grad_clip_norm=1.0)
  c.decode.update(max_len=64, beam_size=4)
  return c
