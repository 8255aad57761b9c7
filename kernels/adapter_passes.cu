// The adapter's small passes around the GEMMs, on CUDA cores: the block sum S (one read of
// X), dbias (one read of dY), and O((N + K) r) reshuffles of B into the operands the
// tensor-core GEMMs take, all in the activations' type TX (bf16 or f16). One output
// element per thread, but for the reductions over rows (S and BatCol's chunk sums: a warp
// a row; dbias: see there), f32 accumulation, reductions in a fixed order
// (deterministic). Kernel names end in _x_<TX> (and _b_<B's type> where they read B).
#include "dropout.cuh"
#include "numeric.cuh"
#include "params.h"
#include "ptx.cuh"

__device__ __forceinline__ long long element_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }

// What an output adds to its new value: what it holds where `accumulate` (gradients added
// to, as PyTorch accumulates them), else nothing.
template <typename T>
__device__ __forceinline__ float held(int accumulate, const T* out) {
    return accumulate ? to_f32(*out) : 0.f;
}

// Adds to lane l's 8 sums those of lanes l ^ m, m = first_mask, 2 first_mask, .., 16
// (first_mask a power of two; none where it is 32), by a butterfly of shuffles in a fixed
// order, so the same bits every run: then every lane holds the totals of the lanes that
// differ from it only in those bits.
__device__ __forceinline__ void add_across_lanes(float (&sum)[8], int first_mask) {
    for (int lane_mask = first_mask; lane_mask < 32; lane_mask *= 2) {
        float lo[4] = {sum[0], sum[1], sum[2], sum[3]}, hi[4] = {sum[4], sum[5], sum[6], sum[7]};
        bone_ptx::shfl_xor4(lo, lane_mask);
        bone_ptx::shfl_xor4(hi, lane_mask);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            sum[e] += lo[e];
            sum[4 + e] += hi[e];
        }
    }
}

// The chunk sums of one row, by a warp: on lanes l < r / 8, sum[e] = sum_i factor(k) M[k]
// at k = i r + 8 l + e over the r-wide chunks of `row` ([cols] elements, the last chunk
// possibly cut short: cols and r multiples of 8, the row 16-byte aligned). Lane l reads
// k = 8 l + 256 m in 16-byte loads, four issued before their sums, so its 8 columns are
// (8 l) mod r (r divides 256: r is 8 to 256, a power of two); then the lanes holding the
// same columns are added by a butterfly (lanes l ^ r/8, l ^ r/4, .., l ^ 16, none at
// r = 256: a fixed order, so the same bits every run). A warp per row keeps many loads in
// flight at any T: a thread per output would read K / r elements one after another.
template <typename TX, typename Factor>
__device__ __forceinline__ void warp_row_chunk_sums(const TX* __restrict__ row, int cols, int r, Factor factor,
                                                    float (&sum)[8]) {
    constexpr int WARP_SPAN = 32 * 8;  // elements a warp reads at once
    auto add = [&](const Eight<TX>& v, int k) {
#pragma unroll
        for (int e = 0; e < 8; ++e) sum[e] += factor(k + e) * to_f32(v.v[e]);
    };
    auto load = [&](int k) { return load8(row + k); };
    int k = (threadIdx.x % 32) * 8;
    for (; k + 3 * WARP_SPAN < cols; k += 4 * WARP_SPAN) {
        const Eight<TX> v0 = load(k), v1 = load(k + WARP_SPAN), v2 = load(k + 2 * WARP_SPAN),
                        v3 = load(k + 3 * WARP_SPAN);
        add(v0, k);
        add(v1, k + WARP_SPAN);
        add(v2, k + 2 * WARP_SPAN);
        add(v3, k + 3 * WARP_SPAN);
    }
    for (; k < cols; k += WARP_SPAN) add(load(k), k);
    add_across_lanes(sum, r / 8);
}

// S[t, j] = sum_i X[t, i r + j] over the chunks of X, the last one zero-padded, each
// element after dropout: [T, r], or with the bias columns [T, r + BONE_BIAS_COLUMNS],
// column r all ones and the rest zero. idx runs over T warps (32 a row of S): lane l holds
// columns 8 l .. 8 l + 7 where l < r / 8, and lane (r / 8) mod 32 writes the bias columns
// (lane 0 at r = 256, where every lane holds S).
// Where s_saved is not null, S is also written there, [T, r] (no bias columns).
template <typename TX>
__device__ __forceinline__ void chunk_sum(const BoneLayer layer, const BoneDropout& dropout, bool bias_columns,
                                          const TX* __restrict__ x, TX* __restrict__ s, TX* __restrict__ s_saved,
                                          long long idx) {
    static_assert(BONE_BIAS_COLUMNS == 8, "the bias columns are one group of 8");
    const long long t = idx / 32;
    const int lane = (int)(idx % 32), j0 = lane * 8, width = layer.r + (bias_columns ? BONE_BIAS_COLUMNS : 0);
    float sum[8] = {};
    if (dropout.threshold == 0) {
        warp_row_chunk_sums(x + t * layer.k, layer.k, layer.r, [](int) { return 1.f; }, sum);
    } else {
        const unsigned long long row = t * layer.k;
        warp_row_chunk_sums(x + row, layer.k, layer.r, [&](int k) { return bone_dropout_factor(dropout, row + k); },
                            sum);
    }
    TX* row = s + t * width;
    if (j0 < layer.r) {
        Eight<TX> out;
#pragma unroll
        for (int e = 0; e < 8; ++e) out.v[e] = from_f32<TX>(sum[e]);
        store8(row + j0, out);
        if (s_saved != nullptr) store8(s_saved + t * layer.r + j0, out);
    }
    if (bias_columns && lane == layer.r / 8 % 32) {
        Eight<TX> ones;
#pragma unroll
        for (int e = 0; e < 8; ++e) ones.v[e] = from_f32<TX>(e == 0 ? 1.f : 0.f);
        store8(row + layer.r, ones);
    }
}

// dX[t, k] (+)= factor(t, k) U[t, k mod r], rounded once: the shared block's tiled term
// dropped with the forward's mask (the product dY W is then added onto it). U [T, r]. idx
// runs over dX's groups of 8 (K and r multiples of 8: a group's k mod r are adjacent), each
// read and written in one 16-byte access.
template <typename TX>
__device__ __forceinline__ void dropped_tiles(const BoneLayer layer, int tokens, const BoneDropout& dropout,
                                              int accumulate, const TX* __restrict__ u, TX* __restrict__ dx) {
    const long long idx = element_index(), first = idx * 8;
    if (first >= (long long)tokens * layer.k) return;
    const int t = (int)(first / layer.k), k = (int)(first % layer.k);
    const Eight<TX> tiled = load8(u + (long long)t * layer.r + k % layer.r);
    TX* out = dx + first;
    Eight<TX> v = accumulate ? load8(out) : Eight<TX>{};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const float held = accumulate ? to_f32(v.v[e]) : 0.f;
        v.v[e] = from_f32<TX>(held + bone_dropout_factor(dropout, first + e) * to_f32(tiled.v[e]));
    }
    store8(out, v);
}

// dB[t, j] += sum_i G[t, i r + j]: BatCol's onehot^T G_o (each row of G summed over its
// r-wide chunks), added to the W_o^T G_o a GEMM wrote. G [rows, K] (K a multiple of r),
// dB [rows, r] f32. idx runs over `rows` warps (32 a row of dB).
template <typename TX>
__device__ __forceinline__ void chunk_sum_add(const BoneLayer layer, int rows, const TX* __restrict__ g,
                                              float* __restrict__ db) {
    const long long idx = element_index();
    if (idx >= (long long)rows * 32) return;  // whole warps: the butterfly takes every lane
    const long long t = idx / 32;
    const int j0 = (int)(idx % 32) * 8;
    float sum[8] = {};
    warp_row_chunk_sums(g + t * layer.k, layer.k, layer.r, [](int) { return 1.f; }, sum);
    if (j0 >= layer.r) return;
    float* out = db + t * layer.r + j0;
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] += sum[e];
}

// The full shared block Bfull[j, n] (= B[j, n], or B[j, n mod mini_r] for mini), both as
// [r, N] (for dY Bfull^T) and transposed as [N, r] (for S Bfull), or with a bias
// [N, r + BONE_BIAS_COLUMNS], column r the bias and the rest zero. idx runs over j < r
// (or r + BONE_BIAS_COLUMNS), then n.
template <typename TX, typename TB>
__device__ __forceinline__ void shared_blocks(const BoneLayer layer, const TB* __restrict__ b,
                                              const TX* __restrict__ bias, TX* __restrict__ full,
                                              TX* __restrict__ full_t, long long idx) {
    const int j = (int)(idx / layer.n), n = (int)(idx % layer.n);
    const int width = layer.r + (bias ? BONE_BIAS_COLUMNS : 0);
    TX* transposed = full_t + (long long)n * width + j;
    if (j >= layer.r) {
        *transposed = j == layer.r ? bias[n] : from_f32<TX>(0.f);
        return;
    }
    const float v = layer.variant == BONE_MINI ? to_f32(b[j * layer.mini_r + n % layer.mini_r]) : to_f32(b[idx]);
    full[idx] = from_f32<TX>(v);
    *transposed = from_f32<TX>(v);
}

// E[a, b] = 1 where a mod r == b mod r, else 0: [N, r] tiles R over the output blocks
// (BatRow forward); [r, K] tiles dY Bfull^T over K (shared-block backward). With a bias,
// [rows, cols + BONE_BIAS_COLUMNS], column `cols` the bias (of row a) and the rest zero.
// idx runs over E's elements.
template <typename TX>
__device__ __forceinline__ void tiled_identity(int cols, int r, const TX* __restrict__ bias, TX* __restrict__ e,
                                               long long idx) {
    const int width = cols + (bias ? BONE_BIAS_COLUMNS : 0);
    const int a = (int)(idx / width), b = (int)(idx % width);
    if (b >= cols) {
        e[idx] = b == cols ? bias[a] : from_f32<TX>(0.f);
        return;
    }
    e[idx] = from_f32<TX>(a % r == b % r ? 1.f : 0.f);
}

// The bias columns of a [rows, r + BONE_BIAS_COLUMNS] matrix whose first r columns a GEMM
// writes (BatRow's R): column r 1, the rest 0. idx runs over rows x BONE_BIAS_COLUMNS.
template <typename TX>
__device__ __forceinline__ void ones_column(int r, TX* __restrict__ m, long long idx) {
    const long long row = idx / BONE_BIAS_COLUMNS;
    const int c = (int)(idx % BONE_BIAS_COLUMNS);
    m[row * (r + BONE_BIAS_COLUMNS) + r + c] = from_f32<TX>(c == 0 ? 1.f : 0.f);
}

// dbias[n] (+)= sum_t dY[t, n], f32, in a fixed order, over a grid of column strips
// (BONE_BIAS_GRAD_COLUMNS columns) times chunks of `chunk_len` tokens: block b takes strip
// b % strips of chunk b / strips, so that a tall dY keeps every SM reading. A thread reads
// 8 adjacent columns at once (16 bytes: N is a multiple of 8 and dY 16-byte aligned), 8
// threads a row of the strip (128 contiguous bytes), the block ROWS rows at a time. A
// warp's four rows are added by shuffles, the warps' sums meet in shared memory, and the
// strip's first threads add them in warp order. One chunk: into out, added to what it
// holds where `accumulate`; several: chunk c's sums into out[c * N + n], which
// bone_sum_chunks then adds in order.
template <typename TX>
__device__ __forceinline__ void bias_grad(int tokens, int n_out, int chunk_len, int accumulate,
                                          const TX* __restrict__ dy, float* __restrict__ out) {
    constexpr int GROUPS = BONE_BIAS_GRAD_COLUMNS / 8, ROWS = BONE_MERGE_THREADS / GROUPS,
                  WARPS = BONE_MERGE_THREADS / 32;
    static_assert(GROUPS == 8, "a warp holds four rows of the strip's eight groups of columns");
    static_assert(WARPS * BONE_BIAS_GRAD_COLUMNS * 4 == BONE_BIAS_GRAD_SHARED_BYTES, "the launch's shared memory");
    // Dynamic, not a static __shared__ array, so that the host runtime counts its banks.
    auto* partial = reinterpret_cast<float(*)[BONE_BIAS_GRAD_COLUMNS]>(bone_ptx::dynamic_smem());
    const int strips = (n_out + BONE_BIAS_GRAD_COLUMNS - 1) / BONE_BIAS_GRAD_COLUMNS;
    const int strip = blockIdx.x % strips, chunk = blockIdx.x / strips;
    const int group = threadIdx.x % GROUPS, row = threadIdx.x / GROUPS;
    const int column = strip * BONE_BIAS_GRAD_COLUMNS + group * 8;  // the first of the thread's 8
    const int first = chunk * chunk_len, last = min(tokens, first + chunk_len);
    float sum[8] = {};
    if (column < n_out) {
#pragma unroll 4
        for (int t = first + row; t < last; t += ROWS) {
            const Eight<TX> v = load8(dy + (long long)t * n_out + column);
#pragma unroll
            for (int e = 0; e < 8; ++e) sum[e] += to_f32(v.v[e]);
        }
    }
    add_across_lanes(sum, GROUPS);  // the warp's rows (lanes l ^ 8, l ^ 16)
    // Lanes 0-15 store the warp's 64 sums, 16 bytes each: lane 8 q + g the half (q xor
    // g / 4) of group g's eight, so that each quarter-warp's 128 bytes fall on the 32 banks
    // once (in group order, groups g and g + 4 would share banks).
    const int lane = threadIdx.x % 32, high = ((lane / 8) ^ (group / 4)) & 1;
    using Four = Adjacent<float, 4>;
    if (lane < 16)
        store_adjacent<4>(&partial[threadIdx.x / 32][group * 8 + high * 4],
                          high ? Four{{sum[4], sum[5], sum[6], sum[7]}} : Four{{sum[0], sum[1], sum[2], sum[3]}});
    __syncthreads();
    const int c = threadIdx.x, n = strip * BONE_BIAS_GRAD_COLUMNS + c;
    if (c >= BONE_BIAS_GRAD_COLUMNS || n >= n_out) return;
    float* dest = out + (long long)chunk * n_out + n;
    float total = held(accumulate, dest);
    for (int w = 0; w < WARPS; ++w) total += partial[w][c];
    *dest = total;
}

// MiSS mini: dB[j, m] (+)= sum over n = m mod mini_r of dBfull[j, n].
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_mini_fold(const BoneLayer layer, int accumulate, const float* __restrict__ db_full, float* __restrict__ db) {
    const long long idx = element_index();
    if (idx >= (long long)layer.r * layer.mini_r) return;
    const int j = (int)(idx / layer.mini_r), m = (int)(idx % layer.mini_r);
    float sum = held(accumulate, db + idx);
    // N / mini_r terms (64 at N = 4096): eight loads issued before their sums.
#pragma unroll 8
    for (int n = m; n < layer.n; n += layer.mini_r) sum += db_full[(long long)j * layer.n + n];
    db[idx] = sum;
}

// The Bat blocks B_j as GEMM operands, [blocks, r, r]. Never I + B_j: rounded to TX (2^-7
// apart at 1 in bf16) it would drop most of B's diagonal; the products add W (or X, dX~)
// exactly in their epilogue instead (BoneGemm's addend).
template <typename TX, typename TB>
__device__ __forceinline__ void bat_blocks(const TB* __restrict__ b, TX* __restrict__ blocks, long long idx) {
    blocks[idx] = from_f32<TX>(to_f32(b[idx]));
}

// BatRow: the blocks side by side, stack[c, i r + j] = B_i[c, j] ([r, K]), so that
// R = X stack^T is one GEMM over K.
template <typename TX, typename TB>
__device__ __forceinline__ void row_stack(const BoneLayer layer, const TB* __restrict__ b, TX* __restrict__ stack,
                                          long long idx) {
    const int r = layer.r;
    const int c = (int)(idx / layer.k), k = (int)(idx % layer.k);
    const int i = k / r, j = k % r;
    stack[idx] = from_f32<TX>(to_f32(b[((long long)i * r + c) * r + j]));
}

// BatCol: onehot[q, a] = 1 where a = q / (K / r), [K, r]. Read as a [K, r] matrix,
// W's output block o (rows o r .. o r + r) has row q = a (K / r) + i holding W_{o,i}[a, :];
// onehot routes B_o[a, :] to exactly those rows.
template <typename TX>
__device__ __forceinline__ void block_one_hot(const BoneLayer layer, TX* __restrict__ onehot, long long idx) {
    const int r = layer.r;
    const int q = (int)(idx / r), a = (int)(idx % r);
    onehot[idx] = from_f32<TX>(q / (layer.k / r) == a ? 1.f : 0.f);
}

// out[i] (+)= in[i], rounded once from f32.
template <typename TX>
__device__ __forceinline__ void from_f32_pass(int count, int accumulate, const float* __restrict__ in,
                                              TX* __restrict__ out) {
    const long long idx = element_index();
    if (idx >= count) return;
    out[idx] = from_f32<TX>(held(accumulate, out + idx) + in[idx]);
}

// c[row, col] += bias[col] over a [rows, cols] block with leading dimension ldc (the bias
// epilogue when a library GEMM computed c), 8 adjacent elements a thread in one 16-byte
// read and write of c (cols, ldc and the block's start multiples of 8 elements, c 16-byte
// aligned: Y is checked; the bias, which is not, is read element by element). idx runs
// over the block's groups of 8.
template <typename TX>
__device__ __forceinline__ void add_bias(int rows, int cols, int ldc, const TX* __restrict__ bias, TX* __restrict__ c) {
    const long long idx = element_index();
    const int groups = cols / 8;
    if (idx >= (long long)rows * groups) return;
    const int row = (int)(idx / groups), col = (int)(idx % groups) * 8;
    TX* out = c + (long long)row * ldc + col;
    Eight<TX> v = load8(out);
#pragma unroll
    for (int e = 0; e < 8; ++e) v.v[e] = from_f32<TX>(to_f32(v.v[e]) + to_f32(bias[col + e]));
    store8(out, v);
}

// sum + partials[c * len + idx] over the count chunks, c in order: the fixed-order second
// pass of a reduction split into chunks (bitwise reproducible), for each kernel below.
// Four chunks' loads are issued before their sums (a bounds test between loads would keep
// the compiler from hoisting them, leaving one load in flight a thread).
__device__ __forceinline__ float add_chunks(float sum, int count, long long len, const float* __restrict__ partials,
                                            long long idx) {
    const float* p = partials + idx;
    int c = 0;
    for (; c + 3 < count; c += 4) {
        const float v0 = p[c * len], v1 = p[(c + 1) * len], v2 = p[(c + 2) * len], v3 = p[(c + 3) * len];
        sum += v0;
        sum += v1;
        sum += v2;
        sum += v3;
    }
    for (; c < count; ++c) sum += p[c * len];
    return sum;
}

// c[row, col] (+)= sum over chunk of partials[chunk][row, col] (+ bias[col]), rounded once:
// the second pass of a [rows, cols] GEMM output cut into chunks of its K, written into a
// block of C with leading dimension ldc.
template <typename TX>
__device__ __forceinline__ void sum_chunks_bias(int count, int rows, int cols, int ldc, int accumulate,
                                                const float* __restrict__ partials, const TX* __restrict__ bias,
                                                TX* __restrict__ c) {
    const long long idx = element_index(), len = (long long)rows * cols;
    if (idx >= len) return;
    const int row = (int)(idx / cols), col = (int)(idx % cols);
    TX* out = c + (long long)row * ldc + col;
    const float sum = add_chunks(held(accumulate, out) + (bias ? to_f32(bias[col]) : 0.f), count, len, partials, idx);
    *out = from_f32<TX>(sum);
}

// out[i] (+)= sum over c of partials[c * len + i] (f32).
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_sum_chunks(int count, int len, int accumulate, const float* __restrict__ partials, float* __restrict__ out) {
    const long long idx = element_index();
    if (idx >= len) return;
    out[idx] = add_chunks(held(accumulate, out + idx), count, len, partials, idx);
}

// The setup jobs of one call (struct BoneSetup), each on its own run of blocks: where
// blockIdx.x falls, job f runs on element idx of its `elements` (null output: no job).
template <typename TX, typename TB>
__device__ __forceinline__ void setup(const BoneSetup& p) {
    const BoneLayer layer = p.layer;
    const long long r = layer.r;
    long long first_block = 0;  // of the job considered
    bool done = false;
    auto job = [&](const void* output, long long elements, auto f) {
        if (output == nullptr || done) return;
        const long long blocks = (elements + BONE_MERGE_THREADS - 1) / BONE_MERGE_THREADS;
        if (blockIdx.x < first_block + blocks) {
            const long long idx = (blockIdx.x - first_block) * BONE_MERGE_THREADS + threadIdx.x;
            if (idx < elements) f(idx);
            done = true;
        }
        first_block += blocks;
    };
    const TB* b = (const TB*)p.b;
    const TX* bias = (const TX*)p.bias;
    const long long width = r + (bias ? BONE_BIAS_COLUMNS : 0);  // of S and Bfull^T
    job(p.s, (long long)p.tokens * 32, [&](long long i) {
        chunk_sum<TX>(layer, p.dropout, bias != nullptr, (const TX*)p.x, (TX*)p.s, (TX*)p.s_saved, i);
    });
    job(p.full, width * layer.n,
        [&](long long i) { shared_blocks<TX, TB>(layer, b, bias, (TX*)p.full, (TX*)p.full_t, i); });
    job(p.bat_blocks, p.bat_block_count * r * r, [&](long long i) { bat_blocks<TX, TB>(b, (TX*)p.bat_blocks, i); });
    job(p.stack, layer.k * r, [&](long long i) { row_stack<TX, TB>(layer, b, (TX*)p.stack, i); });
    job(p.onehot, layer.k * r, [&](long long i) { block_one_hot<TX>(layer, (TX*)p.onehot, i); });
    job(p.tiling, (long long)p.tiling_rows * (p.tiling_cols + (bias ? BONE_BIAS_COLUMNS : 0)),
        [&](long long i) { tiled_identity<TX>(p.tiling_cols, layer.r, bias, (TX*)p.tiling, i); });
    job(p.ones, (long long)p.ones_rows * BONE_BIAS_COLUMNS,
        [&](long long i) { ones_column<TX>(layer.r, (TX*)p.ones, i); });
}

// The passes of activations of type TX (named _x_<X_NAME>).
#define BONE_ACTIVATION_PASSES(X_NAME, TX)                                                                        \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_chunk_sum_add_x_##X_NAME(                \
        const BoneLayer layer, int rows, const TX* __restrict__ g, float* __restrict__ db) {                      \
        chunk_sum_add<TX>(layer, rows, g, db);                                                                    \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)                                              \
        bone_bias_grad_x_##X_NAME(int tokens, int n_out, int chunk_len, int accumulate,                           \
                                  const TX* __restrict__ dy, float* __restrict__ out) {                           \
        bias_grad<TX>(tokens, n_out, chunk_len, accumulate, dy, out);                                             \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_dropped_tiles_x_##X_NAME(                \
        const BoneLayer layer, int tokens, const BoneDropout dropout, int accumulate, const TX* __restrict__ u,   \
        TX* __restrict__ dx) {                                                                                    \
        dropped_tiles<TX>(layer, tokens, dropout, accumulate, u, dx);                                             \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)                                              \
        bone_from_f32_x_##X_NAME(int count, int accumulate, const float* __restrict__ in, TX* __restrict__ out) { \
        from_f32_pass<TX>(count, accumulate, in, out);                                                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_add_bias_x_##X_NAME(                     \
        int rows, int cols, int ldc, const TX* __restrict__ bias, TX* __restrict__ c) {                           \
        add_bias<TX>(rows, cols, ldc, bias, c);                                                                   \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_sum_chunks_bias_x_##X_NAME(              \
        int count, int rows, int cols, int ldc, int accumulate, const float* __restrict__ partials,               \
        const TX* __restrict__ bias, TX* __restrict__ c) {                                                        \
        sum_chunks_bias<TX>(count, rows, cols, ldc, accumulate, partials, bias, c);                               \
    }

// The setup of a call whose adapter B has type TB (named _x_<X_NAME>_b_<B_NAME>).
#define BONE_ADAPTER_PASSES(X_NAME, TX, B_NAME, TB)                                                    \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)                                   \
        bone_setup_x_##X_NAME##_b_##B_NAME(const BoneSetup p) {                                        \
        setup<TX, TB>(p);                                                                              \
    }

BONE_ACTIVATION_PASSES(bf16, __nv_bfloat16)
BONE_ACTIVATION_PASSES(f16, __half)
BONE_ADAPTER_PASSES(bf16, __nv_bfloat16, f32, float)
BONE_ADAPTER_PASSES(bf16, __nv_bfloat16, bf16, __nv_bfloat16)
BONE_ADAPTER_PASSES(f16, __half, f32, float)
BONE_ADAPTER_PASSES(f16, __half, bf16, __nv_bfloat16)
