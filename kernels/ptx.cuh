// The PTX instructions the GEMMs use, one wrapper each: cp.async (16 bytes, zero-fill),
// its commit and wait, ldmatrix (.trans) and mma.sync m16n8k16 bf16/f16 (gemm.cuh); the
// async-proxy fence and wgmma with its fences and groups (gemm_wgmma.cuh, sm_90a); mbarriers
// and cp.async's arrive-on (gemm_wgmma_ws.cuh). A host build of the
// kernels (host-kernels/, BONE_KERNELS_ON_HOST) supplies these same functions itself, as
// warp collectives, so that the rest of the kernel source runs unchanged on the CPU.
#pragma once
#ifndef BONE_KERNELS_ON_HOST
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace bone_ptx {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, or zeros when !valid (src-size 0 reads nothing).
__device__ __forceinline__ void copy16(void* dst, const void* src, bool valid) {
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void copy_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void copy_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// mma.sync m16n8k16 with f32 accumulators, for bf16 or f16 operands (T).
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
#define BONE_MMA(CTYPE, PTX_TYPE)                                                                            \
    template <>                                                                                              \
    __device__ __forceinline__ void mma<CTYPE>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                            \
                     ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                            \
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                        \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                        \
    }
BONE_MMA(__nv_bfloat16, "bf16")
BONE_MMA(__half, "f16")
#undef BONE_MMA

// The dynamic shared memory of the launch (its size is the launch's).
__device__ __forceinline__ unsigned char* dynamic_smem() {
    extern __shared__ __align__(1024) unsigned char bone_dynamic_smem[];
    return bone_dynamic_smem;
}

// Orders this thread's generic-proxy writes to shared memory (cp.async included) before
// later reads by the async proxy (wgmma's shared-memory operands).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// `value`, which every lane of the warp holds alike, read from lane 0: the compiler then
// knows it is warp-uniform (a branch on it does not diverge within a warp).
__device__ __forceinline__ int warp_uniform(int value) { return __shfl_sync(0xffffffffu, value, 0); }
// v from lane (this lane ^ lane_mask), for the whole warp (every lane must take part).
__device__ __forceinline__ void shfl_xor4(float (&v)[4], int lane_mask) {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = __shfl_xor_sync(0xffffffffu, v[e], lane_mask);
}

// mbarrier (sm_90): initialise with the arrival count of a phase (one thread, then
// mbarrier_init_fence and a block barrier), arrive, wait until the phase of the given
// parity has completed; copy_arrive is cp.async's arrive-on: this thread's arrival is the
// landing of every cp.async it issued before (noinc: it counts toward the phase's count).
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_addr(bar))
                 : "memory");
}
__device__ __forceinline__ bool mbarrier_try_wait(uint64_t* bar, int parity) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred done;\nmbarrier.try_wait.parity.shared::cta.b64 done, [%1], %2;\nselp.u32 %0, 1, 0, done;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
    return done != 0;
}
__device__ __forceinline__ uint64_t global_nanoseconds() {
    uint64_t ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
    return ns;
}
// A phase that has not completed after 10 s never will (a pipeline that lost a hand-over;
// a block time-sliced off its SM resumes within milliseconds): the launch fails with an
// error instead of hanging the stream.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, int parity) {
    if (mbarrier_try_wait(bar, parity)) return;
    const uint64_t start = global_nanoseconds();
    while (!mbarrier_try_wait(bar, parity)) {
        if (global_nanoseconds() - start > 10000000000ull) __trap();
    }
}
__device__ __forceinline__ void copy_arrive(uint64_t* bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// wgmma (sm_90a): fence before the first mma_async after registers were touched, commit
// the issued ones as a group, wait until at most N groups are pending.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accesses of the accumulators across wgmma's fences and
// waits (they are written asynchronously, behind its back).
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x N] += A[64 x 16] B[N x 16]^T from shared memory through matrix descriptors, T
// (bf16 or f16) operands, f32 accumulators (N / 2 per thread); TRANS_A / TRANS_B = 1 for an
// MN-major operand. N = 64, 128 or 256.
template <typename T, int N, int TRANS_A, int TRANS_B>
struct Wgmma;
// The operands of m64nNk16: N / 2 accumulators, then the descriptors, the scales and the
// transpose flags.
// Accumulator operands, 32 at a time: their "%i" names in the asm string, and their
// constraints (d[o] .. d[o + 31]).
#define BONE_REGS_0 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define BONE_REGS_32 \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define BONE_REGS_64 \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define BONE_REGS_96 \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define BONE_ACC_32(o) \
    "+f"(d[(o) + 0]), "+f"(d[(o) + 1]), "+f"(d[(o) + 2]), "+f"(d[(o) + 3]), "+f"(d[(o) + 4]), "+f"(d[(o) + 5]), "+f"(d[(o) + 6]), "+f"(d[(o) + 7]), \
    "+f"(d[(o) + 8]), "+f"(d[(o) + 9]), "+f"(d[(o) + 10]), "+f"(d[(o) + 11]), "+f"(d[(o) + 12]), "+f"(d[(o) + 13]), "+f"(d[(o) + 14]), "+f"(d[(o) + 15]), \
    "+f"(d[(o) + 16]), "+f"(d[(o) + 17]), "+f"(d[(o) + 18]), "+f"(d[(o) + 19]), "+f"(d[(o) + 20]), "+f"(d[(o) + 21]), "+f"(d[(o) + 22]), "+f"(d[(o) + 23]), \
    "+f"(d[(o) + 24]), "+f"(d[(o) + 25]), "+f"(d[(o) + 26]), "+f"(d[(o) + 27]), "+f"(d[(o) + 28]), "+f"(d[(o) + 29]), "+f"(d[(o) + 30]), "+f"(d[(o) + 31])
#define BONE_WGMMA_OPERANDS_64 "{" BONE_REGS_0 "}, %32, %33, 1, 1, 1, %34, %35;\n"
#define BONE_WGMMA_OUTPUTS_64 BONE_ACC_32(0)
#define BONE_WGMMA_OPERANDS_128 "{" BONE_REGS_0 ", " BONE_REGS_32 "}, %64, %65, 1, 1, 1, %66, %67;\n"
#define BONE_WGMMA_OUTPUTS_128 BONE_ACC_32(0), BONE_ACC_32(32)
#define BONE_WGMMA_OPERANDS_256 \
    "{" BONE_REGS_0 ", " BONE_REGS_32 ", " BONE_REGS_64 ", " BONE_REGS_96 "}, %128, %129, 1, 1, 1, %130, %131;\n"
#define BONE_WGMMA_OUTPUTS_256 BONE_ACC_32(0), BONE_ACC_32(32), BONE_ACC_32(64), BONE_ACC_32(96)
#define BONE_WGMMA(CTYPE, PTX_TYPE, N, OPERANDS, OUTPUTS)                                                          \
    template <int TRANS_A, int TRANS_B>                                                                             \
    struct Wgmma<CTYPE, N, TRANS_A, TRANS_B> {                                                                      \
        static __device__ __forceinline__ void mma(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b) {           \
            asm volatile("wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE " " OPERANDS       \
                         : OUTPUTS                                                                                  \
                         : "l"(desc_a), "l"(desc_b), "n"(TRANS_A), "n"(TRANS_B));                                   \
        }                                                                                                           \
    };
BONE_WGMMA(__nv_bfloat16, "bf16", 64, BONE_WGMMA_OPERANDS_64, BONE_WGMMA_OUTPUTS_64)
BONE_WGMMA(__nv_bfloat16, "bf16", 128, BONE_WGMMA_OPERANDS_128, BONE_WGMMA_OUTPUTS_128)
BONE_WGMMA(__nv_bfloat16, "bf16", 256, BONE_WGMMA_OPERANDS_256, BONE_WGMMA_OUTPUTS_256)
BONE_WGMMA(__half, "f16", 64, BONE_WGMMA_OPERANDS_64, BONE_WGMMA_OUTPUTS_64)
BONE_WGMMA(__half, "f16", 128, BONE_WGMMA_OPERANDS_128, BONE_WGMMA_OUTPUTS_128)
BONE_WGMMA(__half, "f16", 256, BONE_WGMMA_OPERANDS_256, BONE_WGMMA_OUTPUTS_256)
#undef BONE_WGMMA

template <typename T, int N, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b) {
    Wgmma<T, N, TRANS_A, TRANS_B>::mma(d, desc_a, desc_b);
}
}  // namespace bone_ptx
#endif

// The PTX ISA's accumulator layout (on the host as on the GPU): accumulator e (0..3) of an
// m16n8 mma tile, for thread `lane` of its warp, is at this row (0..15) and column (0..7).
// Each warp's 16 rows of a wgmma accumulator follow it too, 8 columns per four registers.
namespace bone_ptx {
__device__ __forceinline__ int fragment_row(int lane, int e) { return lane / 4 + (e / 2) * 8; }
__device__ __forceinline__ int fragment_col(int lane, int e) { return (lane % 4) * 2 + (e % 2); }
}  // namespace bone_ptx
