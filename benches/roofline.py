"""The two numbers before any measurement: for each bench shape and path, the time the
arithmetic alone needs at the H200's bf16 matrix rate and the time its tensors need at the
memory bandwidth; the larger is the floor no implementation beats. benches/summarize.py
prints each measured time against it (roof%).

Ceilings: 790 TFLOP/s (an 8192^3 bf16 product on random data) and 4.3 TB/s (a device to
device copy, bytes read plus written), both measured on this workplace's H200s
(see the device tool's KINDS.md); override with --tflops / --tbps.

Counts, per path (bf16 operands, 2 bytes; T tokens, W is N x K, block r, LoRA rank q = r/2):
  every large product  2 T N K flops; reads its two operands and writes its output once
  floor/fwd    1 product                       floor2/fwd_bwd  2      floor3/fwd_bwd  3
  lora         1 (fwd) or 2 (fwd_bwd) products, plus 2 T q (K + N) flops per adapter
               product: 2 forward, 4 more backward
  shared/mini  1 or 2 products, plus the r-wide term: 2 T N r forward; dX's and dB's
               2 T N r each backward
  bat-row      1 or 2 products, plus X (I + B)^T and R: 4 T K r forward; the block products
               of dX and dB: 6 T K r backward
  bat-col      1 or 3 products (dB needs dY^T X's blocks), plus W' = W (I + B) + B: 2 N K r
               once per pass, and dB's block products: 2 N K r
  plan         as bat-col
Suffixes (+wgmma, +cublas) name engines of the same path: same floor.

That floor holds for any implementation of the method. BatCol's own launch sequences
(src/cuda/bat_col.rs) pass W' (and, on cuBLAS, G) through memory, N x K bf16 values
written and read again each pass, so each has a higher floor: the sum over its launches of
the larger of each launch's arithmetic and memory times (a memory-bound launch cannot hide
behind the next one on a stream). The second table gives them:
  fused dB   the crate's GEMMs: W' slabs, X W'^T; then dB's fused kernel (G in shared
             memory), W' slabs again, dY W'
  cublas     the cuBLAS engine: as above, but G = dY^T X written per slab, then dB's block
             products read it back, and its chunk sums again, or below N K / (N + K)
             tokens dY^T S instead (S from a read of X)
  plan       the cuBLAS BatCol plan (src/cuda/baseline/plan.rs): the same launches, W'
             and G whole

  python3 benches/roofline.py            # both tables for every bench shape
"""

import argparse
import math
import re

TFLOPS, TBPS = 790.0, 4.3
ELEMENT = 2


def shape_of(group):
    """(N, K, T, r) from a criterion group name like 11008x4096/T512/r64."""
    n, k, t, r = map(int, re.match(r"(\d+)x(\d+)/T(\d+)/r(\d+)", group).groups())
    return n, k, t, r


def counts(group, path, pass_):
    """(flops, bytes) the path needs at least."""
    n, k, t, r = shape_of(group)
    base = path.split("+")[0]
    backward = pass_ == "fwd_bwd"
    products = {"floor": 1, "floor2": 2, "floor3": 3, "bat-col": 3, "plan": 3}.get(base, 2) if backward else 1
    flops = products * 2.0 * t * n * k
    q = r // 2
    extra = {
        "lora": 2 * t * q * (k + n) * (3 if backward else 1),
        "shared": 2 * t * n * r * (3 if backward else 1),
        "mini": 2 * t * n * r * (3 if backward else 1),
        "bat-row": 4 * t * k * r + (6 * t * k * r if backward else 0),
        "bat-col": 2 * n * k * r * (3 if backward else 1),
        "plan": 2 * n * k * r * (3 if backward else 1),
    }
    flops += extra.get(base, 0)
    bytes_ = products * ELEMENT * (t * k + n * k + t * n)
    return flops, bytes_


def floor_seconds(group, path, pass_, tflops=TFLOPS, tbps=TBPS):
    flops, bytes_ = counts(group, path, pass_)
    return max(flops / (tflops * 1e12), bytes_ / (tbps * 1e12))


# src/cuda/bat_col.rs: a W' (or G) slab's bytes, and the fewest tokens of dX per chunk
# where W' takes several slabs.
SLAB_BYTES = 32 << 20
DX_CHUNK_MIN_TOKENS = 4096


def product(m, n, k, out_bytes=ELEMENT):
    """(flops, bytes) of one [m, k] x [k, n] product of bf16 operands."""
    return 2.0 * m * n * k, ELEMENT * (m * k + n * k) + out_bytes * m * n


def bat_col_launches(group, sequence, backward):
    """(flops, bytes) of each step of BatCol's launch sequence `sequence` (fused dB, cublas
    or plan), each slab's launches of one kind taken together (they are bound alike)."""
    n, k, t, r = shape_of(group)
    unit = max(r, 128)
    rows = n if sequence == "plan" else min(max(SLAB_BYTES // (2 * k) // unit * unit, unit), n)
    slabs = math.ceil(n / rows)
    form = (2.0 * n * k * r, 2 * ELEMENT * n * k)  # every slab of W': W read, W' written
    launches = [form, product(t, n, k)]
    if not backward:
        return launches
    if sequence == "fused dB":
        launches.append((2.0 * t * n * k + 2.0 * n * k * r, ELEMENT * (t * n + t * k + n * k)))
    else:  # G = dY^T X written, W_o^T G_o read with W, then the identity term sum_i G_{o,i}
        launches += [product(n, k, t), (2.0 * n * k * r, 2 * ELEMENT * n * k)]
        if sequence == "cublas" and t * (n + k) < n * k:  # dY^T S, S = sum_i X_i from a read of X
            launches += [(0.0, ELEMENT * t * (k + r)), product(n, r, t, out_bytes=2 * 4)]
        else:  # G's chunk sums, a read of G
            launches.append((1.0 * n * k, ELEMENT * n * k))
    if slabs == 1:
        return launches + [form, product(t, k, n)]
    # dX a chunk of tokens at a time over the slabs, summed in f32 (read and written per
    # slab), then rounded; each chunk after the first forms all but one slab again.
    chunks = math.ceil(t / min(max(2 * SLAB_BYTES // (4 * k), DX_CHUNK_MIN_TOKENS), t))
    reformed = (slabs + (chunks - 1) * (slabs - 1)) / slabs
    dx = product(t, k, n, out_bytes=0)
    return launches + [
        (form[0] * reformed, form[1] * reformed),
        (dx[0], dx[1] + slabs * 2 * 4 * t * k),
        (0.0, (4 + ELEMENT) * t * k),
    ]


def sequence_seconds(group, sequence, pass_, tflops=TFLOPS, tbps=TBPS):
    """The floor of BatCol's launch sequence: each launch at its own bound."""
    launches = bat_col_launches(group, sequence, pass_ == "fwd_bwd")
    return sum(max(f / (tflops * 1e12), b / (tbps * 1e12)) for f, b in launches)


def bench_groups():
    """The shapes benches/layers.rs runs."""
    groups = [f"{n}x{k}/T{t}/r64" for n, k in [(4096, 4096), (11008, 4096), (4096, 11008)] for t in (512, 4096)]
    return groups + [f"4096x4096/T4096/r{r}" for r in (16, 32, 128)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflops", type=float, default=TFLOPS)
    parser.add_argument("--tbps", type=float, default=TBPS)
    args = parser.parse_args()
    paths = ["floor", "floor2", "floor3", "lora", "shared", "mini", "bat-row", "bat-col"]
    print(f"floors in ms at {args.tflops:.0f} TFLOP/s and {args.tbps:.1f} TB/s (c: arithmetic-bound, m: memory-bound)")
    print(f"{'layer':22} {'pass':8} " + " ".join(f"{p:>9}" for p in paths))
    for group in bench_groups():
        for pass_ in ("fwd", "fwd_bwd"):
            cells = []
            for path in paths:
                if path in ("floor2", "floor3") and pass_ == "fwd" or path == "floor" and pass_ == "fwd_bwd":
                    cells.append(f"{'-':>9}")
                    continue
                flops, bytes_ = counts(group, path, pass_)
                compute, memory = flops / (args.tflops * 1e12), bytes_ / (args.tbps * 1e12)
                cells.append(f"{max(compute, memory) * 1e3:8.3f}{'c' if compute >= memory else 'm'}")
            print(f"{group:22} {pass_:8} " + " ".join(cells))
    sequences = ["fused dB", "cublas", "plan"]
    print(f"\nBatCol's launch sequences, forward + backward: floor in ms (x floor3)")
    print(f"{'layer':22} {'method':>15} " + " ".join(f"{s:>15}" for s in sequences))
    for group in bench_groups():
        floor3 = floor_seconds(group, "floor3", "fwd_bwd", args.tflops, args.tbps)
        cell = lambda seconds: f"{seconds * 1e3:8.3f} ({seconds / floor3:4.2f}x)"
        method = floor_seconds(group, "bat-col", "fwd_bwd", args.tflops, args.tbps)
        cells = [cell(sequence_seconds(group, s, "fwd_bwd", args.tflops, args.tbps)) for s in sequences]
        print(f"{group:22} {cell(method)} " + " ".join(cells))


if __name__ == "__main__":
    main()
