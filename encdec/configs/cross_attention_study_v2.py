"""The cross-attention study, version 2 (issue 20): the ablation's model and data
(configs/cross_attention_ablation.py), trained near convergence.

    encdec sweep --config configs/cross_attention_study_v2.py:task=g2p_cmudict --sweep budget \
        --workdir runs/study_v2/budget/g2p_cmudict
    python -m experiments.budget_curve runs/study_v2/budget/g2p_cmudict \
        --out experiments/results/cross_attention_study_v2

    # cross-attention-only fine-tuning: pretrain on reverse, move to copy (one vocabulary)
    encdec sweep --config configs/cross_attention_study_v2.py:task=reverse --sweep pretrain \
        --workdir runs/study_v2/pretrain/reverse
    encdec sweep --config configs/cross_attention_study_v2.py:task=copy --sweep finetune \
        --workdir runs/study_v2/finetune/reverse_to_copy
    encdec report runs/study_v2/finetune/reverse_to_copy --baseline seed

`budget` measures the curve the study's budget is chosen from: standard multi-head
cross-attention trained to each of BUDGETS steps, each with its own full warm-up + cosine
schedule (a budget's final quality, not a point on a longer run's curve).
`finetune` trains copy three ways per seed, at copy's budget: from the reverse model of the same
seed with only cross-attention trainable (`optim.trainable`), with everything trainable, and
from scratch (the report's baseline group, labelled `seed`). Gheini et al. (2021) found
cross-attention-only fine-tuning close to full fine-tuning for new language pairs; reverse ->
copy keeps the vocabulary and the symbols' representations and changes only the alignment.
"""
from encdec import config, sweep
from encdec.configs import cross_attention_ablation

SEEDS = (0, 1, 2, 3, 4)
BUDGETS = (1000, 2000, 4000, 8000, 16000)
PRETRAINED = "runs/study_v2/pretrain/reverse/seed={seed}"   # the pretrain sweep's runs


def get_config(arg=None):
  c = cross_attention_ablation.get_config(arg)
  c.model.cross_attention = "mha"
  c.eval.every_steps = 1000
  c.checkpoint.every_steps = 1000
  c.logging.every_steps = 100
  return c


def finetune() -> list[sweep.Overrides]:
  """Cross-attention only, everything, from scratch; seed by seed within each."""
  warm = sweep.grid(seeds=SEEDS, **{"train.init_from": [PRETRAINED],
                                    "optim.trainable": ["cross_attention", ""]})
  return sweep.union(sweep.grid(seeds=SEEDS), warm)


SWEEPS = {
    "budget": lambda: sweep.grid(**{"train.num_steps": list(BUDGETS)}),
    "pretrain": lambda: sweep.grid(seeds=SEEDS),
    "finetune": finetune,
}
