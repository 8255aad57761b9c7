// The tensor-core GEMM every forward and backward product goes through:
//   C[M, N] = A1 B1^T + A2 B2^T (+ bias) (+ C)   (see struct BoneGemm in params.h)
// mma.sync m16n8k16 bf16 or f16 -> f32 (sm_80+), ldmatrix (with .trans for MN-major operands),
// a BONE_GEMM_STAGES-deep cp.async pipeline in dynamic shared memory with one barrier per
// K step. 128 x 128 tile per block, 8 warps of 64 x 32, K step 32.
// Rows beyond M, columns beyond N and K beyond the operand's extent are zero-filled
// on load and never stored, so any M, N, K (multiples of 8 where contiguous) work.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "gemm_common.cuh"
#include "numeric.cuh"
#include "params.h"
#include "ptx.cuh"

namespace bone_gemm {

using namespace bone_ptx;

constexpr int BM = BONE_GEMM_BM, BN = BONE_GEMM_BN, BK = BONE_GEMM_BK;
constexpr int PAD = 8;  // elements of row padding: spreads ldmatrix rows over banks
static_assert((BK + PAD) / 8 % 2 == 1, "K-major rows an odd number of 16-byte units apart (Place)");
constexpr int K_MAJOR_PITCH = BK + PAD;       // smem row of a K-major tile: [rows][BK]
constexpr int MN_MAJOR_PITCH = BM + PAD;      // smem row of an MN-major tile: [BK][rows]
constexpr int TILE_ELEMS = BM * K_MAJOR_PITCH;  // >= BK * MN_MAJOR_PITCH, holds either
static_assert(BM == BN, "one tile size serves both operands");
static_assert(TILE_ELEMS >= BK * MN_MAJOR_PITCH, "tile buffer too small");
constexpr int STAGES = BONE_GEMM_STAGES;
static_assert(STAGES >= 2 && STAGES * 2 * TILE_ELEMS * 2 == BONE_GEMM_SMEM_BYTES, "params.h's size of the pipeline");

// Where chunk c of an operand's tile goes: K-major [rows][K_MAJOR_PITCH], a chunk being
// 8 consecutive k of a row; MN-major [BK][MN_MAJOR_PITCH], 8 consecutive rows of a k.
// K-major chunks go 8 rows at a time, each of a row's chunks in turn, so that the 8 lanes
// of a phase of a warp's 16-byte stores fill one chunk column of 8 rows: the rows are an odd
// number of 16-byte units apart, so those 8 chunks fall in distinct banks. (Along the row,
// a phase's chunks spanned two rows, and the second row's last chunk shared banks with the
// first row's first: every copy took two passes.) A warp still reads whole 64-byte row
// segments of global memory.
template <int LAYOUT>
struct Place {
    static __host__ __device__ constexpr bone_gemm_common::ChunkPlace at(int c) {
        if (LAYOUT == BONE_K_MAJOR) {
            constexpr int ROW_CHUNKS = BK / 8;
            const int row = c / (8 * ROW_CHUNKS) * 8 + c % 8, k = (c / 8 % ROW_CHUNKS) * 8;
            return {row, k, (row * K_MAJOR_PITCH + k) * 2};
        }
        const int k = c / (BM / 8), row = (c % (BM / 8)) * 8;
        return {row, k, (k * MN_MAJOR_PITCH + row) * 2};
    }
};

// Loads one operand's [rows, BK] tile (rows = BM or BN, starting at row0, k0) into smem.
// LAYOUT K-major: src[row * ld + k]; MN-major: src[k * ld + row].
template <int LAYOUT, typename T>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int ld, int rows_total,
                                          int k_total, int row0, int k0) {
    bone_gemm_common::copy_tile<LAYOUT, Place<LAYOUT>, BM * BK / 8, BONE_GEMM_THREADS>(
        reinterpret_cast<unsigned char*>(tile), src, ld, rows_total, k_total, row0, k0);
}

// The A fragment (16 x 16, rows m0.., k k0..) of an smem tile, for mma's row-major A.
template <int LAYOUT, typename T>
__device__ __forceinline__ void a_fragment(uint32_t (&r)[4], const T* tile, int m0, int k0, int lane) {
    if (LAYOUT == BONE_K_MAJOR) {
        const int row = m0 + (lane % 16), col = k0 + (lane / 16) * 8;
        ldmatrix_x4(r, tile + row * K_MAJOR_PITCH + col);
    } else {
        const int k = k0 + (lane % 8) + (lane / 16) * 8, m = m0 + ((lane / 8) % 2) * 8;
        ldmatrix_x4_trans(r, tile + k * MN_MAJOR_PITCH + m);
    }
}

// The B fragments of two n8 tiles (n n0..n0+15, k k0..k0+15): r[0], r[1] for n0..n0+7,
// r[2], r[3] for n0+8..n0+15, for mma's column-major B.
template <int LAYOUT, typename T>
__device__ __forceinline__ void b_fragments(uint32_t (&r)[4], const T* tile, int n0, int k0, int lane) {
    if (LAYOUT == BONE_K_MAJOR) {
        const int n = n0 + (lane % 8) + (lane / 16) * 8, k = k0 + ((lane / 8) % 2) * 8;
        ldmatrix_x4(r, tile + n * K_MAJOR_PITCH + k);
    } else {
        const int k = k0 + (lane % 8) + ((lane / 8) % 2) * 8, n = n0 + (lane / 16) * 8;
        ldmatrix_x4_trans(r, tile + k * MN_MAJOR_PITCH + n);
    }
}

// Where warp `warp` of the block computes: rows warp_m.. (64), columns warp_n.. (32).
__device__ __forceinline__ int warp_m_of(int warp) { return (warp / 4) * 64; }
__device__ __forceinline__ int warp_n_of(int warp) { return (warp % 4) * 32; }

// f(row, col, v0, v1) for each pair of this thread's accumulators (main_loop's) at (row,
// col) and (row, col + 1) of the block's 128 x 128 tile.
template <typename F>
__device__ __forceinline__ void for_each_accumulator_pair(const float (&acc)[4][4][4], F f) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; e += 2) {
                f(warp_m_of(warp) + i * 16 + fragment_row(lane, e), warp_n_of(warp) + j * 8 + fragment_col(lane, e),
                  acc[i][j][e], acc[i][j][e + 1]);
            }
}

// acc (this thread's fragments of the block's 128 x 128 tile) += the product of k_tiles
// K tiles, tile t loaded by load(t, a_tile, b_tile) into a stage's two buffers, through a
// STAGES-deep pipeline in `tiles` (dynamic shared memory). Ends with every copy landed but
// not every warp done reading: barrier before reusing `tiles`.
template <int A_LAYOUT, int B_LAYOUT, typename TIn, typename Load>
__device__ __forceinline__ void main_loop(float (&acc)[4][4][4], TIn* tiles, int k_tiles, Load load) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int warp_m = warp_m_of(warp), warp_n = warp_n_of(warp);
    // Stage s holds A's tile at tiles + 2 s TILE_ELEMS and B's right after it.
    auto load_stage = [&](int t, int stage) {
        TIn* a_tile = tiles + stage * 2 * TILE_ELEMS;
        load(t, a_tile, a_tile + TILE_ELEMS);
    };
    // One commit group per tile, empty past the end, so that copy_wait<STAGES - 2> at step
    // t always means "tile t has landed". Tiles are prefetched STAGES - 1 ahead.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(s, s);
        copy_commit();
    }
    for (int t = 0; t < k_tiles; ++t) {
        copy_wait<STAGES - 2>();
        __syncthreads();  // everyone's copies of tile t; every warp is done with tile t - 1
        const int next = t + STAGES - 1;
        if (next < k_tiles) load_stage(next, next % STAGES);  // into the stage tile t - 1 used
        copy_commit();
        const TIn* a_tile = tiles + (t % STAGES) * 2 * TILE_ELEMS;
        const TIn* b_tile = a_tile + TILE_ELEMS;
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            uint32_t a[4][4], b[2][4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a_fragment<A_LAYOUT>(a[i], a_tile, warp_m + i * 16, ks, lane);
#pragma unroll
            for (int j = 0; j < 2; ++j) b_fragments<B_LAYOUT>(b[j], b_tile, warp_n + j * 16, ks, lane);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma<TIn>(acc[i][j], a[i], b[j / 2][(j % 2) * 2], b[j / 2][(j % 2) * 2 + 1]);
        }
    }
    copy_wait<0>();  // the empty groups past the end
}

template <int A_LAYOUT, int B_LAYOUT, typename TIn, typename TOut>
__device__ __forceinline__ void gemm(const BoneGemm& p) {
    int tile_m, tile_n;
    bone_gemm_common::block_tile(tile_m, tile_n);
    const int block_m = tile_m * BM, block_n = tile_n * BN;
    const long long z = blockIdx.z;
    const bone_gemm_common::Batch<BK, TIn> batch(p, z);
    float acc[4][4][4] = {};
    main_loop<A_LAYOUT, B_LAYOUT>(acc, reinterpret_cast<TIn*>(dynamic_smem()), batch.tiles,
                                  [&](int t, TIn* a_tile, TIn* b_tile) {
                                      const bone_gemm_common::KTile<TIn> k = batch.tile(t);
                                      load_tile<A_LAYOUT>(a_tile, k.a, k.lda, p.m, k.k_total, block_m, k.k0);
                                      load_tile<B_LAYOUT>(b_tile, k.b, k.ldb, p.n, k.k_total, block_n, k.k0);
                                  });

    const bone_gemm_common::Output<TIn, TOut> out(p, z);
    for_each_accumulator_pair(
        acc, [&](int row, int col, float v0, float v1) { out.store_pair(block_m + row, block_n + col, v0, v1); });
}

}  // namespace bone_gemm
