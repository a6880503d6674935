#!/usr/bin/env bash
# The cross-attention study's long arms (experiments/results/cross_attention_study_v2/README.md),
# one after another: every variant x 5 seeds on G2P, on de-en (the references' NLL), then the
# length arm again. Each arm first unpacks the runs its archive holds (so the sweep skips them),
# then sweeps (resuming unfinished runs from their checkpoints), packs what finished into the
# archive to commit and writes the arm's pages into the study's results directory (the report,
# copied there with its plots; Δ by source length). Last, the summary table and figure over the
# three tasks. Run it again after an interruption: it goes on where it stopped.
#
#   nohup experiments/study_v2_arms.sh >/dev/null 2>&1 &      # logs: runs/study_v2/*.log
#   JOBS=1 experiments/study_v2_arms.sh                         # one run at a time
set -euo pipefail
cd "$(dirname "$0")/.."
ENCDEC=${ENCDEC:-.venv/bin/encdec}
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=encdec/configs/cross_attention_study_v2.py
RESULTS=experiments/results/cross_attention_study_v2
ARCHIVE=$RESULTS/archive
COST=benchmarks/results-variants-study-cpu-2026-12-01.json

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

page() {  # page SWEEP_DIR OUT_DIR [REPORT_ARGS...]: encdec report, copied with its plots to OUT_DIR
  local dir=$1 out=$2; shift 2
  "$ENCDEC" report "$dir" --no-decode-speed "$@"
  mkdir -p "$out"
  cp "$dir/report.md" "$dir/report.json" "$dir/learning_curves.png" "$dir/main_metric.png" "$out/"
}

by_length() {  # by_length SWEEP_DIR OUT [ARGS...]: each variant's difference by source length
  local dir=$1 out=$2; shift 2
  "$PYTHON" -m experiments.by_source_length "$dir" --out "$out" "$@"
}

V=runs/study_v2/variants
arm g2p_cmudict task=g2p_cmudict --config.train.num_steps=32000 --config.train.bucket_width=8
page $V/g2p_cmudict $RESULTS/variants_g2p_cmudict                       # test WER, the main metric
page $V/g2p_cmudict $RESULTS/variants_g2p_cmudict/nll --metric nll      # the references' NLL
by_length $V/g2p_cmudict $RESULTS/g2p_by_word_length
by_length $V/g2p_cmudict $RESULTS/g2p_by_word_length_nll --metric nll

arm ding_de_en task=ding_de_en --config.train.num_steps=4000 --config.task.max_src_len=16 \
    --config.task.max_tgt_len=16 --config.eval.every_steps=2000
page $V/ding_de_en $RESULTS/variants_ding_de_en --metric nll
by_length $V/ding_de_en $RESULTS/de_en_by_phrase_length --metric nll
# About 1.4 min a run: again for its run directories (lost with a session's machine), which the
# summary figure needs to put the study model's decode costs beside the differences.
arm reverse_alibi task=reverse,positions=alibi
page $V/reverse_alibi $RESULTS/variants_reverse_alibi --metric symbol_accuracy

"$PYTHON" -m experiments.study_v2_summary \
    --sweep "G2P=$V/g2p_cmudict" --metric G2P=wer \
    --sweep "de-en=$V/ding_de_en" --metric de-en=nll \
    --sweep "reverse, 17-32 symbols=$V/reverse_alibi" \
    --metric "reverse, 17-32 symbols=symbol_accuracy" \
    --cost "$COST" --out "$RESULTS"
