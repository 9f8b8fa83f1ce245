#!/usr/bin/env bash
# Reproduces the tail-latency tables of docs/RESULTS.md (issue 7): mittd replay of
# the shipped trace's held-out 30 % and of the held-out second trace with the
# shipped bundles, the decision-threshold sweep, and mittd evaluate (ROC-AUC).
# Replays are deterministic (virtual clock); ~3 min on 2 cores.
#   usage: benchmarks/replay_results.sh [OUT_DIR]   (default out/results)
set -euo pipefail
cd "$(dirname "$0")/.."
M=${MITTD:-.venv/bin/mittd}
B=predictor/bundles
T1=traces/samples/fio_mixed_30s.parquet
T2=traces/samples/fio_readheavy_30s.parquet
R=${1:-out/results}
mkdir -p "$R"
MODELS=(-m $B/precise_linear_node95.mittd -m $B/precise_linear_hist_node95.mittd
        -m $B/heimdall.mittd -m $B/linnos.mittd)

echo "=== replay: $T1, last 30 % (held out from training) ==="
$M replay $T1 --from 70% "${MODELS[@]}" --slo model -o $R/replay_mixed_test -q
echo "=== replay: $T2 (never trained on) ==="
$M replay $T2 "${MODELS[@]}" --slo model -o $R/replay_readheavy -q

echo "=== decision-threshold sweep (p99, reject rate) ==="
for p in 0.5 0.7 0.9 0.95 0.97 0.98 0.99; do
  for t in "$T1 --from 70%" "$T2"; do
    # shellcheck disable=SC2086
    $M replay $t -m $B/precise_linear_hist_node95.mittd -m $B/heimdall.mittd \
      --policy baseline,models,hedge --slo model --decision-threshold $p \
      -o $R/sweep/$(basename ${t%% *} .parquet)_$p -q > /dev/null
  done
done
.venv/bin/python - "$R" <<'PY'
import json, sys, pathlib
r = pathlib.Path(sys.argv[1]) / "sweep"
print("| trace | P(slow) > | model | p99 µs | reject | hedge p99 µs | hedge extra |")
print("|---|---:|---|---:|---:|---:|---:|")
for d in sorted(r.iterdir()):
    rep = json.loads((d / "report.json").read_text())
    rows = {p["policy"]: p for p in rep["policies"]}
    trace, p = d.name.rsplit("_", 1)
    for m in ("precise_linear_hist_node95", "heimdall"):
        print(f"| {trace} | {p} | {m} | {rows[m]['p99_us']:.0f} | "
              f"{rows[m]['reject_rate']:.1%} | {rows['hedge']['p99_us']:.0f} | "
              f"{rows['hedge']['extra_io_fraction']:.1%} |")
PY

echo "=== evaluate (ROC-AUC etc. at each bundle's trained threshold) ==="
$M evaluate $B/*.mittd --trace $T1 --from 0.7
$M evaluate $B/*.mittd --trace $T2
