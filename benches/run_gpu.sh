#!/bin/bash
# The one-call GPU run, after ../shared/tools/gpu-pack (which builds the test and bench
# binaries into .gpu/ here): the GPU tests, the layer benches, PEFT's side-by-side, then
# the summary table. On the device tool:
#   command: "bash benches/run_gpu.sh [all|tests|benches]"   carry: [".gpu"]
# Phases have their own time limits (TEST_TIMEOUT per test binary, BENCH_TIMEOUT,
# PEFT_TIMEOUT, in seconds), set so that each half fits one device call (at most 10
# minutes) of a 15-minute lease: each test binary at most 360 s (on the H200 on
# 2026-11-28 the others took 1-31 s, and gpu_training's Llama-layer test, its f64 oracle
# on the host, had not finished at 170 s: 35 of its 36 r = 64 cases done; the oracle has
# since stopped copying W, 5-30x faster on those layers: one call took 0.7-1.3 s on the
# CPU here, now 0.03-0.7 s; gpu_largest_layers, added in session 7, makes 2 x 2^30 random
# values and runs the oracle on 4 rows of a 16384 x 16384 layer per variant: the oracle
# took 12 s in all on a 2-core machine, the data generation was not timed), `benches` at
# most 400 + 150 s (the layer benches took under 300 s on 2026-11-28; the plain products
# and BatCol's dB alone add about a minute).
# QUICK=1 runs PEFT on one shape only. BONE_GEMM_ENGINES=native,wgmma,cublas (labels,
# comma-separated) tests and times only those engines; unset, the run first tests each
# engine's exact layout alone and leaves out any that fails (below): the warp-specialised
# wgmma GEMM, wgmma-ws, had not run on a GPU by 2026-11-28, and a lost mbarrier hand-over
# traps after 10 s instead of hanging, but a trap ends every later CUDA call of its test
# binary. Logs and criterion's estimates land in $OUT; each phase prints how long it took.
set -o pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
for d in $(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt /usr/lib/x86_64-linux-gnu /usr/local/lib/python3*/dist-packages \
           -maxdepth 11 \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libnvrtc.so*' \) -not -path '*/stubs/*' 2>/dev/null \
           | xargs -r -n1 dirname | sort -u); do
  LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
# The driver's libcuda may sit outside the loader's cache (on this project's H200 it is
# /usr/lib/libcuda.so.1): take the first real one, never the toolkit's stub or compat copy.
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/nvidia/lib64; do
  if [ -e "$d/libcuda.so.1" ]; then LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; break; fi
done
export LD_LIBRARY_PATH CRITERION_HOME="$OUT/criterion"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
fail=0
# Each GEMM engine's exact-layout test alone, before anything else (seconds): an engine
# that fails it, or traps, is left out of the rest of the run through BONE_GEMM_ENGINES,
# loudly, and the run fails; so one broken engine costs neither a rerun of the long tests
# nor the other engines' checks. Skipped where BONE_GEMM_ENGINES is given. The labels are
# GemmEngine::label's.
if [ -z "${BONE_GEMM_ENGINES:-}" ] && [ -e .gpu/bin/test-test-gpu_gemm_layout ]; then
  passing=""
  for engine in native wgmma wgmma-ws cublas; do
    if log=$(BONE_GEMM_ENGINES=$engine timeout 120 .gpu/bin/test-test-gpu_gemm_layout gpu_every_gemm_engine 2>&1); then
      passing="$passing,$engine"; echo "   engine $engine: exact-layout test passed"
    elif grep -q "this device runs" <<<"$log"; then
      echo "   engine $engine: not on this device"
    else
      echo "!! engine $engine FAILED its exact-layout test: left out of this run (log: smoke-$engine.log)"
      echo "$log" > "$OUT/smoke-$engine.log"; fail=1
    fi
  done
  export BONE_GEMM_ENGINES=${passing#,}
  echo "   BONE_GEMM_ENGINES=$BONE_GEMM_ENGINES" | tee -a "$OUT/gpu.txt"
fi
if [ "$mode" = all ] || [ "$mode" = tests ]; then
  # Only the GPU tests (named gpu_*): the CPU ones ran in CI, and some read fixtures by path.
  # The binaries run at once (each its own process, log and time limit): several spend
  # most of their time in the f64 oracle on the host, which the machine's 16 cores run
  # side by side, so the phase takes about as long as its longest binary. TEST_JOBS=1
  # runs them one after another.
  tests=()
  for t in .gpu/bin/test-test-gpu_* .gpu/bin/test-test-adapter_files .gpu/bin/test-test-demo_training; do
    [ -e "$t" ] && tests+=("$t")
  done
  started=$SECONDS
  for t in "${tests[@]}"; do
    name=$(basename "$t")
    (
      begun=$SECONDS
      timeout "${TEST_TIMEOUT:-360}" "$t" gpu_ --nocapture > "$OUT/$name.log" 2>&1
      echo "$? $((SECONDS - begun))" > "$OUT/$name.rc"
    ) &
    [ "${TEST_JOBS:-0}" = 1 ] && wait
  done
  wait
  for t in "${tests[@]}"; do
    name=$(basename "$t")
    read -r rc took < "$OUT/$name.rc" || { rc=1; took=?; }
    echo "== $t (exit $rc, $took s)"
    cat "$OUT/$name.log" >> "$OUT/tests.log"
    grep -E '^(test |SKIPPED|.*panicked|.*relative error)|test result' "$OUT/$name.log" | tail -60
    [ "$rc" = 0 ] || fail=1
  done
  echo "   (tests: $((SECONDS - started)) s)"
fi
if [ "$mode" = all ] || [ "$mode" = benches ]; then
  started=$SECONDS
  timeout "${BENCH_TIMEOUT:-400}" .gpu/bin/bench-layers --bench ${BENCH_FILTER:-} 2>&1 | tee "$OUT/bench.log" | grep -E '^(memory|SKIPPED)|time:' | tail -80 || fail=1
  echo "   (layer benches: $((SECONDS - started)) s)"; started=$SECONDS
  timeout "${PEFT_TIMEOUT:-150}" python3 benches/peft_side_by_side.py --out "$OUT/peft.json" ${QUICK:+--quick} 2>&1 | tee "$OUT/peft.log" | tail -30 || fail=1
  echo "   (PEFT side-by-side: $((SECONDS - started)) s)"
  python3 benches/summarize.py "$OUT/criterion" "$OUT/peft.json" "$OUT/bench.log" | tee "$OUT/summary.txt"
fi
echo "run_gpu finished, fail=$fail"
exit $fail
