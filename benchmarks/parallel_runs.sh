#!/bin/bash
# Two small training runs at once, as `encdec sweep --jobs 2` runs them on a 2-core machine:
# unbound (each process sees both cores) against bound to one core each (taskset, as the sweep
# binds them), two rounds. Prints each round's wall time and the steps/s the runs log (the last
# three 100-step windows). Results: benchmarks/RESULTS.md. Usage: bash benchmarks/parallel_runs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/parallel_runs}
CONFIG=encdec/configs/cross_attention_study_v2.py:task=reverse,positions=alibi

train() {  # name, CPU binding prefix (empty: none)
  rm -rf "$OUT/$1"
  $2 encdec train --config $CONFIG --workdir "$OUT/$1" --config.train.num_steps=600 \
      --config.eval.every_steps=100000 --config.checkpoint.every_steps=100000 \
      --config.eval.final_split=test --config.eval.extra_final_splits= > "$OUT/$1.log" 2>&1
}

mkdir -p "$OUT"
for round in 1 2; do
  start=$(date +%s.%N); train unbound_a$round "" & train unbound_b$round "" & wait
  echo "round $round unbound: $(echo "$(date +%s.%N) - $start" | bc) s"
  start=$(date +%s.%N); train bound_a$round "taskset -c 0" & train bound_b$round "taskset -c 1" & wait
  echo "round $round bound: $(echo "$(date +%s.%N) - $start" | bc) s"
done
for log in "$OUT"/*.log; do
  echo "$(basename "$log" .log): $(grep -o '[0-9.]* steps/s' "$log" | tail -3 | tr '\n' ' ')"
done
