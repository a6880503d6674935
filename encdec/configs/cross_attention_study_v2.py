"""The cross-attention study, version 2 (issue 20): the ablation's model and data
(configs/cross_attention_ablation.py), trained near convergence.

    encdec sweep --config configs/cross_attention_study_v2.py:task=g2p_cmudict --sweep budget \
        --workdir runs/study_v2/budget/g2p_cmudict
    python -m experiments.budget_curve runs/study_v2/budget/g2p_cmudict \
        --out experiments/results/cross_attention_study_v2

    # cross-attention-only fine-tuning: pretrain on reverse, move to copy (one vocabulary)
    encdec sweep --config configs/cross_attention_study_v2.py:task=reverse --sweep pretrain \
        --workdir runs/study_v2/pretrain/reverse
    encdec sweep --config configs/cross_attention_study_v2.py:task=copy,final=test \
        --sweep finetune --workdir runs/study_v2/finetune/reverse_to_copy_100 \
        --config.train.num_steps=100 --config.optim.warmup_steps=20
    encdec report runs/study_v2/finetune/reverse_to_copy_100 --baseline base

    # the length arm: every variant, alibi positions, scored by symbol accuracy beyond training
    encdec sweep --config configs/cross_attention_study_v2.py:task=reverse,positions=alibi \
        --sweep variants --workdir runs/study_v2/variants/reverse_alibi
    encdec report runs/study_v2/variants/reverse_alibi --metric symbol_accuracy

    # do the G2P arm's differences hold nearer convergence? (experiments/study_v2_arms.sh g2p_64k)
    encdec sweep --config configs/cross_attention_study_v2.py:task=g2p_cmudict --sweep recheck \
        --workdir runs/study_v2/recheck/g2p_cmudict_64k --config.train.num_steps=64000 \
        --config.train.bucket_width=8

    # the architecture arm: mha and the best 4 variants under each preset (one sweep each),
    # positions kept at ALiBi (the presets' own schemes do not extrapolate: a floor)
    for p in vaswani t5_v1_1 modern; do
      encdec sweep --config configs/cross_attention_study_v2.py:task=reverse,preset=$p \
          --sweep best --workdir runs/study_v2/best/reverse_alibi_$p \
          --config.model.position_encoding=alibi; done

`budget` measures the curve the study's budget is chosen from: standard multi-head
cross-attention trained to each of BUDGETS steps, each with its own full warm-up + cosine
schedule (a budget's final quality, not a point on a longer run's curve).
`finetune` trains copy three ways per seed: from the reverse model of the same seed with only
cross-attention trainable (`optim.trainable`), with everything trainable, and from scratch (the
report's baseline group, `base`), for a budget given on the command line (copy alone is learned
in about 300 steps, so the transfer shows in fewer). Gheini et al. (2021) found
cross-attention-only fine-tuning close to full fine-tuning for new language pairs; reverse ->
copy keeps the vocabulary and the symbols' representations and changes only the alignment.
`recheck`: `mha` and G2P_DIFFERENT, for a longer budget given on the command line (do the G2P
arm's differences hold nearer convergence?).
`best`: `mha` and BEST, the 4 variants nearest to or above it in the length arm (none of them
differs from `mha` across seeds there), to be run under each preset: does a variant's verdict
depend on the architecture around it?
"""
from encdec import config, model, sweep
from encdec.configs import cross_attention_ablation

SEEDS = (0, 1, 2, 3, 4)
BUDGETS = (1000, 2000, 4000, 8000, 16000, 32000)
ALGORITHMIC_SPLITS = ("test", "test_long", "test_longer")
PLACEMENTS = ("all", "first", "last", "middle", "every:2", "every:3")
PRETRAINED = "runs/study_v2/pretrain/reverse/seed={seed}"   # the pretrain sweep's runs
# The length arm's (reverse, ALiBi) 4 best variants by mean symbol accuracy against mha: +1.3,
# +0.0, -0.3, -0.5 points (experiments/results/cross_attention_study_v2/variants_summary.md).
BEST = ("all_layers", "mqa", "gqa", "shared_kv")
# The variants the G2P arm (32k steps) found worse than mha across seeds: the references' NLL
# of mqa, gqa, latent and gated, and gating's test WER before Holm (experiments/results/
# cross_attention_study_v2/README.md). The `recheck` sweep runs them again nearer convergence.
G2P_DIFFERENT = ("mqa", "gqa", "latent", "gated")


def get_config(arg=None):
  """task: as configs/cross_attention_ablation.py; final: the main split of an algorithmic task
  (default test_long, the first lengths beyond training; the other test splits are scored
  beside it); positions: model.position_encoding (the length arm uses alibi, the scheme that
  extrapolates furthest in experiments/results/length_generalisation/); preset: model.preset
  (applied over this file's model fields when the config is loaded, so its own position scheme
  replaces `positions`)."""
  arg = config.parse_arg(arg, task="g2p_cmudict", final="test_long", positions="sinusoidal",
                         preset="")
  c = cross_attention_ablation.get_config(f"task={arg.task}")
  c.model.update(position_encoding=arg.positions, preset=arg.preset)
  if arg.task not in cross_attention_ablation.REAL:
    final = config.choose({s: s for s in ALGORITHMIC_SPLITS}, arg.final, "final")
    c.eval.update(final_split=final,
                  extra_final_splits=",".join(s for s in ALGORITHMIC_SPLITS if s != final))
  c.model.cross_attention = "mha"
  if arg.task in cross_attention_ablation.REAL:
    # Unrolled layers: this 2 + 2-layer model's G2P step runs 1.18x as fast on one CPU core
    # as with nn.scan, whose loop costs more than layers this small (benchmarks/RESULTS.md,
    # benchmarks.layer_stack). The same model and init distribution; runs begun before
    # 2026-12-02 16:20 UTC (the budget curve, G2P seed 0 of all_layers .. mha) were scanned.
    # The algorithmic arms stay as they ran.
    c.model.scan_layers = False
  c.eval.every_steps = 1000
  c.checkpoint.every_steps = 1000
  c.logging.every_steps = 100
  return c


def seed_major(variants) -> list[sweep.Overrides]:
  """Each variant once for seed 0, then seed 1, ...: an interrupted sweep already holds a
  complete comparison at fewer seeds."""
  return sweep.union(*(sweep.grid(seeds=(seed,), **{"model.cross_attention": list(variants)})
                       for seed in SEEDS))


def finetune() -> list[sweep.Overrides]:
  """Cross-attention only, everything, from scratch; seed by seed within each."""
  warm = sweep.grid(seeds=SEEDS, **{"train.init_from": [PRETRAINED],
                                    "optim.trainable": ["cross_attention", ""]})
  return sweep.union(sweep.grid(seeds=SEEDS), warm)


SWEEPS = {
    "budget": lambda: sweep.grid(**{"train.num_steps": list(BUDGETS)}),
    "variants": lambda: seed_major(sorted(model.CROSS_ATTENTION)),
    "best": lambda: seed_major(("mha",) + BEST),
    "recheck": lambda: seed_major(("mha",) + G2P_DIFFERENT),
    # Fewer cross-attention layers, in a 6-layer decoder (standard multi-head).
    "placement": lambda: sweep.union(*(
        sweep.grid(seeds=(seed,), **{"model.num_decoder_layers": [6],
                                     "model.cross_attention_layers": list(PLACEMENTS)})
        for seed in SEEDS)),
    "pretrain": lambda: sweep.grid(seeds=SEEDS),
    "finetune": finetune,
}
