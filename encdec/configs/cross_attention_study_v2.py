"""The cross-attention study, version 2 (issue 20): the ablation's model and data
(configs/cross_attention_ablation.py), trained near convergence.

    encdec sweep --config configs/cross_attention_study_v2.py:task=g2p_cmudict --sweep budget \
        --workdir runs/study_v2/budget/g2p_cmudict
    python -m experiments.budget_curve runs/study_v2/budget/g2p_cmudict \
        --out experiments/results/cross_attention_study_v2/budget_g2p_cmudict

`budget` measures the curve the study's budget is chosen from: standard multi-head
cross-attention trained to each of BUDGETS steps, each with its own full warm-up + cosine
schedule (a budget's final quality, not a point on a longer run's curve).
"""
from encdec import config, sweep
from encdec.configs import cross_attention_ablation

BUDGETS = (1000, 2000, 4000, 8000, 16000)


def get_config(arg=None):
  c = cross_attention_ablation.get_config(arg)
  c.model.cross_attention = "mha"
  c.eval.every_steps = 1000
  c.checkpoint.every_steps = 1000
  c.logging.every_steps = 100
  return c


SWEEPS = {
    "budget": lambda: sweep.grid(**{"train.num_steps": list(BUDGETS)}),
}
