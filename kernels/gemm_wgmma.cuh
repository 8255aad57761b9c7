// The same GEMM as gemm.cuh (struct BoneGemm), for sm_90a: wgmma.mma_async m64nNk16
// reading both operands from shared memory. A block of two warpgroups computes a 128 x
// TILE_N tile (each warpgroup 64 rows x TILE_N columns, TILE_N / 2 f32 accumulators per
// thread), stepping 64 along K through a cp.async pipeline in dynamic shared memory,
// one wgmma group kept in flight across each step's barrier. Three widths, picked by the
// host from N:
//   TILE_N = 128: 5 stages of 32 KiB (BONE_WGMMA_SMEM_BYTES), the grid of gemm.cuh;
//   TILE_N = 256: 4 stages of 48 KiB (BONE_WGMMA_WIDE_SMEM_BYTES), half the blocks along
//                 N, and a third less L2 traffic per product (N > 128);
//   TILE_N = 64:  4 stages of 24 KiB (BONE_WGMMA_NARROW_SMEM_BYTES), two blocks per SM,
//                 no padding for the r-wide products at r <= 64 (N <= 64).
//
// Shared-memory tiles use wgmma's canonical layout without swizzle: 8 x 8 core matrices of
// 128 contiguous bytes (8 lines of 16 bytes); a tile's 8-row group holds its 8 core
// matrices along K side by side (LBO = 128 B), and 8-row groups follow 1 KiB apart
// (SBO). A K-major operand's line is one row's 8 consecutive k; an MN-major operand's
// line is one k's 8 consecutive rows, read with wgmma's transpose flag. The chunk a
// thread copies is chosen so that each 8-thread phase of a warp's 16-byte stores fills
// one whole core matrix (no bank conflicts) and each warp reads 64 contiguous bytes from
// each of 8 rows of global memory.
#pragma once
#include "gemm_common.cuh"
#include "ptx.cuh"

// wgmma exists only on sm_90a; other targets get a kernel that traps (the host never
// launches it there: GemmEngine::Wgmma requires compute capability 9.0).
#if defined(BONE_KERNELS_ON_HOST) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define BONE_HAS_WGMMA 1
#else
#define BONE_HAS_WGMMA 0
#endif

namespace bone_wgmma {

using namespace bone_ptx;

constexpr int BM = BONE_GEMM_BM, BK = 64;
constexpr int CORE_BYTES = 128;                     // one 8 x 8 core matrix of 16-bit elements
constexpr int GROUP_BYTES = (BK / 8) * CORE_BYTES;  // one 8-row group across BK: the SBO
static_assert(BM == 128 && BONE_GEMM_THREADS == 256, "two warpgroups of 64 rows");

// The pipeline of one tile width: the A tile, then the B tile, per stage.
template <int TILE_N>
struct Pipeline {
    static constexpr int A_BYTES = (BM / 8) * GROUP_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + (TILE_N / 8) * GROUP_BYTES;
    static constexpr int STAGES = TILE_N == 128 ? 5 : 4;  // 64: 96 KiB, two blocks per SM
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};
static_assert(Pipeline<128>::SMEM_BYTES == BONE_WGMMA_SMEM_BYTES, "params.h states the shared memory size");
static_assert(Pipeline<BONE_WGMMA_WIDE_BN>::SMEM_BYTES == BONE_WGMMA_WIDE_SMEM_BYTES, "params.h states it too");
static_assert(Pipeline<BONE_WGMMA_NARROW_BN>::SMEM_BYTES == BONE_WGMMA_NARROW_SMEM_BYTES, "and this");

// A no-swizzle matrix descriptor: start address, LBO = 128 B (along K), SBO = 1 KiB.
__device__ __forceinline__ uint64_t descriptor(const unsigned char* tile) {
    const uint64_t start = (smem_addr(tile) & 0x3FFFF) >> 4;
    return start | (uint64_t(CORE_BYTES >> 4) << 16) | (uint64_t(GROUP_BYTES >> 4) << 32);
}

// Where chunk c of an operand's [ROWS, BK] tile goes in the layout above. K-major: a
// chunk is one row's 8 consecutive k; MN-major: one k's 8 consecutive rows.
template <int LAYOUT, int ROWS>
struct Place {
    static __host__ __device__ constexpr bone_gemm_common::ChunkPlace at(int c) {
        const int line = c % 8;
        if (LAYOUT == BONE_K_MAJOR) {
            const int core = (c / 8) % (BK / 8), group = c / (8 * (BK / 8));  // k / 8, row / 8
            return {group * 8 + line, core * 8, group * GROUP_BYTES + core * CORE_BYTES + line * 16};
        }
        const int group = (c / 8) % (ROWS / 8), core = c / (8 * (ROWS / 8));  // row / 8, k / 8
        return {group * 8, core * 8 + line, group * GROUP_BYTES + core * CORE_BYTES + line * 16};
    }
};

// Copies one operand's [ROWS, BK] tile starting at (row0, k0) into the layout above, by
// threads 0 .. THREADS - 1. K-major: src[row * ld + k]; MN-major: src[k * ld + row].
// Outside rows_total or k_total, zeros.
template <int LAYOUT, int ROWS, int THREADS = BONE_GEMM_THREADS, typename T>
__device__ __forceinline__ void load_tile(unsigned char* tile, const T* src, int ld, int rows_total,
                                          int k_total, int row0, int k0) {
    bone_gemm_common::copy_tile<LAYOUT, Place<LAYOUT, ROWS>, ROWS * BK / 8, THREADS>(tile, src, ld, rows_total,
                                                                                    k_total, row0, k0);
}

// A descriptor `bytes` further on in shared memory: the start address is its low field,
// in 16-byte units, and shared addresses stay below 2^18 bytes, so the sum never carries
// out of the field (cheaper than a descriptor made anew from the address).
__device__ __forceinline__ uint64_t advanced(uint64_t desc, int bytes) { return desc + uint64_t(bytes >> 4); }

// The products of one K tile: this warpgroup's 64 rows of the stage's A tile (`a_rows`, its
// descriptor) times its B tile (`b_tile`), queued on the tensor cores as one wgmma group.
template <int A_LAYOUT, int B_LAYOUT, typename TIn, int TILE_N>
__device__ __forceinline__ void queue_products(float (&acc)[TILE_N / 2], uint64_t a_rows, uint64_t b_tile) {
    wgmma_fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
        wgmma<TIn, TILE_N, A_LAYOUT, B_LAYOUT>(acc, advanced(a_rows, ks * 2 * CORE_BYTES),
                                               advanced(b_tile, ks * 2 * CORE_BYTES));
    }
    wgmma_commit();
}

// acc (this thread's TILE_N / 2 accumulators of its warpgroup's 64 x TILE_N rows) += the
// product of k_tiles K tiles, tile t loaded by load(t, a_tile, b_tile) into a stage of the
// pipeline in `smem`. A warpgroup whose rows all lie beyond M (rows_live false: M = r = 64
// in dB's products) skips its products; the branch is uniform across the warpgroup, as
// wgmma requires. It still loads its share of every tile and meets every barrier. Ends
// with every product retired and every copy landed, but not every thread past its last
// read: barrier before reusing `smem`.
template <int A_LAYOUT, int B_LAYOUT, typename TIn, int TILE_N, typename Load>
__device__ __forceinline__ void main_loop(float (&acc)[TILE_N / 2], unsigned char* smem, int k_tiles, bool rows_live,
                                          Load load) {
    using Pipe = Pipeline<TILE_N>;
    constexpr int STAGES = Pipe::STAGES;
    const int warpgroup = threadIdx.x / 128;
    auto load_stage = [&](int t, int stage) {
        unsigned char* a_tile = smem + stage * Pipe::STAGE_BYTES;
        load(t, a_tile, a_tile + Pipe::A_BYTES);
    };
    // One commit group per tile, empty past the end, so that copy_wait<STAGES - 3> at step t
    // always means "tile t has landed". Tiles are prefetched STAGES - 2 ahead: of the
    // STAGES stages, one more holds the tile the wgmma group still in flight reads.
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < k_tiles) load_stage(s, s);
        copy_commit();
    }
    for (int t = 0; t < k_tiles; ++t) {
        copy_wait<STAGES - 3>();
        fence_proxy_async();  // this thread's copies, visible to wgmma's async proxy
        __syncthreads();      // everyone's copies of tile t; both warpgroups retired tile t - 2
        if (rows_live) {
            const unsigned char* stage = smem + (t % STAGES) * Pipe::STAGE_BYTES;
            queue_products<A_LAYOUT, B_LAYOUT, TIn, TILE_N>(
                acc, descriptor(stage + warpgroup * (64 / 8) * GROUP_BYTES), descriptor(stage + Pipe::A_BYTES));
        }
        // The refill, issued once tile t's products are queued (the tensor cores have tile
        // t - 1's and t's while these copies issue): into the stage tile t - 2 used.
        const int next = t + STAGES - 2;
        if (next < k_tiles) load_stage(next, next % STAGES);
        copy_commit();
        if (rows_live) {
            wgmma_wait<1>();  // tile t - 1's group has retired; tile t's runs on past the next barrier
            wgmma_fence_operands(acc);
        }
    }
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
    copy_wait<0>();  // the empty groups past the end
}

// f(row, col, v0, v1) for each pair of this thread's accumulators (main_loop's) at (row,
// col) and (row, col + 1) of the block's 128 x TILE_N tile: its warpgroup's 64 rows
// (`warpgroup`: 0 or 1), its warp's 16 of them.
template <int TILE_N, typename F>
__device__ __forceinline__ void for_each_accumulator_pair(const float (&acc)[TILE_N / 2], int warpgroup, F f) {
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < TILE_N / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
            f(warpgroup * 64 + warp * 16 + fragment_row(lane, e), j * 8 + fragment_col(lane, e), acc[j * 4 + e],
              acc[j * 4 + e + 1]);
        }
}

template <int A_LAYOUT, int B_LAYOUT, typename TIn, typename TOut, int TILE_N>
__device__ __forceinline__ void gemm(const BoneGemm& p) {
#if BONE_HAS_WGMMA
    const int warpgroup = threadIdx.x / 128;
    int tile_m, tile_n;
    bone_gemm_common::block_tile(tile_m, tile_n);
    const int block_m = tile_m * BM, block_n = tile_n * TILE_N;
    const long long z = blockIdx.z;
    const bone_gemm_common::Batch<BK, TIn> batch(p, z);
    float acc[TILE_N / 2] = {};
    main_loop<A_LAYOUT, B_LAYOUT, TIn, TILE_N>(acc, dynamic_smem(), batch.tiles, block_m + warpgroup * 64 < p.m,
                                               [&](int t, unsigned char* a_tile, unsigned char* b_tile) {
                                                   const bone_gemm_common::KTile<TIn> k = batch.tile(t);
                                                   load_tile<A_LAYOUT, BM>(a_tile, k.a, k.lda, p.m, k.k_total,
                                                                           block_m, k.k0);
                                                   load_tile<B_LAYOUT, TILE_N>(b_tile, k.b, k.ldb, p.n, k.k_total,
                                                                               block_n, k.k0);
                                               });
    const bone_gemm_common::Output<TIn, TOut> out(p, z);
    for_each_accumulator_pair<TILE_N>(acc, warpgroup, [&](int row, int col, float v0, float v1) {
        out.store_pair(block_m + row, block_n + col, v0, v1);
    });
#else
    __trap();
#endif
}

}  // namespace bone_wgmma
