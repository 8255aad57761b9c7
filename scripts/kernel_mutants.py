#!/usr/bin/env python3
"""Mutation testing of the CUDA kernels against the CPU-run tests (host-kernels/).

Each mutant is one small, deliberate fault in a kernel source (a bound off by one, a
barrier or wait removed, a term dropped, a shared-memory layout whose accesses conflict
in the banks) or in the Rust that sizes their workspace. For
each, the script applies it to a clean copy of the tree, runs the library's tests (which
run the kernel sources on the CPU against the oracle), and says whether a test failed
(the mutant is "killed") or all passed ("SURVIVED": the tests cannot tell that kernel
from the right one, so either the fault is harmless there or a test is missing). Nothing
in the working tree is touched.

  python3 scripts/kernel_mutants.py [--list] [--only NAME,...] [--keep DIR]

--keep DIR keeps the copy (brought to HEAD on the next run, its build reused) and each
mutant's test log there.

2 to 5 minutes a mutant on 2 cores (a rebuild of the host kernels, then the tests); not
run by CI. No nvcc is needed: the tests under test are the CPU runs.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

# (name, file, text, replacement, what the fault is). Each text must occur exactly once in
# its file. Most are in the kernels; a few (src/...) in the Rust that plans their launches
# and sizes their workspace.
MUTANTS = [
    # The GEMMs' shared parts (gemm_common.cuh).
    ("tile-group-rows", "kernels/gemm_common.cuh",
     "const int rows = min(tiles_m - first_m, GROUP_M);", "const int rows = GROUP_M;",
     "the last group of tile rows taken as whole"),
    ("copy-k-unmasked", "kernels/gemm_common.cuh",
     "row + i * ROW_STEP < rows_total && k + i * K_STEP < k_total",
     "row + i * ROW_STEP < rows_total",
     "loads past a product's K not zeroed"),
    ("copy-rows-unmasked", "kernels/gemm_common.cuh",
     "row + i * ROW_STEP < rows_total && k + i * K_STEP < k_total",
     "k + i * K_STEP < k_total",
     "loads past an operand's rows not zeroed"),
    ("copy-rows-one-past", "kernels/gemm_common.cuh",
     "row + i * ROW_STEP < rows_total &&", "row + i * ROW_STEP <= rows_total &&",
     "a tile's copies read one row (or 8-row chunk) past an operand, into rows never stored"),
    ("store-columns-unmasked", "kernels/gemm_common.cuh",
     "if (row >= m || col >= n) return;", "if (row >= m) return;",
     "outputs past N stored"),
    ("split-k-end", "kernels/gemm_common.cuh",
     "end1 = p.split_k > 0 ? min(p.k, k_begin + p.split_k) : p.k;",
     "end1 = p.split_k > 0 ? k_begin + p.split_k : p.k;",
     "a split chunk of the first product runs past its K"),
    ("addend-pair", "kernels/gemm_common.cuh",
     "v1 += to_f32(addend[idx + 1]);", "v1 += to_f32(addend[idx]);",
     "the second of a pair takes the first's addend"),
    ("bias-pair", "kernels/gemm_common.cuh",
     "v1 += to_f32(bias[col + 1]);", "v1 += to_f32(bias[col]);",
     "the second of a pair takes the first's bias"),
    ("accumulate-pair", "kernels/gemm_common.cuh",
     "v1 += to_f32(c[idx + 1]);", "v1 += to_f32(c[idx]);",
     "the second of a pair accumulates onto the first's value"),
    # mma.sync GEMM (gemm.cuh).
    ("mma-copy-wait", "kernels/gemm.cuh",
     "copy_wait<STAGES - 2>();", "copy_wait<STAGES - 1>();",
     "a tile read before its copies land"),
    ("mma-step-barrier", "kernels/gemm.cuh",
     "        __syncthreads();  // everyone's copies of tile t; every warp is done with tile t - 1\n", "",
     "no barrier between a stage's copies and its reads"),
    ("mma-copy-along-rows", "kernels/gemm.cuh",
     "const int row = c / (8 * ROW_CHUNKS) * 8 + c % 8, k = (c / 8 % ROW_CHUNKS) * 8;",
     "const int row = c / ROW_CHUNKS, k = c % ROW_CHUNKS * 8;",
     "K-major tile copies along rows: right answers, two bank passes a copy (speed only)"),
    ("mma-trans-fragment", "kernels/gemm.cuh",
     "m = m0 + ((lane / 8) % 2) * 8;", "m = m0 + ((lane / 16) % 2) * 8;",
     "an MN-major A fragment's rows from the wrong lanes"),
    # wgmma GEMM (gemm_wgmma.cuh).
    ("wgmma-copy-wait", "kernels/gemm_wgmma.cuh",
     "copy_wait<STAGES - 3>();", "copy_wait<STAGES - 2>();",
     "a tile read before its copies land"),
    ("wgmma-group-in-flight", "kernels/gemm_wgmma.cuh",
     "wgmma_wait<1>();  // tile t - 1's group", "wgmma_wait<2>();  // tile t - 1's group",
     "a stage refilled while a product still reads it"),
    ("wgmma-proxy-fence", "kernels/gemm_wgmma.cuh",
     "        fence_proxy_async();  // this thread's copies, visible to wgmma's async proxy\n", "",
     "generic-proxy copies not fenced before wgmma reads them"),
    # Warp-specialised wgmma GEMM (gemm_wgmma_ws.cuh).
    ("ws-empty-parity", "kernels/gemm_wgmma_ws.cuh",
     "mbarrier_wait(&empty[ring.stage], ring.phase ^ 1);", "mbarrier_wait(&empty[ring.stage], ring.phase);",
     "loaders wait for the wrong use of a stage"),
    ("ws-group-in-flight", "kernels/gemm_wgmma_ws.cuh",
     "wgmma_wait<1>();  // the step before's", "wgmma_wait<2>();  // the step before's",
     "a stage released while a product still reads it"),
    ("ws-release-early", "kernels/gemm_wgmma_ws.cuh",
     "if (t > 0) mbarrier_arrive(&empty[previous]);", "mbarrier_arrive(&empty[ring.stage]);",
     "a stage released as soon as its products are queued"),
    # BatCol's fused dB kernel (bat_col_grads.cu).
    ("dB-identity-term", "kernels/bat_col_grads.cu",
     "db[j][e] += to_f32(g.v[0]);\n                db[j][e + 1] += to_f32(g.v[1]);", "",
     "the identity's term sum_i G_{o,i} dropped"),
    ("dB-identity-pair-swapped", "kernels/bat_col_grads.cu",
     "db[j][e] += to_f32(g.v[0]);\n                db[j][e + 1] += to_f32(g.v[1]);",
     "db[j][e] += to_f32(g.v[1]);\n                db[j][e + 1] += to_f32(g.v[0]);",
     "the identity's term added with a pair's two columns swapped"),
    ("dB-rows-unmasked", "kernels/bat_col_grads.cu",
     "if (row >= n) continue;", "",
     "partial sums stored for rows past N"),
    ("dB-ws-g-stored", "kernels/bat_col_grads.cu",
     "mbarrier_wait(g_sync, 0);", "",
     "G's tile read before every warp stored its part"),
    ("dB-ws-w-landed", "kernels/bat_col_grads.cu",
     "mbarrier_wait(w_full, w_phase);  // ... and W's landed", "",
     "W's tile read before its copies land"),
    ("dB-ws-g-read", "kernels/bat_col_grads.cu",
     "mbarrier_wait(g_sync, 1);", "",
     "the next G tile stored while a warp still reads this one"),
    ("dB-mma-tile-barrier", "kernels/bat_col_grads.cu",
     "        __syncthreads();  // done with both tiles before the next main loop and W copy refill them\n", "",
     "the next K tile's copies overwrite tiles still being read"),
    # The passes on CUDA cores (adapter_passes.cu).
    ("rows-four-loads", "kernels/adapter_passes.cu",
     "for (; k + 3 * WARP_SPAN < cols; k += 4 * WARP_SPAN)", "for (; k + 3 * WARP_SPAN <= cols; k += 4 * WARP_SPAN)",
     "a row's four-load step reads past the row"),
    ("rows-butterfly", "kernels/adapter_passes.cu",
     "for (int lane_mask = r / 8; lane_mask < 32; lane_mask *= 2)",
     "for (int lane_mask = r / 4; lane_mask < 32; lane_mask *= 2)",
     "the first round of the lanes' butterfly skipped"),
    ("saved-s", "kernels/adapter_passes.cu",
     "if (s_saved != nullptr) store8(s_saved + t * layer.r + j0, out);", "",
     "S not written for the backward"),
    ("dropped-tiles-bound", "kernels/adapter_passes.cu",
     "if (first >= (long long)tokens * layer.k) return;", "if (first > (long long)tokens * layer.k) return;",
     "one group of 8 past dX written"),
    ("dbias-chunk-end", "kernels/adapter_passes.cu",
     "last = min(tokens, first + chunk_len);", "last = first + chunk_len;",
     "dbias reads rows past T"),
    ("mini-fold-first", "kernels/adapter_passes.cu",
     "for (int n = m; n < layer.n; n += layer.mini_r)", "for (int n = m + layer.mini_r; n < layer.n; n += layer.mini_r)",
     "mini's fold drops the first repeat"),
    ("chunks-last", "kernels/adapter_passes.cu",
     "for (; c < count; ++c) sum += p[c * len];", "for (; c + 1 < count; ++c) sum += p[c * len];",
     "a chunked reduction drops its last chunk"),
    ("chunks-bias", "kernels/adapter_passes.cu",
     "(bias ? to_f32(bias[col]) : 0.f)", "0.f",
     "the bias dropped where a chunked product is summed"),
    ("onehot-routing", "kernels/adapter_passes.cu",
     "q / (layer.k / r) == a ? 1.f : 0.f", "q % r == a ? 1.f : 0.f",
     "BatCol's one-hot routes B to the wrong rows"),
    ("bias-columns-lane", "kernels/adapter_passes.cu",
     "lane == layer.r / 8 % 32", "lane == layer.r / 8",
     "no lane writes the bias columns at r = 256"),
    # Merge (merge.cu).
    ("merge-bat-bias", "kernels/merge.cu",
     "acc += to_f32(mixer[(row % r) * r + c]);", "acc += to_f32(mixer[(col % r) * r + c]);",
     "the Bat merge's + B term from the wrong row"),
    ("dB-ws-w-parity", "kernels/bat_col_grads.cu",
     "mbarrier_wait(w_empty, w_phase ^ 1);", "mbarrier_wait(w_empty, w_phase);",
     "W's tile refilled before the last K tile's dB terms are done with it"),
    ("dB-accumulate", "kernels/bat_col_grads.cu",
     "*here = accumulate ? *here + db[j][e] : db[j][e];", "*here = db[j][e];",
     "the fused dB overwrites what it should add to"),
    ("dB-block-rows", "kernels/bat_col_grads.cu",
     "const int o_local = warp * 16 / R, a0 = warp * 16 % R;", "const int o_local = 0, a0 = warp * 16 % R;",
     "every warp takes the first output block's W and G"),
    ("ws-no-steps", "kernels/gemm_wgmma_ws.cuh",
     "if (steps > 0) mbarrier_arrive(&empty[previous]);", "mbarrier_arrive(&empty[previous]);",
     "a tile with no K steps releases a stage it never took"),
    ("batch-second-end", "kernels/gemm_common.cuh",
     "end2 = p.split_k > 0 ? min(p.k2, k_begin + p.split_k) : p.k2;", "end2 = p.k2;",
     "every split chunk runs all of the second product"),
    ("addend-batch", "kernels/gemm_common.cuh",
     "addend(p.addend ? (const TIn*)p.addend + z * p.stride_c : nullptr)", "addend((const TIn*)p.addend)",
     "every batch adds the first batch's addend"),
    ("pack2-order", "kernels/numeric.cuh",
     "return uint32_t(from_f32<T>(lo).bits) | uint32_t(from_f32<T>(hi).bits) << 16;",
     "return uint32_t(from_f32<T>(hi).bits) | uint32_t(from_f32<T>(lo).bits) << 16;",
     "a rounded pair stored swapped"),
    ("dropout-threshold", "kernels/dropout.cuh",
     "bone_dropout_bits(dropout.seed, index) < dropout.threshold", "bone_dropout_bits(dropout.seed, index) <= dropout.threshold",
     "the mask drops an element the trainer's mask keeps (one draw in 2^32)"),
    ("dropout-index", "kernels/dropout.cuh",
     "seed + (index + 1) * 0x9E3779B97F4A7C15ull", "seed + index * 0x9E3779B97F4A7C15ull",
     "the mask drawn for the wrong element"),
    ("dbias-rows", "kernels/adapter_passes.cu",
     "for (int w = 0; w < WARPS; ++w) total += partial[w][c];", "for (int w = 1; w < WARPS; ++w) total += partial[w][c];",
     "dbias drops one warp's sums"),
    ("dbias-warp-rows", "kernels/adapter_passes.cu",
     "add_across_lanes(sum, GROUPS);", "add_across_lanes(sum, 2 * GROUPS);",
     "dbias adds only two of a warp's four rows"),
    ("dbias-sums-in-group-order", "kernels/adapter_passes.cu",
     "high = ((lane / 8) ^ (group / 4)) & 1;", "high = (lane / 8) & 1;",
     "dbias stores its warps' sums in an order that conflicts in the banks"),
    ("mini-fold-accumulate", "kernels/adapter_passes.cu",
     "float sum = held(accumulate, db + idx);", "float sum = 0.f;",
     "mini's dB overwrites what it should add to"),
    ("tiled-identity", "kernels/adapter_passes.cu",
     "a % r == b % r ? 1.f : 0.f", "a % r == b ? 1.f : 0.f",
     "the tiling matrix has one identity block, not one per r columns"),
    ("chunk-sum-add", "kernels/adapter_passes.cu",
     "for (int e = 0; e < 8; ++e) out[e] += sum[e];", "for (int e = 0; e < 8; ++e) out[e] = sum[e];",
     "BatCol's identity term overwrites the block products"),
    ("split-ldc", "src/cuda/token_chunks.rs",
     "let sizes = [chunks, m, n, out.ldc, usize::from(out.accumulate)]", "let sizes = [chunks, m, n, n, usize::from(out.accumulate)]",
     "chunk sums written with the product's width, not C's leading dimension"),
    ("partials-size", "src/cuda/token_chunks.rs",
     "(_, chunks) => chunks * outputs * 4,", "(_, chunks) => (chunks - 1) * outputs * 4,",
     "the workspace one chunk's partial sums short"),
    ("dx-accumulator-size", "src/cuda/bat_col.rs",
     "let dx_f32 = if rows < n { chunk * k * 4 } else { 0 };", "let dx_f32 = if rows < n { chunk * k * 2 } else { 0 };",
     "BatCol's dX accumulator half its size"),
    ("dbias-partials-size", "src/cuda/bias_grad.rs",
     "(_, chunks) => chunks * n * 4,", "(_, chunks) => chunks * n * 2,",
     "dbias's chunk sums half their size"),
    ("wgmma-descriptor-sbo", "kernels/gemm_wgmma.cuh",
     "(uint64_t(GROUP_BYTES >> 4) << 32)", "(uint64_t(CORE_BYTES >> 4) << 32)",
     "wgmma's descriptors step 8-row groups by a core matrix"),
    ("ws-ring-phase", "kernels/gemm_wgmma_ws.cuh",
     "            phase ^= 1;\n", "",
     "the ring's parity never turns over"),
    ("dropout-s-row", "kernels/adapter_passes.cu",
     "bone_dropout_factor(dropout, row + k)", "bone_dropout_factor(dropout, k)",
     "every row of S masked with the first row's mask"),
    ("dbias-strip-end", "kernels/adapter_passes.cu",
     "    if (column < n_out) {", "    if (true) {",
     "dbias reads columns past N (into the next row, and past dY at the last)"),
    ("bias-columns", "kernels/adapter_passes.cu",
     "to_f32(bias[col + e])", "to_f32(bias[col])",
     "the bias added after a library product takes one column's for eight"),
    ("sum-chunks-accumulate", "kernels/adapter_passes.cu",
     "held(accumulate, out) + (bias", "0.f + (bias",
     "chunk sums overwrite the output they should add to"),
    ("from-f32-accumulate", "kernels/adapter_passes.cu",
     "held(accumulate, out + idx) + in[idx]", "in[idx]",
     "BatCol's dX, summed over slabs, overwrites what it should add to"),
    ("identity-choice", "src/cuda/bat_col.rs",
     "unfused && tokens * (layer.k() + layer.n()) < layer.n() * layer.k()",
     "unfused && tokens * (layer.k() + layer.n()) > layer.n() * layer.k()",
     "BatCol's identity term from whichever reads more (same answer, more traffic)"),
    ("merge-mini-repeat", "kernels/merge.cu",
     "b[(col % r) * layer.mini_r + row % layer.mini_r]", "b[(col % r) * layer.mini_r + row / layer.mini_r % layer.mini_r]",
     "mini's block repeated the wrong way along N"),
    ("merge-row-block", "kernels/merge.cu",
     "? row / r : col / r", "? row / r : row / r",
     "BatRow's merge takes B by the output block, as BatCol's does"),
    ("merge-mixer-transposed", "kernels/merge.cu",
     "to_f32(mixer[j * r + c])", "to_f32(mixer[c * r + j])",
     "the Bat merge's W B term with B transposed"),
    ("merge-bound", "kernels/merge.cu",
     "if (idx >= total) return;", "if (idx > total) return;",
     "the merge writes one element past W'"),
    ("shared-blocks-bias-column", "kernels/adapter_passes.cu",
     "*transposed = j == layer.r ? bias[n]", "*transposed = j == layer.r + 1 ? bias[n]",
     "the shared block's bias in the wrong column of Bfull^T"),
    ("tiles-first-group", "kernels/adapter_passes.cu",
     "load8(u + (long long)t * layer.r + k % layer.r)", "load8(u + (long long)t * layer.r)",
     "every group of dX's tiled term takes U's first 8 columns"),
    ("chunk-sum-add-lanes", "kernels/adapter_passes.cu",
     "if (j0 >= layer.r) return;", "if (j0 > layer.r) return;",
     "one lane past r adds its sums into the next row of dB"),
    ("row-stack-transposed", "kernels/adapter_passes.cu",
     "b[((long long)i * r + c) * r + j]", "b[((long long)i * r + j) * r + c]",
     "BatRow's stacked blocks transposed"),
    ("mini-fold-stride", "kernels/adapter_passes.cu",
     "n += layer.mini_r) sum", "n += 2 * layer.mini_r) sum",
     "mini's fold drops every other repeat"),
    ("dbias-store-mask", "kernels/adapter_passes.cu",
     "if (c >= BONE_BIAS_GRAD_COLUMNS || n >= n_out) return;", "if (c >= BONE_BIAS_GRAD_COLUMNS) return;",
     "dbias stores the columns of its last strip past N"),
]

# Mutants the CPU runs cannot kill, and why. Their survival does not fail the script; if
# one is killed, the script says it should leave this list.
CANNOT_KILL = {
    "wgmma-proxy-fence": "the CPU runtime has one memory, so it has no proxies to order (a GPU run "
                         "would need a race to show it, and a missing fence need not race)",
    "ws-no-steps": "equivalent: a layer's tiles all have the same K steps, so where one has none no "
                   "stage is ever loaded in that layer, and releasing one changes nothing",
}


def run_tests(tree, log):
    env = {k: v for k, v in os.environ.items() if k not in ("NVCC", "CUDA_HOME", "CUDA_PATH")}
    env["BONE_REQUIRE_HOST_KERNELS"] = "1"
    env["CARGO_TARGET_DIR"] = os.path.join(tree, "target")
    with open(log, "w") as out:
        done = subprocess.run(["cargo", "test", "--release", "--lib", "--", "--test-threads", "2"], cwd=tree,
                              stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800)
    return done.returncode == 0


def failed_tests(log):
    with open(log) as f:
        return sorted({line.split()[1] for line in f if line.startswith("test ") and line.rstrip().endswith("FAILED")})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", help="comma-separated mutant names")
    ap.add_argument("--keep", help="directory for the clean copy and the logs (default: a temporary one)")
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    chosen = MUTANTS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {m[0] for m in MUTANTS}
        if unknown:
            sys.exit(f"unknown mutants: {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m[0] in names]
    if args.list:
        for name, file, _, _, what in chosen:
            print(f"{name:24} {file:30} {what}")
        return
    work = args.keep or tempfile.mkdtemp(prefix="kernel-mutants-")
    tree = os.path.join(work, "tree")
    if not os.path.exists(tree):
        subprocess.run(["git", "clone", "-q", repo, tree], check=True)
    else:  # a kept copy: brought to the repository's HEAD, its build kept
        subprocess.run(["git", "-C", tree, "fetch", "-q", repo, "HEAD"], check=True)
        subprocess.run(["git", "-C", tree, "reset", "-q", "--hard", "FETCH_HEAD"], check=True)
    for name, file, text, _, _ in chosen:
        count = open(os.path.join(tree, file)).read().count(text)
        if count != 1:
            sys.exit(f"{name}: its text occurs {count} times in {file}, not once")
    print(f"clean copy: {tree} (HEAD of {repo}; uncommitted changes are not in it)")
    started = time.time()
    if not run_tests(tree, os.path.join(work, "clean.log")):
        sys.exit(f"the unmutated tests fail: {os.path.join(work, 'clean.log')}")
    print(f"unmutated: tests pass ({time.time() - started:.0f} s)")
    survivors, expected = [], []
    for name, file, text, replacement, what in chosen:
        path = os.path.join(tree, file)
        original = open(path).read()
        open(path, "w").write(original.replace(text, replacement))
        started = time.time()
        log = os.path.join(work, f"{name}.log")
        try:
            passed = run_tests(tree, log)
        except subprocess.TimeoutExpired:
            passed = False
            open(log, "a").write("\n(timed out)\n")
        finally:
            open(path, "w").write(original)
        took = time.time() - started
        if passed and name in CANNOT_KILL:
            expected.append(name)
            print(f"survived {name:24} as expected: {CANNOT_KILL[name]} ({took:.0f} s)", flush=True)
        elif passed:
            survivors.append(name)
            print(f"SURVIVED {name:24} {what} ({took:.0f} s)", flush=True)
        else:
            caught = failed_tests(log)
            listed = " (listed in CANNOT_KILL: take it out)" if name in CANNOT_KILL else ""
            print(f"killed   {name:24} by {', '.join(caught) or 'the build or a crash'}{listed} ({took:.0f} s)",
                  flush=True)
    print(f"{len(chosen) - len(survivors) - len(expected)} of {len(chosen)} killed, {len(expected)} cannot be here" +
          (f"; SURVIVED: {', '.join(survivors)}" if survivors else ""))
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
