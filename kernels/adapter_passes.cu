// The adapter's small passes around the GEMMs, on CUDA cores: the block sum S (one read of
// X), dbias (one read of dY), and O((N + K) r) reshuffles of B into the bf16 operands the
// tensor-core GEMMs take. One output element per thread, f32 accumulation, sequential
// (deterministic) reductions.
#include "numeric.cuh"
#include "params.h"

__device__ __forceinline__ long long element_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }

// S[t, j] = sum_i X[t, i r + j] over the chunks of X, the last one zero-padded. [T, r] bf16.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_chunk_sum(const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ s) {
    const long long idx = element_index();
    if (idx >= (long long)tokens * layer.r) return;
    const int t = (int)(idx / layer.r), j = (int)(idx % layer.r);
    const __nv_bfloat16* row = x + (long long)t * layer.k;
    float sum = 0.f;
    for (int k = j; k < layer.k; k += layer.r) sum += to_f32(row[k]);
    s[idx] = from_f32<__nv_bfloat16>(sum);
}

// The full shared block Bfull[j, n] (= B[j, n], or B[j, n mod mini_r] for mini), in bf16,
// both as [r, N] (for dY Bfull^T) and transposed as [N, r] (for S Bfull).
template <typename TB>
__device__ __forceinline__ void shared_blocks(const BoneLayer layer, const TB* __restrict__ b,
                                              __nv_bfloat16* __restrict__ full, __nv_bfloat16* __restrict__ full_t) {
    const long long idx = element_index();
    if (idx >= (long long)layer.r * layer.n) return;
    const int j = (int)(idx / layer.n), n = (int)(idx % layer.n);
    const float v = layer.variant == BONE_MINI ? to_f32(b[j * layer.mini_r + n % layer.mini_r]) : to_f32(b[idx]);
    full[idx] = from_f32<__nv_bfloat16>(v);
    full_t[(long long)n * layer.r + j] = from_f32<__nv_bfloat16>(v);
}

// E[a, b] = 1 where a mod r == b mod r, else 0: [N, r] tiles R over the output blocks
// (BatRow forward); [r, K] tiles dY Bfull^T over K (shared-block backward).
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_tiled_identity(int rows, int cols, int r, __nv_bfloat16* __restrict__ e) {
    const long long idx = element_index();
    if (idx >= (long long)rows * cols) return;
    const int a = (int)(idx / cols), b = (int)(idx % cols);
    e[idx] = from_f32<__nv_bfloat16>(a % r == b % r ? 1.f : 0.f);
}

// dbias[n] = sum_t dY[t, n], f32, in a fixed order. A block owns BONE_BIAS_GRAD_COLUMNS
// columns; each of its warps sums every (warps)-th token of them (a warp reads 64
// contiguous bytes of a row, several rows in flight), then the first warp adds the
// warps' partial sums in order. One block per BONE_BIAS_GRAD_COLUMNS columns.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_bias_grad(int tokens, int n_out, const __nv_bfloat16* __restrict__ dy, float* __restrict__ dbias) {
    constexpr int LANES = BONE_MERGE_THREADS / BONE_BIAS_GRAD_COLUMNS;
    __shared__ float partial[LANES][BONE_BIAS_GRAD_COLUMNS];
    const int lane = threadIdx.x / BONE_BIAS_GRAD_COLUMNS, c = threadIdx.x % BONE_BIAS_GRAD_COLUMNS;
    const int column = blockIdx.x * BONE_BIAS_GRAD_COLUMNS + c;
    float sum = 0.f;
    if (column < n_out) {
#pragma unroll 8
        for (int t = lane; t < tokens; t += LANES) sum += to_f32(dy[(long long)t * n_out + column]);
    }
    partial[lane][c] = sum;
    __syncthreads();
    if (lane == 0 && column < n_out) {
        float total = 0.f;
        for (int l = 0; l < LANES; ++l) total += partial[l][c];
        dbias[column] = total;
    }
}

// MiSS mini: dB[j, m] = sum over n = m mod mini_r of dBfull[j, n].
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_mini_fold(const BoneLayer layer, const float* __restrict__ db_full, float* __restrict__ db) {
    const long long idx = element_index();
    if (idx >= (long long)layer.r * layer.mini_r) return;
    const int j = (int)(idx / layer.mini_r), m = (int)(idx % layer.mini_r);
    float sum = 0.f;
    for (int n = m; n < layer.n; n += layer.mini_r) sum += db_full[(long long)j * layer.n + n];
    db[idx] = sum;
}

// The Bat blocks as GEMM operands, bf16: I + B_j and B_j, both [blocks, r, r].
template <typename TB>
__device__ __forceinline__ void bat_blocks(const BoneLayer layer, int blocks, const TB* __restrict__ b,
                                           __nv_bfloat16* __restrict__ identity_plus, __nv_bfloat16* __restrict__ plain) {
    const long long idx = element_index();
    const int r = layer.r;
    if (idx >= (long long)blocks * r * r) return;
    const int a = (int)(idx / r % r), c = (int)(idx % r);
    const float v = to_f32(b[idx]);
    identity_plus[idx] = from_f32<__nv_bfloat16>(v + (a == c ? 1.f : 0.f));
    plain[idx] = from_f32<__nv_bfloat16>(v);
}

// BatRow: the blocks side by side, stack[c, i r + j] = B_i[c, j] ([r, K] bf16), so that
// R = X stack^T is one GEMM over K.
template <typename TB>
__device__ __forceinline__ void row_stack(const BoneLayer layer, const TB* __restrict__ b, __nv_bfloat16* __restrict__ stack) {
    const long long idx = element_index();
    const int r = layer.r;
    if (idx >= (long long)layer.k * r) return;
    const int c = (int)(idx / layer.k), k = (int)(idx % layer.k);
    const int i = k / r, j = k % r;
    stack[idx] = from_f32<__nv_bfloat16>(to_f32(b[((long long)i * r + c) * r + j]));
}

// BatCol: onehot[q, a] = 1 where a = q / (K / r), [K, r] bf16. Read as a [K, r] matrix,
// W's output block o (rows o r .. o r + r) has row q = a (K / r) + i holding W_{o,i}[a, :];
// onehot routes B_o[a, :] to exactly those rows.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_block_one_hot(const BoneLayer layer, __nv_bfloat16* __restrict__ onehot) {
    const long long idx = element_index();
    const int r = layer.r;
    if (idx >= (long long)layer.k * r) return;
    const int q = (int)(idx / r), a = (int)(idx % r);
    onehot[idx] = from_f32<__nv_bfloat16>(q / (layer.k / r) == a ? 1.f : 0.f);
}

// out[i] = bf16(in[i]).
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_to_bf16(int count, const float* __restrict__ in, __nv_bfloat16* __restrict__ out) {
    const long long idx = element_index();
    if (idx >= count) return;
    out[idx] = from_f32<__nv_bfloat16>(in[idx]);
}

// The passes that read the adapter B, for each of its storage types.
#define BONE_ADAPTER_PASSES(B_NAME, TB)                                                                        \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_shared_blocks_b_##B_NAME(            \
        const BoneLayer layer, const TB* __restrict__ b, __nv_bfloat16* __restrict__ full,                     \
        __nv_bfloat16* __restrict__ full_t) {                                                                  \
        shared_blocks<TB>(layer, b, full, full_t);                                                             \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_bat_blocks_b_##B_NAME(               \
        const BoneLayer layer, int blocks, const TB* __restrict__ b, __nv_bfloat16* __restrict__ identity_plus, \
        __nv_bfloat16* __restrict__ plain) {                                                                   \
        bat_blocks<TB>(layer, blocks, b, identity_plus, plain);                                                \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_row_stack_b_##B_NAME(                \
        const BoneLayer layer, const TB* __restrict__ b, __nv_bfloat16* __restrict__ stack) {                  \
        row_stack<TB>(layer, b, stack);                                                                        \
    }

BONE_ADAPTER_PASSES(f32, float)
BONE_ADAPTER_PASSES(bf16, __nv_bfloat16)

// c[row, col] += bias[col] over a [rows, cols] block with leading dimension ldc, bf16
// (the bias epilogue when a library GEMM computed c).
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_add_bias(int rows, int cols, int ldc, const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ c) {
    const long long idx = element_index();
    if (idx >= (long long)rows * cols) return;
    const int row = (int)(idx / cols), col = (int)(idx % cols);
    __nv_bfloat16* out = c + (long long)row * ldc + col;
    *out = from_f32<__nv_bfloat16>(to_f32(*out) + to_f32(bias[col]));
}

// out[i] = sum over c of partials[c * len + i], c in order: the fixed-order second pass
// of a reduction over T split into chunks (dB stays bitwise reproducible).
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_sum_chunks(int count, int len, const float* __restrict__ partials, float* __restrict__ out) {
    const long long idx = element_index();
    if (idx >= len) return;
    float sum = 0.f;
    for (int c = 0; c < count; ++c) sum += partials[(long long)c * len + idx];
    out[idx] = sum;
}
