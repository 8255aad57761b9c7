// The GEMM instantiations the Rust side launches (names: bone_gemm_<A><B>_<out>, with
// k = K-major and t = MN-major operands), and the same for sm_90a's wgmma GEMM
// (bone_wgmma_<A><B>_<out>, 128 x 128 tiles, and bone_wgmma_wide_<A><B>_<out>, 128 x 256).
#include "gemm.cuh"
#include "gemm_wgmma.cuh"

#define BONE_GEMM_KERNEL(NAME, A_LAYOUT, B_LAYOUT, TOUT)                                \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS) NAME(const BoneGemm p) { \
        bone_gemm::gemm<A_LAYOUT, B_LAYOUT, TOUT>(p);                                    \
    }

BONE_GEMM_KERNEL(bone_gemm_kk_bf16, BONE_K_MAJOR, BONE_K_MAJOR, __nv_bfloat16)   // Y = X W^T, X~_i, U
BONE_GEMM_KERNEL(bone_gemm_kt_bf16, BONE_K_MAJOR, BONE_MN_MAJOR, __nv_bfloat16)  // dX = dY W, W'_o, dX_i
BONE_GEMM_KERNEL(bone_gemm_kt_f32, BONE_K_MAJOR, BONE_MN_MAJOR, float)          // dX += dY_slab W'_slab (f32)
BONE_GEMM_KERNEL(bone_gemm_tt_bf16, BONE_MN_MAJOR, BONE_MN_MAJOR, __nv_bfloat16) // G = dY^T X (bf16, feeds dB_o)
BONE_GEMM_KERNEL(bone_gemm_tt_f32, BONE_MN_MAJOR, BONE_MN_MAJOR, float)          // dB = S^T dY, dB_o, dB_i

#define BONE_WGMMA_KERNEL(NAME, A_LAYOUT, B_LAYOUT, TOUT, TILE_N)                               \
    extern "C" __global__ void __launch_bounds__(BONE_GEMM_THREADS, 1) NAME(const BoneGemm p) { \
        bone_wgmma::gemm<A_LAYOUT, B_LAYOUT, TOUT, TILE_N>(p);                                  \
    }
#define BONE_WGMMA_KERNELS(SUFFIX, A_LAYOUT, B_LAYOUT, TOUT)                                      \
    BONE_WGMMA_KERNEL(bone_wgmma_##SUFFIX, A_LAYOUT, B_LAYOUT, TOUT, 128)                        \
    BONE_WGMMA_KERNEL(bone_wgmma_wide_##SUFFIX, A_LAYOUT, B_LAYOUT, TOUT, BONE_WGMMA_WIDE_BN)

BONE_WGMMA_KERNELS(kk_bf16, BONE_K_MAJOR, BONE_K_MAJOR, __nv_bfloat16)
BONE_WGMMA_KERNELS(kt_bf16, BONE_K_MAJOR, BONE_MN_MAJOR, __nv_bfloat16)
BONE_WGMMA_KERNELS(kt_f32, BONE_K_MAJOR, BONE_MN_MAJOR, float)
BONE_WGMMA_KERNELS(tt_bf16, BONE_MN_MAJOR, BONE_MN_MAJOR, __nv_bfloat16)
BONE_WGMMA_KERNELS(tt_f32, BONE_MN_MAJOR, BONE_MN_MAJOR, float)
