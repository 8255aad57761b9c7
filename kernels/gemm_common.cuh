// What both GEMMs (gemm.cuh on mma.sync, gemm_wgmma.cuh on wgmma) share: the batch's
// operands, the concatenated K of the two products cut into tiles, and the masked
// epilogue store (bias, accumulation, rounding).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "numeric.cuh"
#include "params.h"

namespace bone_gemm_common {

// The output tile (tile_m, tile_n) this block computes. The grid is (tiles of N, tiles of
// M, batches) and blocks start roughly in launch order (x fastest), so they are assigned
// in groups of GROUP_M tile rows, column by column within a group: the blocks resident
// at once share a band of GROUP_M tile rows of A and a few tile columns of B, which stay
// in L2, instead of sweeping all of B for every row of A (W is 90 MB on Llama's MLP).
constexpr int GROUP_M = 8;
__device__ __forceinline__ void block_tile(int& tile_m, int& tile_n) {
    const int tiles_n = gridDim.x, tiles_m = gridDim.y;
    const int linear = blockIdx.y * tiles_n + blockIdx.x;
    const int first_m = linear / (GROUP_M * tiles_n) * GROUP_M;
    const int rows = min(tiles_m - first_m, GROUP_M);
    const int in_group = linear - first_m * tiles_n;
    tile_m = first_m + in_group % rows;
    tile_n = in_group / rows;
}

// One K tile: which product's operands (T: bf16 or f16), their leading dimensions, that
// product's K extent and the tile's first k.
template <typename T>
struct KTile {
    const T* a;
    const T* b;
    int lda, ldb, k_total, k0;
};

// Batch z of a BoneGemm on T operands, its K cut into tiles of TILE_K: the first
// product's, then the second's.
template <int TILE_K, typename T>
struct Batch {
    const BoneGemm& p;
    const T *a1, *b1, *a2, *b2;
    int tiles1, tiles;

    __device__ __forceinline__ Batch(const BoneGemm& params, long long z)
        : p(params),
          a1((const T*)params.a + z * params.stride_a),
          b1((const T*)params.b + z * params.stride_b),
          a2((const T*)params.a2 + z * params.stride_a2),
          b2((const T*)params.b2 + z * params.stride_b2),
          tiles1((params.k + TILE_K - 1) / TILE_K),
          tiles(tiles1 + (params.k2 + TILE_K - 1) / TILE_K) {}

    __device__ __forceinline__ KTile<T> tile(int t) const {
        const bool first = t < tiles1;
        return {first ? a1 : a2,     first ? b1 : b2,        first ? p.lda : p.lda2, first ? p.ldb : p.ldb2,
                first ? p.k : p.k2, (first ? t : t - tiles1) * TILE_K};
    }
};

// Rounded once to a 16-bit output; an f32 output may add to what it holds.
template <typename T>
__device__ __forceinline__ void store_out(T* c, long long idx, float v, bool) {
    c[idx] = from_f32<T>(v);
}
template <>
__device__ __forceinline__ void store_out<float>(float* c, long long idx, float v, bool accumulate) {
    c[idx] = accumulate ? c[idx] + v : v;
}

// C[z][row, col] = v (+ bias[col], of the operands' type TIn) (+ what C holds, f32 only),
// where inside M x N.
template <typename TIn, typename TOut>
__device__ __forceinline__ void store(const BoneGemm& p, long long z, int row, int col, float v) {
    if (row >= p.m || col >= p.n) return;
    const TIn* bias = (const TIn*)p.bias;
    TOut* c = (TOut*)p.c + z * p.stride_c;
    store_out<TOut>(c, (long long)row * p.ldc + col, v + (bias ? to_f32(bias[col]) : 0.f), p.accumulate != 0);
}

}  // namespace bone_gemm_common
