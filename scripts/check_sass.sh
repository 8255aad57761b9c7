#!/usr/bin/env bash
# Reads the SASS of the fatbin build.rs embedded (cuobjdump from scripts/install-nvcc):
# every mma.sync GEMM kernel (bone_gemm_*) and BatCol's fused dB kernel on it
# (bone_bat_col_grads_x_*) must use tensor cores (HMMA) on every architecture, every wgmma
# kernel (bone_wgmma_*, bone_bat_col_grads_wgmma_*, bone_bat_col_grads_ws_*) must use HGMMA on sm_90a (elsewhere
# it is a stub that traps), no kernel may touch local memory (LDL/STL: spills or stack
# arrays), and each GEMM's main loop stays within a budget of instructions per K step
# (scripts/sass_main_loops.py; measured 116-131 for mma.sync, 153-228 for wgmma, 60-64 for
# the warp-specialised wgmma GEMM's computing warps, which issue no copies).
#   scripts/check_sass.sh [path/to/bone_kernels.fatbin]   (default: the newest under target/)
set -euo pipefail
fatbin=${1:-$(ls -t target/*/build/bone-kernels-*/out/bone_kernels.fatbin 2>/dev/null | head -1)}
[ -n "$fatbin" ] && [ -f "$fatbin" ] || { echo "check_sass: no fatbin (build with nvcc on PATH first)" >&2; exit 1; }
sass=$(cuobjdump -sass "$fatbin")
status=0

# require ARCH SASS PREFIX INSTRUCTION: every kernel named PREFIX* in SASS uses INSTRUCTION.
require() {
  local arch=$1 arch_sass=$2 prefix=$3 instruction=$4 kernels f count
  kernels=$(grep -oE "Function : ${prefix}[a-z0-9_]+" <<<"$arch_sass" | awk '{print $3}' | sort -u)
  [ -n "$kernels" ] || { echo "check_sass: no ${prefix}* kernels for $arch" >&2; status=1; }
  for f in $kernels; do
    count=$(awk -v f="Function : $f" '/Function : /{on = ($0 ~ f"$")} on' <<<"$arch_sass" | grep -c "$instruction" || true)
    if [ "$count" -eq 0 ]; then echo "check_sass: $arch $f has no $instruction" >&2; status=1; else echo "$arch $f: $count $instruction"; fi
  done
}

for arch in sm_80 sm_89 sm_90a; do
  arch_sass=$(awk -v a="arch = $arch" '/^[[:space:]]*arch = /{on = index($0, a) > 0} on' <<<"$sass")
  require "$arch" "$arch_sass" bone_gemm_ HMMA
  require "$arch" "$arch_sass" bone_bat_col_grads_x_ HMMA
  [ "$arch" != sm_90a ] || require "$arch" "$arch_sass" bone_wgmma_ HGMMA
  [ "$arch" != sm_90a ] || require "$arch" "$arch_sass" bone_bat_col_grads_wgmma_ HGMMA
  [ "$arch" != sm_90a ] || require "$arch" "$arch_sass" bone_bat_col_grads_ws_ HGMMA
  python3 "$(dirname "$0")/sass_main_loops.py" bone_gemm_=150 bone_wgmma_=230 bone_wgmma_wide_=270 \
    bone_wgmma_narrow_=200 bone_wgmma_ws_=80 <<<"$arch_sass" | grep -v '^bone_bat_col' || status=1
  if grep -qE '\b(LDL|STL)\b' <<<"$arch_sass"; then echo "check_sass: local memory traffic (LDL/STL) on $arch" >&2; status=1; fi
done
exit $status
