#!/usr/bin/env bash
# The cross-attention study's long arms (experiments/results/cross_attention_study_v2/README.md),
# one after another: every variant x 5 seeds on G2P, on de-en (the references' NLL), then the
# length arm again. Each arm first unpacks the runs its archive holds (so the sweep skips them),
# then sweeps (resuming unfinished runs from their checkpoints), then packs what finished into
# the archive to commit. Run it again after an interruption: it goes on where it stopped.
#
#   nohup experiments/study_v2_arms.sh >/dev/null 2>&1 &      # logs: runs/study_v2/*.log
#   JOBS=1 experiments/study_v2_arms.sh                         # one run at a time
set -euo pipefail
cd "$(dirname "$0")/.."
ENCDEC=${ENCDEC:-.venv/bin/encdec}
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=encdec/configs/cross_attention_study_v2.py
ARCHIVE=experiments/results/cross_attention_study_v2/archive

arm() {  # arm NAME TASK_ARGS [OVERRIDES...]
  local name=$1 task=$2; shift 2
  local dir=runs/study_v2/variants/$name
  mkdir -p runs/study_v2
  if [ -d "$ARCHIVE/variants_$name" ]; then
    "$PYTHON" -m experiments.run_archive unpack "$ARCHIVE/variants_$name" "$dir"
  fi
  "$ENCDEC" sweep --config "$CONFIG:$task" --sweep variants --workdir "$dir" \
      --jobs "${JOBS:-2}" "$@" >> "runs/study_v2/${name}_variants.log" 2>&1
  "$PYTHON" -m experiments.run_archive pack "$dir" "$ARCHIVE/variants_$name"
}

arm g2p_cmudict task=g2p_cmudict --config.train.num_steps=32000 --config.train.bucket_width=8
arm ding_de_en task=ding_de_en --config.train.num_steps=4000 --config.task.max_src_len=16 \
    --config.task.max_tgt_len=16 --config.eval.every_steps=2000
# About 1.4 min a run: again for its run directories (lost with a session's machine), which the
# summary figure needs to put the study model's decode costs beside the differences.
arm reverse_alibi task=reverse,positions=alibi
