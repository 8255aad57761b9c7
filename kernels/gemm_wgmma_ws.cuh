// The wgmma GEMM of gemm_wgmma.cuh (same operands, tiles, shared-memory layout and
// epilogue) with its copies and its products on separate warpgroups (warp specialisation):
// warpgroup 0 only copies tiles into the stages (cp.async, the copy_tile rounds of
// gemm_common.cuh), warpgroups 1 and 2 only multiply (64 rows x TILE_N each) and store.
// The stages are handed over through two mbarriers each instead of block barriers:
//   full[s]:  the 128 loading threads arrive when their copies into stage s have landed
//             (cp.async's arrive-on); its phase u completes with the tile of use u;
//   empty[s]: each of the 256 computing threads arrives once the products that read stage
//             s have retired; the loaders wait for it before refilling the stage. Every
//             thread, not one a warp: a lane that released a stage for its whole warp could
//             let it be refilled twice before a slower lane of that warp saw its first fill,
//             and that lane would then wait for a phase of the same parity forever.
// So the tensor cores are fed without a block-wide barrier per K step, and the computing
// warps issue little besides wgmma: the loads' address arithmetic runs on other warps.
// One wgmma group stays in flight per computing warpgroup; the loaders run up to STAGES
// K steps ahead. Blocks are persistent within their layer (blockIdx.z): the grid's x
// extent is at most the blocks the GPU holds at once (one an SM where the pipeline takes
// ~192 KiB, two for the narrow tiles' 96 KiB), and
// each block computes tiles blockIdx.x, blockIdx.x + gridDim.x, ... in the grouped order
// of gemm_common.cuh, its K steps numbered on across them, so the loaders fill the next
// tile's stages while the computing warps store the last one's outputs.
#pragma once
#include "gemm_wgmma.cuh"

namespace bone_wgmma_ws {

using namespace bone_ptx;
using bone_wgmma::BK;
using bone_wgmma::BM;

constexpr int LOADERS = 128;                                 // warpgroup 0
constexpr int COMPUTING = BONE_WGMMA_WS_THREADS - LOADERS;  // warpgroups 1, 2
static_assert(BONE_WGMMA_WS_THREADS == 3 * 128, "a loading warpgroup and two of 64 rows each");

template <int TILE_N>
struct Pipeline {
    using Tiles = bone_wgmma::Pipeline<TILE_N>;  // one stage: the A tile, then the B tile
    static constexpr int STAGES = TILE_N == 128 ? 6 : 4;
    static constexpr int BARRIERS = STAGES * Tiles::STAGE_BYTES;  // full[STAGES], then empty[STAGES]
    static constexpr int SMEM_BYTES = BARRIERS + 2 * STAGES * 8;
};
static_assert(Pipeline<128>::SMEM_BYTES == BONE_WGMMA_WS_SMEM_BYTES, "params.h states the shared memory size");
static_assert(Pipeline<BONE_WGMMA_WIDE_BN>::SMEM_BYTES == BONE_WGMMA_WS_WIDE_SMEM_BYTES, "and this");
static_assert(Pipeline<BONE_WGMMA_NARROW_BN>::SMEM_BYTES == BONE_WGMMA_WS_NARROW_SMEM_BYTES, "and this");

// An operand's [ROWS, BK] tile (64, or a multiple of 128 rows) copied by the loaders, at
// most 128 rows at a time: each slice is the layout of a tile of its rows, GROUP_BYTES per
// 8 rows further on, and its rounds of copies are affine in the loader's index (a whole
// 256-row MN-major tile's would not be on 128 threads).
template <int LAYOUT, int ROWS, typename T>
__device__ __forceinline__ void load_rows(unsigned char* tile, const T* src, int ld, int rows_total, int k_total,
                                          int row0, int k0) {
    constexpr int SLICE = ROWS < 128 ? ROWS : 128;
    static_assert(ROWS % SLICE == 0, "whole slices");
#pragma unroll
    for (int slice = 0; slice < ROWS / SLICE; ++slice) {
        bone_wgmma::load_tile<LAYOUT, SLICE, LOADERS>(tile + slice * (SLICE / 8) * bone_wgmma::GROUP_BYTES, src, ld,
                                                      rows_total, k_total, row0 + slice * SLICE, k0);
    }
}

// Where a role is in the ring of stages: the stage of its next K step, and the parity of
// that stage's use (its mbarriers' phase). Counted up, not divided out of a step number:
// the computing warps' K step is a few instructions shorter.
template <int STAGES>
struct Ring {
    int stage = 0, phase = 0;
    __device__ __forceinline__ void next() {
        if (++stage == STAGES) {
            stage = 0;
            phase ^= 1;
        }
    }
};

// The stages' mbarriers, full[STAGES] and empty[STAGES], initialised (by one thread; the
// block then meets at a barrier before any use).
template <int STAGES>
__device__ __forceinline__ void init_stages(uint64_t* full, uint64_t* empty) {
    for (int s = 0; s < STAGES; ++s) {
        mbarrier_init(&full[s], LOADERS);
        mbarrier_init(&empty[s], COMPUTING);
    }
}

// The loaders' part of one K step: wait until the ring's stage is free (use u of a stage
// needs use u - 1's products retired: phase u - 1 of `empty`, of the other parity; for
// u = 0 the phase "before" the first, which an mbarrier reports complete), copy into it
// (`load(stage)`), hand it over on `full` as the copies land, and move on.
template <int STAGES, typename Load>
__device__ __forceinline__ void load_step(Ring<STAGES>& ring, uint64_t* full, uint64_t* empty, Load load) {
    mbarrier_wait(&empty[ring.stage], ring.phase ^ 1);
    load(ring.stage);
    copy_arrive(&full[ring.stage]);
    ring.next();
}

// The loaders' exit, with no copy of theirs in flight: the copies belong to no commit
// group (the mbarriers track them), so they are committed as one before the wait.
__device__ __forceinline__ void finish_loading() {
    copy_commit();
    copy_wait<0>();
}

// The computing warps' part of one output tile: `steps` K steps from the ring, each
// stage waited for (full), its products queued where this warpgroup's rows are live, one
// wgmma group kept in flight, and the stage before released (empty) once its group has
// retired. Ends with every product retired and the tile's last stage released, so the
// loaders can fill it while the caller stores the tile. `a_rows` and `b_tile` are stage
// 0's descriptors: this warpgroup's rows of A, and B; stage s's are s STAGE_BYTES on.
template <int A_LAYOUT, int B_LAYOUT, typename TIn, int TILE_N, int STAGES, int STAGE_BYTES>
__device__ __forceinline__ void compute_tile(float (&acc)[TILE_N / 2], Ring<STAGES>& ring, int steps, bool rows_live,
                                             uint64_t* full, uint64_t* empty, uint64_t a_rows, uint64_t b_tile) {
    int previous = 0;  // the stage of the step before
#pragma unroll 1  // peeled copies of the loop would serialize the wgmma pipeline (ptxas C7515)
    for (int t = 0; t < steps; ++t, ring.next()) {
        mbarrier_wait(&full[ring.stage], ring.phase);
        if (rows_live) {
            fence_proxy_async();  // the copies this thread now sees, visible to wgmma's async proxy
            const int offset = ring.stage * STAGE_BYTES;
            bone_wgmma::queue_products<A_LAYOUT, B_LAYOUT, TIn, TILE_N>(acc, bone_wgmma::advanced(a_rows, offset),
                                                                      bone_wgmma::advanced(b_tile, offset));
            wgmma_wait<1>();  // the step before's group has retired; this step's runs on
            wgmma_fence_operands(acc);
        }
        if (t > 0) mbarrier_arrive(&empty[previous]);
        previous = ring.stage;
    }
    wgmma_wait<0>();  // on every path, so that ptxas need not add one before the stores
    wgmma_fence_operands(acc);
    if (steps > 0) mbarrier_arrive(&empty[previous]);
}

template <int A_LAYOUT, int B_LAYOUT, typename TIn, typename TOut, int TILE_N>
__device__ __forceinline__ void gemm(const BoneGemm& p) {
#if BONE_HAS_WGMMA
    using Pipe = Pipeline<TILE_N>;
    constexpr int STAGES = Pipe::STAGES, STAGE_BYTES = Pipe::Tiles::STAGE_BYTES, A_BYTES = Pipe::Tiles::A_BYTES;
    unsigned char* smem = dynamic_smem();
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + Pipe::BARRIERS);
    uint64_t* empty = full + STAGES;
    if (threadIdx.x == 0) {
        init_stages<STAGES>(full, empty);
        mbarrier_init_fence();
    }
    __syncthreads();  // the only block barrier: the mbarriers are initialised
    // This block's tiles of its layer (blockIdx.z): numbers blockIdx.x, + gridDim.x, ...
    const int tiles_m = (p.m + BM - 1) / BM, tiles_n = (p.n + TILE_N - 1) / TILE_N;
    const long long z = blockIdx.z;
    const bone_gemm_common::Batch<BK, TIn> batch(p, z);
    // Warp-uniform to the compiler too, so that it keeps each role's wgmma pipeline whole.
    const int warpgroup = warp_uniform(threadIdx.x / 128);
    // Both roles step through the stages in the same order, over all the block's tiles.
    Ring<STAGES> ring;
    if (warpgroup == 0) {
        for (int linear = blockIdx.x; linear < tiles_m * tiles_n; linear += gridDim.x) {
            int tile_m, tile_n;
            bone_gemm_common::tile_at(linear, tiles_m, tiles_n, tile_m, tile_n);
            for (int t = 0; t < batch.tiles; ++t) {
                load_step(ring, full, empty, [&](int stage) {
                    unsigned char* a_tile = smem + stage * STAGE_BYTES;
                    const bone_gemm_common::KTile<TIn> k = batch.tile(t);
                    load_rows<A_LAYOUT, BM>(a_tile, k.a, k.lda, p.m, k.k_total, tile_m * BM, k.k0);
                    load_rows<B_LAYOUT, TILE_N>(a_tile + A_BYTES, k.b, k.ldb, p.n, k.k_total, tile_n * TILE_N, k.k0);
                });
            }
        }
        finish_loading();
        return;
    }
    const int rows = warpgroup - 1;  // this warpgroup's 64 rows of each tile: 0 or 1
    const bone_gemm_common::Output<TIn, TOut> out(p, z);
    // Descriptors of stage 0's tiles (this warpgroup's rows of A, and B).
    const uint64_t a_rows = bone_wgmma::descriptor(smem + rows * (64 / 8) * bone_wgmma::GROUP_BYTES);
    const uint64_t b_tile = bone_wgmma::descriptor(smem + A_BYTES);
    for (int linear = blockIdx.x; linear < tiles_m * tiles_n; linear += gridDim.x) {
        int tile_m, tile_n;
        bone_gemm_common::tile_at(linear, tiles_m, tiles_n, tile_m, tile_n);
        // A warpgroup whose rows all lie beyond M skips its products (uniformly, as wgmma
        // requires) but still takes and releases every stage.
        const bool rows_live = tile_m * BM + rows * 64 < p.m;
        float acc[TILE_N / 2] = {};
        compute_tile<A_LAYOUT, B_LAYOUT, TIn, TILE_N, STAGES, STAGE_BYTES>(acc, ring, batch.tiles, rows_live, full,
                                                                           empty, a_rows, b_tile);
        bone_wgmma::for_each_accumulator_pair<TILE_N>(acc, rows, [&](int row, int col, float v0, float v1) {
            out.store_pair(tile_m * BM + row, tile_n * TILE_N + col, v0, v1);
        });
    }
#else
    __trap();
#endif
}

}  // namespace bone_wgmma_ws
