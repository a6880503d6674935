"""The cross-attention ablation study: every registered variant x 3 seeds, small fixed budget.

    encdec sweep --config configs/cross_attention_ablation.py:task=g2p_cmudict \
        --sweep variants --workdir runs/ablation/g2p_cmudict
    encdec report runs/ablation/g2p_cmudict

task=g2p_cmudict (WER/PER on CMUdict), task=ding_de_en (German -> English dictionary phrases of
2-6 words held out, `task.held_out=phrases`: BLEU/chrF; sentences are beyond this model's reach),
task=reverse or task=copy (exact match on test, and on test_long: longer inputs than any seen in
training; copy is the target of the fine-tuning sweep in configs/cross_attention_study_v2.py).
Batches are not packed, so every variant (including `latent`) sees the same batches.
"""
from encdec import config, model, sweep
from encdec.data import tasks

SEEDS = (0, 1, 2)
# Timed on 2 idle CPU cores: one g2p run ~1.8 min, one reverse run ~0.9 min, so the 33 runs of
# `variants` take about 1 h for g2p_cmudict and 30 min for reverse.
STEPS = {"g2p_cmudict": 2000, "ding_de_en": 2000, "reverse": 1500, "copy": 1000}
REAL = ("g2p_cmudict", "ding_de_en")   # real data: dropout and label smoothing


def get_config(arg=None):
  arg = config.parse_arg(arg, task="g2p_cmudict")
  c = config.base()
  num_steps = config.choose(STEPS, arg.task, "task")
  c.task = tasks.default_config(arg.task)
  real = arg.task in REAL
  c.model.update(d_model=64, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2,
                 dropout_rate=0.1 if real else 0.0, cross_kv_heads=2, cross_latents=8)
  c.train.update(num_steps=num_steps, batch_size=64, pack=False,
                 label_smoothing=0.1 if real else 0.0)
  if arg.task == "ding_de_en":   # held-out phrases; theirs are a few tokens, sentences up to 64
    c.task.update(held_out="phrases", vocab_size=4000)
    c.train.bucket_width = 8
  c.optim.update(learning_rate=3e-3, warmup_steps=150, schedule="cosine")
  c.checkpoint.every_steps = 500
  c.eval.update(every_steps=500, split="dev", max_examples=500, final_split="test",
                extra_final_splits="" if real else "test_long")
  c.logging.every_steps = 50
  return c


SWEEPS = {
    # Every variant in the registry, 3 seeds each.
    "variants": lambda: sweep.grid(seeds=SEEDS,
                                   **{"model.cross_attention": sorted(model.CROSS_ATTENTION)}),
    # Fewer cross-attention layers (standard multi-head), 3 seeds each.
    "placement": lambda: sweep.grid(seeds=SEEDS, **{
        "model.cross_attention_layers": ["all", "first", "last", "every:2"]}),
}
