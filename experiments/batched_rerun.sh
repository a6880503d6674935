#!/bin/bash
# Issue 19: the first study's G2P variants one run at a time and with --batch 3, the two sweeps
# side by side, each bound to one core (taskset), so both see the same machine. Resumable.
cd "$(dirname "$0")/.."   # the repository root; run with its venv active (encdec on PATH)
C=encdec/configs/cross_attention_ablation.py:task=g2p_cmudict
run() { # core, name, extra args
  echo "[rerun] $(date +%s) $(date +%T) start $2" >> runs/rerun/times.log
  taskset -c $1 encdec sweep --config $C --sweep variants --workdir runs/rerun/$2 "${@:3}" >> runs/rerun/$2.log 2>&1
  echo "[rerun] $(date +%s) $(date +%T) end $2 rc=$?" >> runs/rerun/times.log
}
mkdir -p runs/rerun
# A run cut off by a session's end would resume and report only its last part's seconds: start
# it afresh so every "finished in" is a whole run (or batch).
for d in runs/rerun/{sequential,batched}/cross_attention=*; do
  [ -e "$d/eval/test-2000.json" ] || { echo "[rerun] $(date +%T) removed cut-off $d" >> runs/rerun/times.log; rm -rf "$d"; }
done
run 0 sequential &
run 1 batched --batch 3 &
wait
# Then: python -m experiments.batched_rerun runs/rerun/sequential runs/rerun/batched \
#   --sequential-log runs/rerun/sequential.log --batched-log runs/rerun/batched.log \
#   --out experiments/results/batched_rerun.md
