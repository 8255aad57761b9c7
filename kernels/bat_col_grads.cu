// BatCol's dB fused into the GEMM over tokens, so that G = dY^T X never reaches device memory:
//   dB_o = sum_i (W_{o,i} + I)^T G_{o,i},   G_{o,i} = dY_o^T X_i   (bone-math.md)
// A block owns 128 rows of N (128 / R output blocks o) and a run of 128-wide K tiles (input
// blocks i). Per K tile it computes its G tile on a GEMM's main loop (mma.sync, gemm.cuh, or
// wgmma on sm_90a, gemm_wgmma.cuh), rounds it once to the activations' type into shared
// memory next to the matching W tile, and adds
// W_{o,i}^T G_{o,i} (tensor cores) and G_{o,i} (the identity's term) to dB's accumulators:
// warp w holds rows 16 w .. 16 w + 15 of the block's [128, R] slice of dB ([N / R, R, R]
// read as [N, R]). The accumulators go out once, as this run's partial sums; a fixed-order
// pass sums the runs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "gemm.cuh"
#include "gemm_wgmma.cuh"
#include "gemm_wgmma_ws.cuh"
#include "params.h"

namespace bone_bat_col_grads {

using namespace bone_ptx;
using bone_gemm::TILE_ELEMS;
constexpr int TILE = BONE_GEMM_BM;                       // rows of N and columns of K per tile
constexpr int PITCH = bone_gemm::MN_MAJOR_PITCH;        // smem row of a G or W tile: [128][PITCH]
static_assert(BONE_GEMM_BM == BONE_GEMM_BN, "square tiles");
constexpr int TILE_BYTES = TILE * PITCH * 2;           // a G or W tile
static_assert(TILE_BYTES <= BONE_GEMM_SMEM_BYTES, "G's tile fits in the pipeline's memory");
static_assert(BONE_GEMM_SMEM_BYTES + TILE_BYTES == BONE_BAT_COL_GRADS_SMEM_BYTES, "params.h states the size");
static_assert(BONE_WGMMA_SMEM_BYTES + TILE_BYTES == BONE_BAT_COL_GRADS_WGMMA_SMEM_BYTES, "and this one");

// G's elements (row, col) and (row, col + 1), rounded into its tile as one 32-bit word.
template <typename TX>
__device__ __forceinline__ void store_pair(TX* g_tile, int row, int col, float v0, float v1) {
    bone_gemm_common::store2<TX>(g_tile + row * PITCH + col, v0, v1);
}

// G's tile [rows row0.., columns col0..] = dY[:, rows]^T X[:, columns] over T, on the
// mma.sync main loop in the first PIPELINE_BYTES of `smem`, then (after a barrier: that
// memory becomes G's) rounded into g_tile as [row][column].
struct MmaSync {
    static constexpr int PIPELINE_BYTES = BONE_GEMM_SMEM_BYTES;
    template <typename TX>
    __device__ __forceinline__ static void g_tile(unsigned char* smem, int tokens, int n, int k, int row0, int col0,
                                                  const TX* dy, const TX* x, TX* g_tile) {
        using namespace bone_gemm;
        float acc[4][4][4] = {};
        main_loop<BONE_MN_MAJOR, BONE_MN_MAJOR>(acc, reinterpret_cast<TX*>(smem), (tokens + BK - 1) / BK,
                                                [&](int t, TX* a_tile, TX* b_tile) {
                                                    load_tile<BONE_MN_MAJOR>(a_tile, dy, n, n, tokens, row0, t * BK);
                                                    load_tile<BONE_MN_MAJOR>(b_tile, x, k, k, tokens, col0, t * BK);
                                                });
        __syncthreads();
        for_each_accumulator_pair(acc, [&](int row, int col, float v0, float v1) { store_pair(g_tile, row, col, v0, v1); });
    }
};

// The same on the wgmma main loop (sm_90a).
struct Wgmma {
    static constexpr int PIPELINE_BYTES = BONE_WGMMA_SMEM_BYTES;
    template <typename TX>
    __device__ __forceinline__ static void g_tile(unsigned char* smem, int tokens, int n, int k, int row0, int col0,
                                                  const TX* dy, const TX* x, TX* g_tile) {
        using namespace bone_wgmma;
        float acc[TILE / 2] = {};
        main_loop<BONE_MN_MAJOR, BONE_MN_MAJOR, TX, TILE>(
            acc, smem, (tokens + BK - 1) / BK, true, [&](int t, unsigned char* a_tile, unsigned char* b_tile) {
                load_tile<BONE_MN_MAJOR, TILE>(a_tile, dy, n, n, tokens, row0, t * BK);
                load_tile<BONE_MN_MAJOR, TILE>(b_tile, x, k, k, tokens, col0, t * BK);
            });
        __syncthreads();
        for_each_accumulator_pair<TILE>(acc, threadIdx.x / 128, [&](int row, int col, float v0, float v1) {
            store_pair(g_tile, row, col, v0, v1);
        });
    }
};

// Where chunk c of W's tile goes: row c / 16's 8 columns (c % 16) * 8 .., as [row][column].
struct WPlace {
    static __host__ __device__ constexpr bone_gemm_common::ChunkPlace at(int c) {
        const int row = c / (TILE / 8), col = (c % (TILE / 8)) * 8;
        return {row, col, (row * PITCH + col) * 2};
    }
};

// db[a, b] += sum_q W_{o,i}[q, a] G_{o,i}[q, b] + G_{o,i}[a, b] over a K tile's blocks i,
// for warp `warp` (0..7) of the eight holding dB's accumulators: its 16 rows a0.. of
// output block o_local (R >= 16). A = W_{o,i}^T and B^T = G_{o,i}, both read MN-major
// (row q of the block, then a or b) from the [row][column] tiles.
template <typename TX, int R>
__device__ __forceinline__ void add_tile_grads(float (&db)[R / 8][4], const TX* w_tile, const TX* g_tile, int warp,
                                               int lane) {
    const int o_local = warp * 16 / R, a0 = warp * 16 % R;
    const TX* w_rows = w_tile + o_local * R * PITCH;
    const TX* g_rows = g_tile + o_local * R * PITCH;
#pragma unroll
    for (int i = 0; i < TILE / R; ++i) {
#pragma unroll
        for (int q = 0; q < R; q += 16) {
            uint32_t a[4];
            bone_gemm::a_fragment<BONE_MN_MAJOR>(a, w_rows + i * R, a0, q, lane);
#pragma unroll
            for (int j = 0; j < R / 16; ++j) {
                uint32_t b[4];
                bone_gemm::b_fragments<BONE_MN_MAJOR>(b, g_rows + i * R, j * 16, q, lane);
                mma<TX>(db[2 * j], a, b[0], b[1]);
                mma<TX>(db[2 * j + 1], a, b[2], b[3]);
            }
        }
        // G's own term: accumulators e and e + 1 are adjacent columns of a row, read as one
        // 4-byte pair (col is even, and so are PITCH and R).
#pragma unroll
        for (int j = 0; j < R / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; e += 2) {
                const int row = a0 + fragment_row(lane, e), col = j * 8 + fragment_col(lane, e);
                const Two<TX> g = load2(g_rows + row * PITCH + i * R + col);
                db[j][e] += to_f32(g.v[0]);
                db[j][e + 1] += to_f32(g.v[1]);
            }
    }
}

// This run's partial sums out[blockIdx.y][n, b] from warp `warp`'s accumulators, added to
// what out holds where `accumulate` (rows beyond N are not written).
template <int R>
__device__ __forceinline__ void store_grads(const float (&db)[R / 8][4], float* out, int accumulate, int n, int row0,
                                            int warp, int lane) {
    float* run_out = out + (long long)blockIdx.y * n * R;
#pragma unroll
    for (int j = 0; j < R / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = row0 + warp * 16 + fragment_row(lane, e), col = j * 8 + fragment_col(lane, e);
            if (row >= n) continue;
            float* here = run_out + (long long)row * R + col;
            *here = accumulate ? *here + db[j][e] : db[j][e];
        }
}

// out[run][n, b] (f32, [runs, N, R]) (+)= sum over this block's K tiles of dB's terms for
// rows n of its 128 (rows beyond N are not written; `accumulate`: added to what out
// holds). dy [T, N], x [T, K], w [N, K]; K tiles run blockIdx.y * tiles_per_run onwards.
// Engine: MmaSync or Wgmma, G's main loop.
template <typename Engine, typename TX, int R>
__device__ __forceinline__ void bat_col_grads(int tokens, int n, int k, int tiles_per_run, int accumulate,
                                              const TX* __restrict__ dy, const TX* __restrict__ x,
                                              const TX* __restrict__ w, float* __restrict__ out) {
    static_assert(TILE % R == 0 && R % 16 == 0, "r divides the tile and the warp's 16 rows");
    unsigned char* smem = dynamic_smem();
    TX* g_tile = reinterpret_cast<TX*>(smem);                           // after each main loop
    TX* w_tile = reinterpret_cast<TX*>(smem + Engine::PIPELINE_BYTES);  // past the pipeline
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int row0 = blockIdx.x * TILE;
    float db[R / 8][4] = {};

    const int k_tiles = (k + TILE - 1) / TILE;
    const int first = blockIdx.y * tiles_per_run, last = min(k_tiles, first + tiles_per_run);
    for (int kt = first; kt < last; ++kt) {
        const int col0 = kt * TILE;
        // W's tile [128 rows of N, 128 columns of K] (zero beyond N or K), as [row][column],
        // copied while the main loop starts: its commit group is older than every tile's, so
        // it has landed when tile 0 has.
        bone_gemm_common::copy_tile<BONE_K_MAJOR, WPlace, TILE * TILE / 8, BONE_GEMM_THREADS>(
            reinterpret_cast<unsigned char*>(w_tile), w, k, n, k, row0, col0);
        copy_commit();
        Engine::g_tile(smem, tokens, n, k, row0, col0, dy, x, g_tile);
        __syncthreads();  // G's tile stored, everyone's W copies visible

        add_tile_grads<TX, R>(db, w_tile, g_tile, warp, lane);
        __syncthreads();  // done with both tiles before the next main loop and W copy refill them
    }
    store_grads<R>(db, out, accumulate, n, row0, warp, lane);
}

// The same on the warp-specialised wgmma GEMM's design (gemm_wgmma_ws.cuh, sm_90a;
// BONE_WGMMA_WS_THREADS threads): warpgroup 0 copies, into the stages of a pipeline that
// runs on across the block's K tiles (never drained and refilled between them), each K
// tile's W tile and then its dY and X tiles along T; warpgroups 1 and 2 compute G's tile
// (64 rows each) and, once it is rounded into g_tile, its eight warps add the tile's dB
// terms, while the loaders fill the stages with the next K tile's steps. Besides the stages' mbarriers: w_full / w_empty hand the W tile over, and
// g_sync, arrived on and waited for by the 256 computing threads, is their barrier
// around g_tile (all of G stored before any warp reads it; all reads done before the next
// K tile's G overwrites it).
struct WarpSpecialized {
    static constexpr int STAGES = 4;
    using Tiles = bone_wgmma::Pipeline<TILE>;  // a stage: dY's tile, then X's, 128 x 64 each
    static constexpr int G_TILE = STAGES * Tiles::STAGE_BYTES, W_TILE = G_TILE + TILE_BYTES;
    static constexpr int BARRIERS = W_TILE + TILE_BYTES;  // full[STAGES], empty[STAGES], w_full, w_empty, g_sync
    static constexpr int SMEM_BYTES = BARRIERS + (2 * STAGES + 3) * 8;
};
static_assert(WarpSpecialized::SMEM_BYTES == BONE_BAT_COL_GRADS_WS_SMEM_BYTES, "params.h states the size");

template <typename TX, int R>
__device__ __forceinline__ void bat_col_grads_ws(int tokens, int n, int k, int tiles_per_run, int accumulate,
                                                 const TX* __restrict__ dy, const TX* __restrict__ x,
                                                 const TX* __restrict__ w, float* __restrict__ out) {
    static_assert(TILE % R == 0 && R % 16 == 0, "r divides the tile and the warp's 16 rows");
    using namespace bone_wgmma_ws;
    using Layout = WarpSpecialized;
    constexpr int STAGES = Layout::STAGES, STAGE_BYTES = Layout::Tiles::STAGE_BYTES;
    constexpr int A_BYTES = Layout::Tiles::A_BYTES;
    unsigned char* smem = dynamic_smem();
    TX* g_tile = reinterpret_cast<TX*>(smem + Layout::G_TILE);
    TX* w_tile = reinterpret_cast<TX*>(smem + Layout::W_TILE);
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + Layout::BARRIERS);
    uint64_t* empty = full + STAGES;
    uint64_t *w_full = empty + STAGES, *w_empty = w_full + 1, *g_sync = w_full + 2;
    if (threadIdx.x == 0) {
        init_stages<STAGES>(full, empty);
        mbarrier_init(w_full, LOADERS);
        mbarrier_init(w_empty, COMPUTING);
        mbarrier_init(g_sync, COMPUTING);
        mbarrier_init_fence();
    }
    __syncthreads();  // the only block barrier: the mbarriers are initialised
    const int row0 = blockIdx.x * TILE;
    const int k_tiles = (k + TILE - 1) / TILE, t_steps = (tokens + bone_wgmma::BK - 1) / bone_wgmma::BK;
    const int first = blockIdx.y * tiles_per_run, last = min(k_tiles, first + tiles_per_run);
    const int warpgroup = warp_uniform(threadIdx.x / 128);
    Ring<STAGES> ring;
    int w_phase = 0;  // the W tile's use, as a parity: one use per K tile
    if (warpgroup == 0) {
        for (int kt = first; kt < last; ++kt, w_phase ^= 1) {
            for (int t = 0; t < t_steps; ++t) {
                load_step(ring, full, empty, [&](int stage) {
                    unsigned char* a_tile = smem + stage * STAGE_BYTES;
                    load_rows<BONE_MN_MAJOR, TILE>(a_tile, dy, n, n, tokens, row0, t * bone_wgmma::BK);
                    load_rows<BONE_MN_MAJOR, TILE>(a_tile + A_BYTES, x, k, k, tokens, kt * TILE, t * bone_wgmma::BK);
                });
            }
            // W's tile [128 rows of N, 128 columns of K] as [row][column], needed only after
            // the tile's G: copied after its steps, once the last K tile's dB terms are
            // done with it, so the next K tile's steps fill the stages during them.
            mbarrier_wait(w_empty, w_phase ^ 1);
            bone_gemm_common::copy_tile<BONE_K_MAJOR, WPlace, TILE * TILE / 8, LOADERS>(
                reinterpret_cast<unsigned char*>(w_tile), w, k, n, k, row0, kt * TILE);
            copy_arrive(w_full);
        }
        finish_loading();
        return;
    }
    const int rows = warpgroup - 1, warp = (threadIdx.x - LOADERS) / 32, lane = threadIdx.x % 32;
    const uint64_t a_rows = bone_wgmma::descriptor(smem + rows * (64 / 8) * bone_wgmma::GROUP_BYTES);
    const uint64_t b_tile = bone_wgmma::descriptor(smem + A_BYTES);
    float db[R / 8][4] = {};
    for (int kt = first; kt < last; ++kt, w_phase ^= 1) {
        float acc[TILE / 2] = {};
        // G's tile; its last stage is free for the next K tile's steps on return.
        compute_tile<BONE_MN_MAJOR, BONE_MN_MAJOR, TX, TILE, STAGES, STAGE_BYTES>(acc, ring, t_steps, true, full, empty,
                                                                                  a_rows, b_tile);
        bone_wgmma::for_each_accumulator_pair<TILE>(
            acc, rows, [&](int row, int col, float v0, float v1) { store_pair(g_tile, row, col, v0, v1); });
        // g_sync completes two phases a K tile, so they have parities 0 and 1 in every one.
        mbarrier_arrive(g_sync);  // all of G's tile stored ...
        mbarrier_wait(g_sync, 0);
        mbarrier_wait(w_full, w_phase);  // ... and W's landed
        add_tile_grads<TX, R>(db, w_tile, g_tile, warp, lane);
        mbarrier_arrive(w_empty);  // this thread is done with W's tile
        mbarrier_arrive(g_sync);   // and with G's: the next K tile may store its own
        mbarrier_wait(g_sync, 1);
    }
    store_grads<R>(db, out, accumulate, n, row0, warp, lane);
}

}  // namespace bone_bat_col_grads

// Blocks an SM keeps resident: two (at most 128 registers a thread, like the GEMM's) where
// that compiles without spills (sm_90a, r = 16), else one.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define BONE_BAT_COL_GRADS_MIN_BLOCKS(R) ((R) == 16 ? 2 : 1)
#else
#define BONE_BAT_COL_GRADS_MIN_BLOCKS(R) 1
#endif

// One version's entry point, with the signature every version shares: `KERNEL` (a
// parenthesised function) runs the block.
#define BONE_BAT_COL_GRADS_ENTRY(NAME, THREADS, MIN_BLOCKS, TX, KERNEL)                                       \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                         \
        NAME(int tokens, int n, int k, int tiles_per_run, int accumulate, const TX* __restrict__ dy,         \
             const TX* __restrict__ x, const TX* __restrict__ w, float* __restrict__ out) {                  \
        KERNEL(tokens, n, k, tiles_per_run, accumulate, dy, x, w, out);                                       \
    }
// The wgmma versions' kernels on sm_90a; elsewhere a trap.
#if BONE_HAS_WGMMA
#define BONE_BAT_COL_GRADS_SM90A(KERNEL) KERNEL
#else
#define BONE_BAT_COL_GRADS_SM90A(KERNEL) bone_bat_col_grads::trap_elsewhere
namespace bone_bat_col_grads {
template <typename... Args>
__device__ __forceinline__ void trap_elsewhere(Args...) {
    __trap();
}
}  // namespace bone_bat_col_grads
#endif

// Grid (ceil(N / 128), runs of K tiles), each version's threads and dynamic shared memory:
//   bone_bat_col_grads_x_<X>_r<R>        mma.sync, BONE_GEMM_THREADS, BONE_BAT_COL_GRADS_SMEM_BYTES;
//   bone_bat_col_grads_wgmma_x_<X>_r<R>  sm_90a, BONE_GEMM_THREADS, BONE_BAT_COL_GRADS_WGMMA_SMEM_BYTES;
//   bone_bat_col_grads_ws_x_<X>_r<R>     sm_90a, BONE_WGMMA_WS_THREADS, BONE_BAT_COL_GRADS_WS_SMEM_BYTES.
#define BONE_BAT_COL_GRADS(X_NAME, TX, R)                                                                       \
    BONE_BAT_COL_GRADS_ENTRY(bone_bat_col_grads_x_##X_NAME##_r##R, BONE_GEMM_THREADS,                          \
                             BONE_BAT_COL_GRADS_MIN_BLOCKS(R), TX,                                            \
                             (bone_bat_col_grads::bat_col_grads<bone_bat_col_grads::MmaSync, TX, R>))         \
    BONE_BAT_COL_GRADS_ENTRY(                                                                                 \
        bone_bat_col_grads_wgmma_x_##X_NAME##_r##R, BONE_GEMM_THREADS, 1, TX,                                 \
        BONE_BAT_COL_GRADS_SM90A((bone_bat_col_grads::bat_col_grads<bone_bat_col_grads::Wgmma, TX, R>)))      \
    BONE_BAT_COL_GRADS_ENTRY(bone_bat_col_grads_ws_x_##X_NAME##_r##R, BONE_WGMMA_WS_THREADS, 1, TX,           \
                             BONE_BAT_COL_GRADS_SM90A((bone_bat_col_grads::bat_col_grads_ws<TX, R>)))
#define BONE_BAT_COL_GRADS_FOR(X_NAME, TX) \
    BONE_BAT_COL_GRADS(X_NAME, TX, 16)     \
    BONE_BAT_COL_GRADS(X_NAME, TX, 32)     \
    BONE_BAT_COL_GRADS(X_NAME, TX, 64)     \
    BONE_BAT_COL_GRADS(X_NAME, TX, 128)

BONE_BAT_COL_GRADS_FOR(bf16, __nv_bfloat16)
BONE_BAT_COL_GRADS_FOR(f16, __half)
