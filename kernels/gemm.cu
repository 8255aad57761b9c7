// The GEMM instantiations the Rust side launches, named bone_gemm_<A><B>_<in>_<out>: A's
// and B's layouts (k = K-major, t = MN-major), the operands' type (bf16 or f16) and the
// output's (the operands' type, or f32); and the same on sm_90a's wgmma GEMM, as
// bone_wgmma_<...> (128 x 128 tiles), bone_wgmma_wide_<...> (128 x 256) and
// bone_wgmma_narrow_<...> (128 x 64); and on the warp-specialised wgmma GEMM, as
// bone_wgmma_ws_<...> (128 x 128), bone_wgmma_ws_wide_<...> (128 x 256) and
// bone_wgmma_ws_narrow_<...> (128 x 64).
#include "gemm.cuh"
#include "gemm_wgmma.cuh"
#include "gemm_wgmma_ws.cuh"

// The mma.sync GEMM asks for two blocks an SM (128 registers a thread at most: a kernel that
// needs more spills, which the build refuses, instead of silently running one block an SM).
#define BONE_GEMM_KERNELS(SUFFIX, A_LAYOUT, B_LAYOUT, TIN, TOUT)                                           \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS, 2)                                     \
        bone_gemm_##SUFFIX(const BoneGemm p) {                                                             \
        bone_gemm::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT>(p);                                                 \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS, 1) bone_wgmma_##SUFFIX(const BoneGemm p) { \
        bone_wgmma::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, 128>(p);                                           \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS, 1)                                     \
        bone_wgmma_wide_##SUFFIX(const BoneGemm p) {                                                       \
        bone_wgmma::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, BONE_WGMMA_WIDE_BN>(p);                            \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS, 2)                                     \
        bone_wgmma_narrow_##SUFFIX(const BoneGemm p) {                                                     \
        bone_wgmma::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, BONE_WGMMA_NARROW_BN>(p);                          \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_WGMMA_WS_THREADS, 1)                                 \
        bone_wgmma_ws_##SUFFIX(const BoneGemm p) {                                                         \
        bone_wgmma_ws::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, 128>(p);                                        \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_WGMMA_WS_THREADS, 1)                                 \
        bone_wgmma_ws_wide_##SUFFIX(const BoneGemm p) {                                                    \
        bone_wgmma_ws::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, BONE_WGMMA_WIDE_BN>(p);                         \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(BONE_WGMMA_WS_THREADS, 2)                                 \
        bone_wgmma_ws_narrow_##SUFFIX(const BoneGemm p) {                                                  \
        bone_wgmma_ws::gemm<A_LAYOUT, B_LAYOUT, TIN, TOUT, BONE_WGMMA_NARROW_BN>(p);                       \
    }

// What the passes use: Y = X W^T, X~_i, U, R (kk); partial sums of U and R over chunks
// (kk, f32); dX = dY W, W'_o, dX_i, dR (kt); dX += dY_slab W'_slab and partial sums of dR
// (kt, f32); G = dY^T X (tt); dB = S^T dY, dB_o, dB_i in f32 (tt, f32).
#define BONE_GEMM_KERNELS_FOR(IN, TIN)                                          \
    BONE_GEMM_KERNELS(kk_##IN##_##IN, BONE_K_MAJOR, BONE_K_MAJOR, TIN, TIN)     \
    BONE_GEMM_KERNELS(kk_##IN##_f32, BONE_K_MAJOR, BONE_K_MAJOR, TIN, float)    \
    BONE_GEMM_KERNELS(kt_##IN##_##IN, BONE_K_MAJOR, BONE_MN_MAJOR, TIN, TIN)    \
    BONE_GEMM_KERNELS(kt_##IN##_f32, BONE_K_MAJOR, BONE_MN_MAJOR, TIN, float)   \
    BONE_GEMM_KERNELS(tt_##IN##_##IN, BONE_MN_MAJOR, BONE_MN_MAJOR, TIN, TIN)   \
    BONE_GEMM_KERNELS(tt_##IN##_f32, BONE_MN_MAJOR, BONE_MN_MAJOR, TIN, float)

BONE_GEMM_KERNELS_FOR(bf16, __nv_bfloat16)
BONE_GEMM_KERNELS_FOR(f16, __half)
