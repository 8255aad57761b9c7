// The adapter's own small passes around the GEMMs: element-wise or short reductions on
// CUDA cores, O(T K r) or O(N K r) work against the GEMMs' O(T N K). One output element
// per thread, f32 accumulation, sequential (deterministic) reductions.
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

// BatRow forward: X~[t, i r + c] = X[t, i r + c] + sum_j X[t, i r + j] B_i[c, j].  [T, K] bf16.
template <typename TB>
__device__ __forceinline__ void row_mix(const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ x,
                                        const TB* __restrict__ b, __nv_bfloat16* __restrict__ x_mixed) {
    const long long idx = element_index();
    if (idx >= (long long)tokens * layer.k) return;
    const int t = (int)(idx / layer.k), k = (int)(idx % layer.k), r = layer.r;
    const int i = k / r, c = k % r;
    const __nv_bfloat16* x_i = x + (long long)t * layer.k + i * r;
    const TB* b_row = b + ((long long)i * r + c) * r;  // B_i[c, :]
    float sum = to_f32(x_i[c]);
    for (int j = 0; j < r; ++j) sum += to_f32(x_i[j]) * to_f32(b_row[j]);
    x_mixed[idx] = from_f32<__nv_bfloat16>(sum);
}

// BatRow forward: R[t, c] = sum_i sum_j X[t, i r + j] B_i[c, j].  [T, r] bf16.
template <typename TB>
__device__ __forceinline__ void row_carry(const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ x,
                                          const TB* __restrict__ b, __nv_bfloat16* __restrict__ carry) {
    const long long idx = element_index();
    if (idx >= (long long)tokens * layer.r) return;
    const int t = (int)(idx / layer.r), c = (int)(idx % layer.r), r = layer.r;
    float sum = 0.f;
    for (int i = 0; i < layer.k / r; ++i) {
        const __nv_bfloat16* x_i = x + (long long)t * layer.k + i * r;
        const TB* b_row = b + ((long long)i * r + c) * r;
        for (int j = 0; j < r; ++j) sum += to_f32(x_i[j]) * to_f32(b_row[j]);
    }
    carry[idx] = from_f32<__nv_bfloat16>(sum);
}

// BatRow backward: dR[t, c] = sum_o dY[t, o r + c].  [T, r] f32.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_row_carry_grad(const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ dy, float* __restrict__ d_carry) {
    const long long idx = element_index();
    if (idx >= (long long)tokens * layer.r) return;
    const int t = (int)(idx / layer.r), c = (int)(idx % layer.r);
    const __nv_bfloat16* row = dy + (long long)t * layer.n;
    float sum = 0.f;
    for (int n = c; n < layer.n; n += layer.r) sum += to_f32(row[n]);
    d_carry[idx] = sum;
}

// BatRow backward: dX[t, i r + c] = sum_j dX~[t, i r + j] (I + B_i)[j, c] + sum_j dR[t, j] B_i[j, c].
template <typename TB>
__device__ __forceinline__ void row_input_grad(const BoneLayer layer, int tokens, const float* __restrict__ dx_mixed,
                                               const float* __restrict__ d_carry, const TB* __restrict__ b,
                                               __nv_bfloat16* __restrict__ dx) {
    const long long idx = element_index();
    if (idx >= (long long)tokens * layer.k) return;
    const int t = (int)(idx / layer.k), k = (int)(idx % layer.k), r = layer.r;
    const int i = k / r, c = k % r;
    const float* g = dx_mixed + (long long)t * layer.k + i * r;
    const float* dr = d_carry + (long long)t * r;
    const TB* b_i = b + (long long)i * r * r;
    float sum = g[c];
    for (int j = 0; j < r; ++j) sum += (g[j] + dr[j]) * to_f32(b_i[j * r + c]);
    dx[idx] = from_f32<__nv_bfloat16>(sum);
}

// BatRow backward: dB_i[a, c] = sum_t (dX~[t, i r + a] + dR[t, a]) X[t, i r + c].  [K/r, r, r] f32.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_row_block_grad(const BoneLayer layer, int tokens, const float* __restrict__ dx_mixed,
                        const float* __restrict__ d_carry, const __nv_bfloat16* __restrict__ x, float* __restrict__ db) {
    const long long idx = element_index();
    const int r = layer.r;
    if (idx >= (long long)layer.k * r) return;
    const int i = (int)(idx / (r * r)), a = (int)(idx / r % r), c = (int)(idx % r);
    float sum = 0.f;
    for (int t = 0; t < tokens; ++t) {
        const float g = dx_mixed[(long long)t * layer.k + i * r + a] + d_carry[(long long)t * r + a];
        sum += g * to_f32(x[(long long)t * layer.k + i * r + c]);
    }
    db[idx] = sum;
}

// BatCol backward, for the output blocks of rows [row0, row0 + rows) of G = dY^T X (f32, [rows, K]):
// dB_o[a, c] = sum_i sum_j (W[o r + j, i r + a] + [j == a]) G[o r + j, i r + c].
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_col_block_grad(const BoneLayer layer, int row0, int rows, const __nv_bfloat16* __restrict__ w,
                        const float* __restrict__ g, float* __restrict__ db) {
    const long long idx = element_index();
    const int r = layer.r;
    if (idx >= (long long)rows * r) return;
    const int local_o = (int)(idx / (r * r)), a = (int)(idx / r % r), c = (int)(idx % r);
    const int o = row0 / r + local_o;
    float sum = 0.f;
    for (int i = 0; i < layer.k / r; ++i)
        for (int j = 0; j < r; ++j) {
            const float w_plus_identity = to_f32(w[(long long)(o * r + j) * layer.k + i * r + a]) + (j == a ? 1.f : 0.f);
            sum += w_plus_identity * g[(long long)(local_o * r + j) * layer.k + i * r + c];
        }
    db[(long long)o * r * r + a * r + c] = sum;
}

// dbias[n] = sum_t dY[t, n].  f32.
extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)
    bone_bias_grad(int tokens, int n_out, const __nv_bfloat16* __restrict__ dy, float* __restrict__ dbias) {
    const long long n = element_index();
    if (n >= n_out) return;
    float sum = 0.f;
    for (int t = 0; t < tokens; ++t) sum += to_f32(dy[(long long)t * n_out + n]);
    dbias[n] = sum;
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

// The passes that read the adapter B, for each of its storage types.
#define BONE_ADAPTER_PASSES(B_NAME, TB)                                                                             \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_shared_blocks_b_##B_NAME(                 \
        const BoneLayer layer, const TB* __restrict__ b, __nv_bfloat16* __restrict__ full,                          \
        __nv_bfloat16* __restrict__ full_t) {                                                                       \
        shared_blocks<TB>(layer, b, full, full_t);                                                                  \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_row_mix_b_##B_NAME(                       \
        const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ x, const TB* __restrict__ b,           \
        __nv_bfloat16* __restrict__ x_mixed) {                                                                      \
        row_mix<TB>(layer, tokens, x, b, x_mixed);                                                                  \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_row_carry_b_##B_NAME(                     \
        const BoneLayer layer, int tokens, const __nv_bfloat16* __restrict__ x, const TB* __restrict__ b,           \
        __nv_bfloat16* __restrict__ carry) {                                                                        \
        row_carry<TB>(layer, tokens, x, b, carry);                                                                  \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS) bone_row_input_grad_b_##B_NAME(                \
        const BoneLayer layer, int tokens, const float* __restrict__ dx_mixed, const float* __restrict__ d_carry,   \
        const TB* __restrict__ b, __nv_bfloat16* __restrict__ dx) {                                                 \
        row_input_grad<TB>(layer, tokens, dx_mixed, d_carry, b, dx);                                                \
    }

BONE_ADAPTER_PASSES(f32, float)
BONE_ADAPTER_PASSES(bf16, __nv_bfloat16)
