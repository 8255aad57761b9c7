// The one definition of what Rust passes to the kernels. src/cuda/params/params_generated.rs
// is generated from this file by bindgen (tests/params_bindings.rs checks it is current).
#pragma once

// Which adapter a layer carries; matches bone_kernels::Variant.
enum BoneVariant {
    BONE_BAT_COL = 0,  // B: [N/r, r, r], block chosen by the output block
    BONE_BAT_ROW = 1,  // B: [K/r, r, r], block chosen by the input block
    BONE_SHARED = 2,   // B: [r, N]
    BONE_MINI = 3,     // B: [r, mini_r], repeated along N
};

// One adapted linear layer: W is [n, k] (nn.Linear.weight), blocks are r x r.
// Every element count of the call fits in int32 (checked on the host).
struct BoneLayer {
    int k;
    int n;
    int r;
    int mini_r;   // MiSS mini only, else 0
    int variant;  // enum BoneVariant
};

// Dropout on the shared block's adapter input (PEFT's miss_dropout; kernels/dropout.cuh):
// element (t, k) of X is kept, times scale (1 / (1 - p)), where 32 random bits drawn from
// seed for index t k_total + k are at least threshold (round(p 2^32)), else zeroed.
// threshold 0: no dropout (scale 1).
struct BoneDropout {
    unsigned long long seed;
    unsigned int threshold;
    float scale;
};

// The adapter's setup passes of one forward or backward, in one launch (bone_setup_*,
// kernels/adapter_passes.cu): each job whose output is not null takes
// ceil(elements / BONE_MERGE_THREADS) blocks of its own, in the order of the fields, one
// element per thread. x, s and tiling are of the activations' type TX, b of B's type TB,
// every other output TX.
struct BoneSetup {
    struct BoneLayer layer;
    int tokens;
    const void* x;        // S [tokens, r]: the sums of X's [tokens, k] r-wide chunks, after dropout
    void* s;
    void* s_saved;        // not null: S also here, [tokens, r] without bias columns (kept by the
                          // caller for a backward that reads S instead of X)
    struct BoneDropout dropout;
    const void* b;        // the adapter B
    void* full;           // Bfull [r, n] and Bfull^T [n, r] (shared, mini)
    void* full_t;
    const void* bias;     // not null: S is [tokens, r + BONE_BIAS_COLUMNS] with column r 1,
                          // Bfull^T [n, r + BONE_BIAS_COLUMNS] and E [tiling_rows, tiling_cols +
                          // BONE_BIAS_COLUMNS] have column r (tiling_cols) the bias; the rest 0
    void* bat_blocks;     // B_j, [bat_block_count, r, r] (BatRow, BatCol)
    int bat_block_count;
    void* stack;          // B_i side by side, [r, k] (BatRow)
    void* onehot;         // [k, r] (BatCol)
    void* tiling;         // E [tiling_rows, tiling_cols]: 1 where row mod r == column mod r
    int tiling_rows;
    int tiling_cols;
    void* ones;           // [ones_rows, r + BONE_BIAS_COLUMNS]: column r 1, the next ones 0 (the
    int ones_rows;        // columns before are not written: BatRow's R, its bias columns)
};

// Columns appended to S and Bfull^T to carry the bias through their product: one that
// holds it, and zeros so that the product's K extent stays a multiple of 8.
#define BONE_BIAS_COLUMNS 8

// Threads per block of the element-wise kernels (merge, adapter pre- and post-passes).
#define BONE_MERGE_THREADS 256
// Columns of dY one block of bone_bias_grad reduces: 128 bytes of a bf16/f16 row, read by
// 8 threads at 16 bytes each.
#define BONE_BIAS_GRAD_COLUMNS 64
// Its dynamic shared memory: each warp's f32 sums of the strip's columns
// (BONE_MERGE_THREADS / 32 warps x BONE_BIAS_GRAD_COLUMNS x 4 bytes).
#define BONE_BIAS_GRAD_SHARED_BYTES 2048

// Operand layouts of the tensor-core GEMM (kernels/gemm.cuh).
// A is [M, K]: BONE_K_MAJOR means a[m * lda + k], BONE_MN_MAJOR means a[k * lda + m].
// B is [N, K]: BONE_K_MAJOR means b[n * ldb + k], BONE_MN_MAJOR means b[k * ldb + n].
enum BoneLayout {
    BONE_K_MAJOR = 0,
    BONE_MN_MAJOR = 1,
};

// C[M, N] = A1 B1^T + A2 B2^T (+ addend) (+ bias[n]) (+ C when accumulate), bf16 operands,
// f32 accumulation, rounded once. The second pair is optional (k2 = 0); it appends a short
// product along K (the adapter's r-wide term) to the same accumulators. Batched over grid.z:
// batch z offsets every operand by z times its stride (in elements; 0 shares it).
// A long reduction with few output tiles may be cut into chunks (split_k > 0): chunk c
// reduces each product over its own K within [c split_k, (c + 1) split_k) (the last chunk
// may be shorter; the chunks are counted over the first product's K, so the second must
// be no longer: a short one falls in the first chunks only) and writes its
// own partial sums to C, so that the grid holds batches x chunks layers,
// z = c batches + batch: layer z writes C + z stride_c.
// The addend (null: none) is an [M, N] matrix of the operands' type laid out as C (ldc,
// stride_c), read in the epilogue: what a product adds to, exactly (W' = W + W B + B, where
// I + B rounded to the operands' type would lose B's diagonal); never with split_k.
// Element counts fit in int32; every leading dimension, stride, split_k and the contiguous
// extent of every operand and of C (n) are multiples of 8, and every pointer is 16-byte
// aligned (checked on the host): C's elements are stored two at a time.
struct BoneGemm {
    const void* a;
    const void* b;
    const void* a2;
    const void* b2;
    const void* bias;    // bf16 [n] or null
    const void* addend;  // [m, n] as C, of the operands' type, or null
    void* c;             // bf16 or f32, c[m * ldc + n]
    int m;
    int n;
    int k;
    int k2;
    int lda;
    int ldb;
    int lda2;
    int ldb2;
    int ldc;
    int accumulate;  // add to what c holds (read in c's type, added in f32, rounded once)
    int split_k;     // elements of K per chunk, or 0: one chunk
    long long stride_a;
    long long stride_b;
    long long stride_a2;
    long long stride_b2;
    long long stride_c;
};

// GEMM tile: BONE_GEMM_BM x BONE_GEMM_BN outputs per block of BONE_GEMM_THREADS threads,
// stepping BONE_GEMM_BK along K.
#define BONE_GEMM_BM 128
#define BONE_GEMM_BN 128
#define BONE_GEMM_BK 32
#define BONE_GEMM_THREADS 256
// The mma.sync GEMM's pipeline depth and its dynamic shared memory: 3 stages of two
// 128 x (32 + 8) tiles (60 KiB: two blocks an SM on sm_80 and sm_90, one on sm_86/89).
#define BONE_GEMM_STAGES 3
#define BONE_GEMM_SMEM_BYTES 61440
// BatCol's fused dB kernel (kernels/bat_col_grads.cu): the mma.sync pipeline (whose memory
// then holds a G tile) and a W tile of 128 x (128 + 8) past it; and the same on the wgmma
// pipeline (BONE_WGMMA_SMEM_BYTES below).
#define BONE_BAT_COL_GRADS_SMEM_BYTES 96256
#define BONE_BAT_COL_GRADS_WGMMA_SMEM_BYTES 198656
// and on the warp-specialised design (4 stages of two 128 x 64 tiles, the G and W tiles,
// 11 mbarriers).
#define BONE_BAT_COL_GRADS_WS_SMEM_BYTES 200792

// The sm_90a GEMM (kernels/gemm_wgmma.cuh): same tile and threads, its pipeline in this
// much dynamic shared memory (5 stages of two 128 x 64 bf16 tiles); and its wide
// version, 128 x BONE_WGMMA_WIDE_BN tiles (4 stages of 128 x 64 and 256 x 64).
#define BONE_WGMMA_SMEM_BYTES 163840
#define BONE_WGMMA_WIDE_BN 256
#define BONE_WGMMA_WIDE_SMEM_BYTES 196608
// and its narrow version for N <= 64: 128 x 64 tiles (4 stages of 128 x 64 and 64 x 64).
#define BONE_WGMMA_NARROW_BN 64
#define BONE_WGMMA_NARROW_SMEM_BYTES 98304
// The warp-specialised sm_90a GEMM (kernels/gemm_wgmma_ws.cuh): a warpgroup that loads and
// two that compute, BONE_WGMMA_WS_THREADS threads; its pipeline and mbarriers in this much
// dynamic shared memory: 6 stages of 128 x 64 and 128 x 64 tiles, for the wide tiles
// (128 x BONE_WGMMA_WIDE_BN) 4 stages of 128 x 64 and 256 x 64, and for the narrow ones
// (128 x BONE_WGMMA_NARROW_BN) 4 stages of 128 x 64 and 64 x 64 (two blocks an SM); 16
// bytes of mbarriers a stage.
#define BONE_WGMMA_WS_THREADS 384
#define BONE_WGMMA_WS_SMEM_BYTES 196704
#define BONE_WGMMA_WS_WIDE_SMEM_BYTES 196672
#define BONE_WGMMA_WS_NARROW_SMEM_BYTES 98368
