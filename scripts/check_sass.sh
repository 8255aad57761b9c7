#!/usr/bin/env bash
# Reads the SASS of the fatbin build.rs embedded (cuobjdump from scripts/install-nvcc):
# every mma.sync GEMM kernel (bone_gemm_*) must use tensor cores (HMMA) on every
# architecture, every wgmma GEMM kernel (bone_wgmma_*) must use HGMMA on sm_90a (elsewhere
# it is a stub that traps), and no kernel may touch local memory (LDL/STL: spills or
# stack arrays).
#   scripts/check_sass.sh [path/to/bone_kernels.fatbin]   (default: the newest under target/)
set -euo pipefail
fatbin=${1:-$(ls -t target/*/build/bone-kernels-*/out/bone_kernels.fatbin 2>/dev/null | head -1)}
[ -n "$fatbin" ] && [ -f "$fatbin" ] || { echo "check_sass: no fatbin (build with nvcc on PATH first)" >&2; exit 1; }
sass=$(cuobjdump -sass "$fatbin")
status=0
for arch in sm_80 sm_89 sm_90a; do
  arch_sass=$(awk -v a="arch = $arch" '/^[[:space:]]*arch = /{on = index($0, a) > 0} on' <<<"$sass")
  gemms=$(grep -oE 'Function : bone_gemm_[a-z0-9_]+' <<<"$arch_sass" | awk '{print $3}' | sort -u)
  [ -n "$gemms" ] || { echo "check_sass: no GEMM kernels for $arch" >&2; status=1; }
  for f in $gemms; do
    count=$(awk -v f="Function : $f" '/Function : /{on = ($0 ~ f"$")} on' <<<"$arch_sass" | grep -c HMMA || true)
    if [ "$count" -eq 0 ]; then echo "check_sass: $arch $f has no HMMA" >&2; status=1; else echo "$arch $f: $count HMMA"; fi
  done
  if [ "$arch" = sm_90a ]; then
    wgmmas=$(grep -oE 'Function : bone_wgmma_[a-z0-9_]+' <<<"$arch_sass" | awk '{print $3}' | sort -u)
    [ -n "$wgmmas" ] || { echo "check_sass: no wgmma GEMM kernels for sm_90a" >&2; status=1; }
    for f in $wgmmas; do
      count=$(awk -v f="Function : $f" '/Function : /{on = ($0 ~ f"$")} on' <<<"$arch_sass" | grep -c HGMMA || true)
      if [ "$count" -eq 0 ]; then echo "check_sass: sm_90a $f has no HGMMA" >&2; status=1; else echo "sm_90a $f: $count HGMMA"; fi
    done
  fi
  if grep -qE '\b(LDL|STL)\b' <<<"$arch_sass"; then echo "check_sass: local memory traffic (LDL/STL) on $arch" >&2; status=1; fi
done
exit $status
