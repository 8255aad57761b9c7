#!/bin/bash
# The one-call GPU benchmark run (after ../shared/tools/gpu-pack): the layer benches,
# PEFT's side-by-side, then the summary table. On the device tool:
#   command: "bash benches/run_gpu.sh"   carry: [".gpu"]
# QUICK=1 runs PEFT on one shape only. Logs and criterion's estimates land in $OUT.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
for d in $(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt /usr/lib/x86_64-linux-gnu /usr/local/lib/python3*/dist-packages \
           -maxdepth 11 \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u); do
  LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH CRITERION_HOME="$OUT/criterion"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
timeout "${BENCH_TIMEOUT:-420}" .gpu/bin/bench-layers --bench ${BENCH_FILTER:-} 2>&1 | tee "$OUT/bench.log" | grep -E '^(memory|SKIPPED)|time:' | tail -80
timeout "${PEFT_TIMEOUT:-240}" python3 benches/peft_side_by_side.py --out "$OUT/peft.json" ${QUICK:+--quick} 2>&1 | tee "$OUT/peft.log" | tail -30
python3 benches/summarize.py "$OUT/criterion" "$OUT/peft.json" "$OUT/bench.log" | tee "$OUT/summary.txt"
