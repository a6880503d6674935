#!/usr/bin/env bash
# The cross-attention study's long arms (experiments/results/cross_attention_study_v2/README.md),
# one after another: every variant x 5 seeds on G2P, the length arm again (40 minutes, for its
# run directories), then de-en (the references' NLL). Each arm first unpacks the runs its archive
# holds (so the sweep skips them), then sweeps (resuming unfinished runs from their checkpoints),
# packs what finished into the archive to commit and writes the arm's pages into the study's
# results directory (the report, copied there with its plots; Δ by source length). The summary
# table and figure (every variant's Δ against its decode cost) follow the length arm and again
# the de-en arm. Run it again after an interruption: it goes on where it stopped. Arguments
# name the arms to run (default: g2p reverse de_en); g2p_64k, run only when named, sweeps mha and
# the variants the G2P arm found different from it at 64k steps (the `recheck` sweep).
#
#   nohup experiments/study_v2_arms.sh >/dev/null 2>&1 &      # logs: runs/study_v2/*.log
#   JOBS=1 experiments/study_v2_arms.sh                         # one run at a time
#   nohup experiments/study_v2_arms.sh g2p_64k >/dev/null 2>&1 &
#   pkill -TERM -f study_v2_arms.sh     # stop: the runs save checkpoints, what finished is packed
set -euo pipefail
cd "$(dirname "$0")/.."
ENCDEC=${ENCDEC:-.venv/bin/encdec}
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/study_v2}
RESULTS=${RESULTS:-experiments/results/cross_attention_study_v2}
CONFIG=encdec/configs/cross_attention_study_v2.py
ARCHIVE=$RESULTS/archive
COST=benchmarks/results-variants-study-cpu-2026-12-01.json

# SIGTERM / SIGINT: during a sweep, pass it on (its runs save checkpoints and exit), pack what
# finished and exit; between sweeps, exit once the step in progress is done.
SWEEP_PID="" STOPPING=""
on_signal() {
  if [ -n "$SWEEP_PID" ]; then STOPPING=1; kill -TERM "$SWEEP_PID" 2>/dev/null || true
  else exit 143; fi
}
trap on_signal TERM INT

arm() {  # arm SWEEP NAME TASK_ARGS [OVERRIDES...]: runs in $RUNS/SWEEP/NAME
  local sweep=$1 name=$2 task=$3 status; shift 3
  local dir=$RUNS/$sweep/$name archive=$ARCHIVE/${sweep}_$name
  mkdir -p "$RUNS"
  if [ -d "$archive" ]; then
    "$PYTHON" -m experiments.run_archive unpack "$archive" "$dir"
  fi
  "$ENCDEC" sweep --config "$CONFIG:$task" --sweep "$sweep" --workdir "$dir" \
      --jobs "${JOBS:-2}" "$@" >> "$RUNS/${name}_$sweep.log" 2>&1 &
  SWEEP_PID=$!
  while true; do                     # `wait` also returns when a signal comes to this script
    status=0; wait "$SWEEP_PID" || status=$?
    kill -0 "$SWEEP_PID" 2>/dev/null || break
  done
  SWEEP_PID=""
  "$PYTHON" -m experiments.run_archive pack "$dir" "$archive"
  if [ -n "$STOPPING" ]; then exit 143; fi
  return "$status"                   # a failed run stops the script (after packing the others)
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

summary() {  # summary "TASK=DIR=METRIC"...: the table and figure of every variant against its cost
  local args=() spec
  for spec in "$@"; do
    args+=(--sweep "${spec%=*}" --metric "${spec%%=*}=${spec##*=}")
  done
  "$PYTHON" -m experiments.study_v2_summary "${args[@]}" --cost "$COST" --out "$RESULTS"
}

V=$RUNS/variants
G2P="G2P=$V/g2p_cmudict=wer"
REVERSE="reverse, 17-32 symbols=$V/reverse_alibi=symbol_accuracy"
DE_EN="de-en=$V/ding_de_en=nll"

g2p() {
  arm variants g2p_cmudict task=g2p_cmudict --config.train.num_steps=32000 \
      --config.train.bucket_width=8
  page $V/g2p_cmudict $RESULTS/variants_g2p_cmudict                     # test WER, the main metric
  page $V/g2p_cmudict $RESULTS/variants_g2p_cmudict/nll --metric nll    # the references' NLL
  by_length $V/g2p_cmudict $RESULTS/g2p_by_word_length
  by_length $V/g2p_cmudict $RESULTS/g2p_by_word_length_nll --metric nll
}

# About 40 min (1.4 min a run): again for its run directories (lost with a session's machine),
# which the summary needs; the committed report is then this rerun's (update the README's
# length-arm numbers from it).
reverse() {
  arm variants reverse_alibi task=reverse,positions=alibi
  page $V/reverse_alibi $RESULTS/variants_reverse_alibi --metric symbol_accuracy
  summary "$G2P" "$REVERSE"
}

de_en() {
  arm variants ding_de_en task=ding_de_en --config.train.num_steps=4000 \
      --config.task.max_src_len=16 --config.task.max_tgt_len=16 --config.eval.every_steps=2000
  page $V/ding_de_en $RESULTS/variants_ding_de_en --metric nll
  by_length $V/ding_de_en $RESULTS/de_en_by_phrase_length --metric nll
  summary "$G2P" "$DE_EN" "$REVERSE"
}

# 25 runs of about an hour each two at a time (35 min alone on an idle machine).
g2p_64k() {
  local dir=$RUNS/recheck/g2p_cmudict_64k
  arm recheck g2p_cmudict_64k task=g2p_cmudict --config.train.num_steps=64000 \
      --config.train.bucket_width=8
  page "$dir" $RESULTS/recheck_g2p_cmudict_64k
  page "$dir" $RESULTS/recheck_g2p_cmudict_64k/nll --metric nll
}

ARMS=("$@")
[ ${#ARMS[@]} -gt 0 ] || ARMS=(g2p reverse de_en)
for a in "${ARMS[@]}"; do
  case $a in
    g2p|reverse|de_en|g2p_64k) ;;
    *) echo "study_v2_arms.sh: unknown arm '$a'; valid: g2p reverse de_en g2p_64k" >&2; exit 2;;
  esac
done
for a in "${ARMS[@]}"; do "$a"; done
