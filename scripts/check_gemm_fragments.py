# Checks the index arithmetic of kernels/gemm.cuh without a GPU. It re-runs the kernel's
# own logic in Python, line for line: load_tile (16-byte chunks, zero-fill masking), the
# cp.async pipeline (commit groups and wait_group counts), the loop over the concatenated K
# of both products, a_fragment / b_fragments with the PTX ISA semantics of ldmatrix (.trans),
# mma.m16n8k16's fragment layouts, batching by grid.z, and the masked epilogue with bias and
# accumulate; for all four operand layouts on problem sizes with ragged edges, against a
# direct product. The pipeline runs twice: with every copy landing as soon as it is issued
# (a stage overwritten while still being read shows) and as late as wait_group allows (a
# stage read before its copy has landed shows). Barriers are not modelled: check them by eye.
# Mirror any change to gemm.cuh here.
# Needs numpy:  python3 scripts/check_gemm_fragments.py
import numpy as np

BM = BN = 128; BK = 32; PAD = 8; KP = BK + PAD; MP = BM + PAD; THREADS = 256
rng = np.random.default_rng(0)


def ldmatrix(tile, addrs, trans):
    """regs[lane][i] = the two elements lane receives from 8x8 matrix i (rows from lanes 8i..8i+7)."""
    out = [[None] * 4 for _ in range(32)]
    for i in range(4):
        m = np.array([tile[addrs[8 * i + j]:addrs[8 * i + j] + 8] for j in range(8)])
        for t in range(32):
            out[t][i] = (m[t // 4, 2 * (t % 4)], m[t // 4, 2 * (t % 4) + 1]) if not trans else \
                        (m[2 * (t % 4), t // 4], m[2 * (t % 4) + 1, t // 4])
    return out


def a_fragment(tile, layout, m0, k0):
    if layout == "K":
        addrs = [(m0 + lane % 16) * KP + k0 + (lane // 16) * 8 for lane in range(32)]
    else:
        addrs = [(k0 + lane % 8 + (lane // 16) * 8) * MP + m0 + ((lane // 8) % 2) * 8 for lane in range(32)]
    return ldmatrix(tile, addrs, layout != "K")


def b_fragments(tile, layout, n0, k0):
    if layout == "K":
        addrs = [(n0 + lane % 8 + (lane // 16) * 8) * KP + k0 + ((lane // 8) % 2) * 8 for lane in range(32)]
    else:
        addrs = [(k0 + lane % 8 + ((lane // 8) % 2) * 8) * MP + n0 + (lane // 16) * 8 for lane in range(32)]
    return ldmatrix(tile, addrs, layout != "K")


def mma(acc, a, b0, b1):
    """acc[lane] = [c0..c3] += A (16x16 from a) x B (16x8 from b0, b1)."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for t in range(32):
        g, q = t // 4, t % 4
        for reg, (r, c) in enumerate([(g, 2 * q), (g + 8, 2 * q), (g, 2 * q + 8), (g + 8, 2 * q + 8)]):
            A[r, c], A[r, c + 1] = a[t][reg]
        B[2 * q, g], B[2 * q + 1, g] = b0[t]
        B[2 * q + 8, g], B[2 * q + 9, g] = b1[t]
    C = A @ B
    for t in range(32):
        g, q = t // 4, t % 4
        acc[t][0] += C[g, 2 * q]; acc[t][1] += C[g, 2 * q + 1]
        acc[t][2] += C[g + 8, 2 * q]; acc[t][3] += C[g + 8, 2 * q + 1]


class Copies:
    """cp.async: copies join the open group; commit closes it; wait(n) lands all but the
    newest n groups. `eager` lands every copy at issue instead (the earliest it may)."""

    def __init__(self, eager):
        self.eager, self.open, self.groups = eager, [], []

    def copy(self, tile, dst, values):
        if self.eager:
            tile[dst:dst + 8] = values
        else:
            self.open.append((tile, dst, np.array(values, dtype=float)))

    def commit(self):
        self.groups.append(self.open)
        self.open = []

    def wait(self, newest_pending):
        while len(self.groups) > newest_pending:
            for tile, dst, values in self.groups.pop(0):
                tile[dst:dst + 8] = values


def load_tile(copies, tile, layout, src, base, ld, rows_total, k_total, row0, k0):
    chunks = BM * BK // 8
    for c in range(chunks):  # every thread's chunks, threadIdx.x + j * THREADS
        if layout == "K":
            row, kc = c // (BK // 8), (c % (BK // 8)) * 8
            grow, gk = row0 + row, k0 + kc
            valid = grow < rows_total and gk < k_total
            dst = row * KP + kc
            copies.copy(tile, dst, src[base + grow * ld + gk: base + grow * ld + gk + 8] if valid else np.zeros(8))
        else:
            kr, rc = c // (BM // 8), (c % (BM // 8)) * 8
            gk, grow = k0 + kr, row0 + rc
            valid = gk < k_total and grow < rows_total
            dst = kr * MP + rc
            copies.copy(tile, dst, src[base + gk * ld + grow: base + gk * ld + grow + 8] if valid else np.zeros(8))


def gemm(la, lb, p, memory, batches, eager):
    """Runs every CTA of the kernel over `memory` (dict name -> flat array)."""
    tiles1, tiles2 = -(-p["k"] // BK), -(-p["k2"] // BK)
    tiles = tiles1 + tiles2
    for z in range(batches):
        for by in range(-(-p["m"] // BM)):
            for bx in range(-(-p["n"] // BN)):
                block_m, block_n = by * BM, bx * BN
                acc = {(w, i, j): [[0.0] * 4 for _ in range(32)] for w in range(8) for i in range(4) for j in range(4)}
                # Shared memory starts as garbage: NaN shows any read of a copy not yet landed.
                a_tiles = [np.full(BM * KP, np.nan) for _ in range(2)]
                b_tiles = [np.full(BM * KP, np.nan) for _ in range(2)]
                copies = Copies(eager)

                def load(t, stage):
                    first = t < tiles1
                    k0 = (t if first else t - tiles1) * BK
                    k_total = p["k"] if first else p["k2"]
                    a, lda, sta = ("a", p["lda"], p["stride_a"]) if first else ("a2", p["lda2"], p["stride_a2"])
                    b, ldb, stb = ("b", p["ldb"], p["stride_b"]) if first else ("b2", p["ldb2"], p["stride_b2"])
                    load_tile(copies, a_tiles[stage], la, memory[a], z * sta, lda, p["m"], k_total, block_m, k0)
                    load_tile(copies, b_tiles[stage], lb, memory[b], z * stb, ldb, p["n"], k_total, block_n, k0)

                if tiles > 0:
                    load(0, 0)
                copies.commit()
                for t in range(tiles):
                    stage = t % 2
                    if t + 1 < tiles:
                        load(t + 1, (t + 1) % 2)
                    copies.commit()
                    copies.wait(1)  # tile t has landed; t + 1 may still be in flight
                    sa, sb = a_tiles[stage], b_tiles[stage]
                    for w in range(8):
                        wm, wn = (w // 4) * 64, (w % 4) * 32
                        for ks in range(0, BK, 16):
                            af = [a_fragment(sa, la, wm + i * 16, ks) for i in range(4)]
                            bf = [b_fragments(sb, lb, wn + j * 16, ks) for j in range(2)]
                            for i in range(4):
                                for j in range(4):
                                    b0 = [bf[j // 2][l][(j % 2) * 2] for l in range(32)]
                                    b1 = [bf[j // 2][l][(j % 2) * 2 + 1] for l in range(32)]
                                    mma(acc[(w, i, j)], af[i], b0, b1)
                c = memory["c"]
                for w in range(8):
                    wm, wn = (w // 4) * 64, (w % 4) * 32
                    for i in range(4):
                        for j in range(4):
                            for lane in range(32):
                                for e in range(4):
                                    row = block_m + wm + i * 16 + lane // 4 + (e // 2) * 8
                                    col = block_n + wn + j * 8 + (lane % 4) * 2 + (e % 2)
                                    if row < p["m"] and col < p["n"]:
                                        v = acc[(w, i, j)][lane][e] + (memory["bias"][col] if p["bias"] else 0.0)
                                        idx = z * p["stride_c"] + row * p["ldc"] + col
                                        c[idx] = c[idx] + v if p["accumulate"] else v


def stored(layout, logical, ld, rows_first):
    """A logical [rows, k] operand stored K-major ([rows][k], ld) or MN-major ([k][rows], ld)."""
    rows, k = logical.shape
    if layout == "K":
        buf = np.full((rows, ld), np.nan); buf[:, :k] = logical
    else:
        buf = np.full((k, ld), np.nan); buf[:, :rows] = logical.T
    return buf


def check(la, lb):
    m, n, k, k2, batches = 200, 136, 40, 16, 2  # ragged against 128 x 128 x 32 tiles
    pads = 8  # leading dimensions beyond the extent (multiples of 8), NaN-filled so reads past them show
    A = rng.standard_normal((batches, m, k)); B = rng.standard_normal((batches, n, k))
    A2 = rng.standard_normal((batches, m, k2)); B2 = rng.standard_normal((batches, n, k2))
    bias = rng.standard_normal(n); c0 = rng.standard_normal((batches, m, n + pads))
    memory = {}
    p = {"m": m, "n": n, "k": k, "k2": k2, "bias": True, "accumulate": True}
    for name, logical, layout, extent in [("a", A, la, (m, k)), ("b", B, lb, (n, k)), ("a2", A2, la, (m, k2)), ("b2", B2, lb, (n, k2))]:
        rows, kk = extent
        ld = (kk if layout == "K" else rows) + pads
        bufs = [stored(layout, logical[z], ld, True) for z in range(batches)]
        memory[name] = np.concatenate([b.ravel() for b in bufs] + [np.full(64, np.nan)])
        p["ld" + name] = ld
        p["stride_" + name] = bufs[0].size
    memory["bias"] = bias
    memory["c"] = c0.ravel().copy()
    p["ldc"] = n + pads; p["stride_c"] = m * (n + pads)
    want = c0.copy()
    for z in range(batches):
        want[z, :, :n] += A[z] @ B[z].T + A2[z] @ B2[z].T + bias
    for eager in (True, False):
        memory["c"] = c0.ravel().copy()
        gemm(la, lb, p, memory, batches, eager)
        got = memory["c"].reshape(batches, m, n + pads)
        when = "eager" if eager else "late"
        assert np.allclose(got, want, atol=1e-9), f"A {la}-major, B {lb}-major, {when} copies: max error {np.nanmax(np.abs(got - want))}"
    print(f"A {la}-major, B {lb}-major: every CTA of a ragged batched two-product GEMM matches the direct product (copies eager and late)")


for la in "KM":
    for lb in "KM":
        check(la, lb)
