// What both GEMMs (gemm.cuh on mma.sync, gemm_wgmma.cuh on wgmma) share: the batch's
// operands, the concatenated K of the two products cut into tiles, and the masked
// epilogue store (bias, accumulation, rounding).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "numeric.cuh"
#include "params.h"
#include "ptx.cuh"

namespace bone_gemm_common {

// Output tile number `linear` of a layer of tiles_m x tiles_n, (tile_m, tile_n). Tiles
// are computed roughly in the order of their numbers (blocks start in launch order, x
// fastest), so they are numbered in groups of GROUP_M tile rows, column by column within
// a group: the tiles in flight at once share a band of GROUP_M tile rows of A and a few
// tile columns of B, which stay in L2, instead of sweeping all of B for every row of A
// (W is 90 MB on Llama's MLP).
constexpr int GROUP_M = 8;
__device__ __forceinline__ void tile_at(int linear, int tiles_m, int tiles_n, int& tile_m, int& tile_n) {
    const int first_m = linear / (GROUP_M * tiles_n) * GROUP_M;
    const int rows = min(tiles_m - first_m, GROUP_M);
    const int in_group = linear - first_m * tiles_n;
    tile_m = first_m + in_group % rows;
    tile_n = in_group / rows;
}

// The output tile this block computes where the grid is (tiles of N, tiles of M, layers).
__device__ __forceinline__ void block_tile(int& tile_m, int& tile_n) {
    tile_at(blockIdx.y * gridDim.x + blockIdx.x, gridDim.y, gridDim.x, tile_m, tile_n);
}

// One K tile: which product's operands (T: bf16 or f16), their leading dimensions, where
// that product's K ends for this chunk (loads from there on are zero) and the tile's first k.
template <typename T>
struct KTile {
    const T* a;
    const T* b;
    int lda, ldb, k_total, k0;
};

// Layer z of the grid for a BoneGemm on T operands: its batch's operands, and its chunk
// of the reduction (all of it unless split_k) cut into tiles of TILE_K: the first
// product's, then the second's. Layer z is chunk z / batches of batch z % batches.
template <int TILE_K, typename T>
struct Batch {
    const BoneGemm& p;
    const T *a1, *b1, *a2, *b2;
    int k_begin, end1, end2;  // the chunk's K range: [k_begin, end1) of the first product, of the second
    int tiles1, tiles;

    __device__ __forceinline__ Batch(const BoneGemm& params, long long z) : p(params) {
        // 32-bit arithmetic: grid.z is at most 65535 (a 64-bit division is a called routine).
        const int chunks = p.split_k > 0 ? (p.k + p.split_k - 1) / p.split_k : 1;
        const int batches = (int)gridDim.z / chunks, layer = (int)z;
        const long long batch = layer % batches;
        k_begin = layer / batches * p.split_k;
        end1 = p.split_k > 0 ? min(p.k, k_begin + p.split_k) : p.k;
        end2 = p.split_k > 0 ? min(p.k2, k_begin + p.split_k) : p.k2;
        a1 = (const T*)p.a + batch * p.stride_a;
        b1 = (const T*)p.b + batch * p.stride_b;
        a2 = (const T*)p.a2 + batch * p.stride_a2;
        b2 = (const T*)p.b2 + batch * p.stride_b2;
        tiles1 = (end1 - k_begin + TILE_K - 1) / TILE_K;  // k_begin < p.k: chunks are counted over K
        tiles = tiles1 + (max(end2 - k_begin, 0) + TILE_K - 1) / TILE_K;
    }

    __device__ __forceinline__ KTile<T> tile(int t) const {
        const bool first = t < tiles1;
        return {first ? a1 : a2,        first ? b1 : b2, first ? p.lda : p.lda2, first ? p.ldb : p.ldb2,
                first ? end1 : end2, k_begin + (first ? t : t - tiles1) * TILE_K};
    }
};

// Where chunk c (16 bytes, 8 elements) of an operand's tile goes: its row and k within the
// tile (a K-major chunk holds k .. k + 7 of its row, an MN-major one rows row .. row + 7 of
// its k) and its byte offset in the tile's shared memory.
struct ChunkPlace {
    int row, k, smem;
};

// Place::at(c) is affine in the round: the chunk c + i THREADS a thread copies in round i
// is at at(c) + i at(THREADS), for every c of the tile. Checked at compile time for each
// layout, so that a thread can compute one address per tile and step from it.
template <typename Place, int CHUNKS, int THREADS>
__host__ __device__ constexpr bool rounds_are_affine() {
    const ChunkPlace step = Place::at(THREADS);
    for (int c = 0; c < CHUNKS; ++c) {
        const ChunkPlace first = Place::at(c % THREADS), here = Place::at(c);
        const int i = c / THREADS;
        if (here.row != first.row + i * step.row || here.k != first.k + i * step.k ||
            here.smem != first.smem + i * step.smem)
            return false;
    }
    return true;
}

// Copies an operand's tile at (row0, k0) into shared memory at `tile`, CHUNKS chunks placed
// by Place (K-major src[row * ld + k], MN-major src[k * ld + row]), by all THREADS threads;
// zeros outside rows_total and k_total (the contract makes every chunk wholly inside or
// outside). Each thread's chunks are a compile-time count of rounds at a constant step from
// one address, which costs a few instructions a chunk where each chunk's own index
// arithmetic cost ~30 (an issue-bound main loop).
template <int LAYOUT, typename Place, int CHUNKS, int THREADS, typename T>
__device__ __forceinline__ void copy_tile(unsigned char* tile, const T* src, int ld, int rows_total, int k_total,
                                          int row0, int k0) {
    static_assert(CHUNKS % THREADS == 0, "whole rounds of chunks");
    static_assert(rounds_are_affine<Place, CHUNKS, THREADS>(), "each round at a constant step from the first");
    constexpr ChunkPlace step = Place::at(THREADS);
    constexpr int ROW_STEP = step.row, K_STEP = step.k;
    const ChunkPlace first = Place::at(threadIdx.x);
    const int row = row0 + first.row, k = k0 + first.k;
    const long long offset = LAYOUT == BONE_K_MAJOR ? (long long)row * ld + k : (long long)k * ld + row;
    const int element_step = LAYOUT == BONE_K_MAJOR ? ROW_STEP * ld + K_STEP : K_STEP * ld + ROW_STEP;
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; ++i) {
        const bool valid = row + i * ROW_STEP < rows_total && k + i * K_STEP < k_total;
        bone_ptx::copy16(tile + first.smem + i * step.smem, valid ? src + offset + (long long)i * element_step : src,
                         valid);
    }
}

// Two adjacent outputs c[idx], c[idx + 1] in one store: rounded once to a 16-bit output.
// The address must be aligned to the pair's size (require_access).
template <typename T>
__device__ __forceinline__ void store2(T* c, float v0, float v1) {
    require_access(c, 4);
    *reinterpret_cast<uint32_t*>(c) = pack2<T>(v0, v1);
}
template <>
__device__ __forceinline__ void store2<float>(float* c, float v0, float v1) {
    require_access(c, 8);
    *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
}

// The same, adding what they hold where `accumulate` (read in the output's type, added in
// f32, rounded once).
template <typename T>
__device__ __forceinline__ void store_pair(T* c, long long idx, float v0, float v1, bool accumulate) {
    if (accumulate) {
        v0 += to_f32(c[idx]);
        v1 += to_f32(c[idx + 1]);
    }
    store2<T>(c + idx, v0, v1);
}

// Where layer z of the grid writes: C[z][row, col] = v (+ addend[z][row, col] and bias[col],
// of the operands' type TIn) (+ what C holds), where inside M x N. Read from the parameter
// once, after the main loop (the wide wgmma tile spilled when each of its 128 stores re-read
// it).
template <typename TIn, typename TOut>
struct Output {
    TOut* c;
    const TIn* addend;
    const TIn* bias;
    int m, n, ldc;
    bool accumulate;

    __device__ __forceinline__ Output(const BoneGemm& p, long long z)
        : c((TOut*)p.c + z * p.stride_c),
          addend(p.addend ? (const TIn*)p.addend + z * p.stride_c : nullptr),
          bias((const TIn*)p.bias),
          m(p.m),
          n(p.n),
          ldc(p.ldc),
          accumulate(p.accumulate != 0) {}

    // (row, col) and (row, col + 1), col even, in one store (n, ldc, C's stride and
    // pointer are multiples of 8 elements: both lie inside N or neither, and aligned).
    __device__ __forceinline__ void store_pair(int row, int col, float v0, float v1) const {
        if (row >= m || col >= n) return;
        const long long idx = (long long)row * ldc + col;
        if (addend) {
            v0 += to_f32(addend[idx]);
            v1 += to_f32(addend[idx + 1]);
        }
        if (bias) {
            v0 += to_f32(bias[col]);
            v1 += to_f32(bias[col + 1]);
        }
        bone_gemm_common::store_pair<TOut>(c, idx, v0, v1, accumulate);
    }
};

}  // namespace bone_gemm_common
