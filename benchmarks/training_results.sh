#!/usr/bin/env bash
# Reproduces docs/RESULTS.md: training, the sparsity sweep (seed 000 Table 2),
# the four pruning methods, fp16 / 4-bit weights, the peers' baselines and the
# compression-parameter search, all on the shipped real trace. ~15 min on 2 cores.
#   usage: benchmarks/training_results.sh [OUT_DIR]   (default out/results)
set -euo pipefail
cd "$(dirname "$0")/.."
M=${MITTD:-.venv/bin/mittd}
T=traces/samples/fio_mixed_30s.parquet
R=${1:-out/results}
mkdir -p "$R"
step() { echo "=== $* ==="; local t0; t0=$(date +%s); "$@"; echo "=== done in $(( $(date +%s) - t0 )) s ==="; }

step $M train $T --model precise_linear -o $R/pl.mittd --report $R/report --sparsity-sweep --force
step $M train $T --model good_custom -o $R/gc.mittd --report $R/report --sparsity-sweep --force
for m in magnitude simd node scalpel; do
  step $M prune $R/pl.mittd --method $m --sparsity 0.95 -o $R/pl_${m}95.mittd --report $R/report --force
done
for m in magnitude simd node scalpel; do
  step $M prune $R/gc.mittd --method $m --sparsity 0.9 -o $R/gc_${m}90.mittd --report $R/report --force
done
for b in pl gc pl_magnitude95; do
  step $M compress $R/$b.mittd --weights fp16 -o $R/${b}_fp16.mittd --force
  step $M compress $R/$b.mittd --weights kmeans4 -o $R/${b}_k4.mittd --force
  step $M compress $R/$b.mittd --weights kmeans4 --finetune -o $R/${b}_k4ft.mittd --force
done
for m in linnos heimdall; do
  step $M train $T --model $m -o $R/$m.mittd --report $R/report --force --quiet
done
# precise_linear on the LBA bits plus queue/latency history (featuriser lba_hist)
step $M train $T --model precise_linear_hist -o $R/plh.mittd --report $R/report --force --quiet
step $M prune $R/plh.mittd --method node --sparsity 0.95 -o $R/plh_node95.mittd --report $R/report --force
step $M tune $T --model precise_linear --auc-floor 0.85 --trials 10 --json $R/tune_pl.json
