#!/bin/bash
# Packs what benches/run_gpu.sh runs, and nothing else: ../shared/tools/gpu-pack builds
# every test and bench binary into .gpu/ (near the device tool's 64 MiB carry limit),
# then this keeps only the GPU tests, the adapter-file and demo tests (their gpu_ ones), the layer bench and the
# runner. Then, on the device tool: command "bash benches/run_gpu.sh", carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
../shared/tools/gpu-pack "$@"
for binary in .gpu/bin/*; do
  case "$(basename "$binary")" in
    test-test-gpu_* | test-test-adapter_files | test-test-demo_training | bench-layers) ;;
    *) rm -f "$binary" ;;
  esac
done
du -sh .gpu
