// The CUDA dialect the kernels in kernels/ use, on the host: qualifiers, thread and block
// indices, __syncthreads, dynamic shared memory, bf16/f16 storage types and their
// conversions, and the PTX wrappers of kernels/ptx.cuh (cp.async, ldmatrix, mma.sync as
// warp collectives; wgmma as warpgroup collectives).
// Each CUDA thread runs as a fiber of runtime.cpp; every fiber of a block runs on one
// OS thread, so `static thread_local` storage is the block's shared memory.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __host__
#define __device__
#define __forceinline__ inline
#define __global__ __attribute__((used))
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
};

namespace bone_host {
// One CUDA thread's coordinates; `current` is the running fiber's.
struct Coordinates {
    dim3 thread_idx, block_idx, block_dim, grid_dim;
};
extern thread_local const Coordinates* current;
void sync_threads();
// cp.async: a 16-byte copy of `bytes` (0 or 16) source bytes, the rest zero-filled.
void async_copy(void* dst, const void* src, int bytes);
void async_commit();
void async_wait(int newest_pending);
// Fails the launch unless `p` is `bytes`-aligned (an access of that many bytes at once:
// the GPU would fault) and [p, p + bytes) stays out of the launch's forbidden ranges.
void require_access(const void* p, int bytes);
// `value`, which must be the same on every lane of the warp (a warp collective).
int warp_uniform(int value);
// v from lane (this lane ^ lane_mask), for the whole warp (a warp collective; the mask
// the same on every lane).
void shfl_xor4(float (&v)[4], int lane_mask);
// mbarriers in dynamic shared memory; copy_arrive hands the thread's copies not yet landed
// to the barrier, with one arrival (cp.async.mbarrier.arrive.noinc).
void mbarrier_init(const void* bar, int count);
void mbarrier_arrive(const void* bar);
void mbarrier_wait(const void* bar, int parity);
void copy_arrive(const void* bar);
void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans);
// mma.sync m16n8k16 -> f32 on bf16 operands, or f16 ones when `f16`.
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool f16);
// The block's dynamic shared memory, and an address's offset in it (what the GPU's
// shared window address is to wgmma's descriptors).
unsigned char* dynamic_shared();
uint32_t shared_offset(const void* p);
// wgmma as warpgroup collectives. mma_async only records the product; it is computed,
// reading shared memory then, when wgmma.wait_group retires its group.
void wgmma_fence();
void wgmma_commit();
void wgmma_wait(int newest_pending);
// D[64 x n] += A B^T, n = 64, 128 or 256, bf16 operands or f16 ones when `f16`; d holds the
// thread's n / 2 accumulators.
void wgmma_m64nNk16(float* d, int n, bool f16, uint64_t desc_a, uint64_t desc_b, int trans_a, int trans_b);
}  // namespace bone_host

#define threadIdx (::bone_host::current->thread_idx)
#define blockIdx (::bone_host::current->block_idx)
#define blockDim (::bone_host::current->block_dim)
#define gridDim (::bone_host::current->grid_dim)
inline void __syncthreads() { ::bone_host::sync_threads(); }
using std::max;  // CUDA's device max and min
using std::min;

struct alignas(8) float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

struct __nv_bfloat16 {
    uint16_t bits;
};
struct __half {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 v) {
    const uint32_t u = uint32_t(v.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// Round to nearest even, as __float2bfloat16_rn; NaN stays NaN.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};
    return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline float __half2float(__half v) {
    _Float16 h;
    std::memcpy(&h, &v.bits, 2);
    return float(h);
}
inline __half __float2half_rn(float f) {
    const _Float16 h = _Float16(f);  // IEEE round to nearest even
    __half v;
    std::memcpy(&v.bits, &h, 2);
    return v;
}

// kernels/ptx.cuh's wrappers, with the same signatures.
namespace bone_ptx {
inline void copy16(void* dst, const void* src, bool valid) { bone_host::async_copy(dst, src, valid ? 16 : 0); }
inline void copy_commit() { bone_host::async_commit(); }
template <int N>
inline void copy_wait() {
    bone_host::async_wait(N);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { bone_host::ldmatrix_x4(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { bone_host::ldmatrix_x4(r, p, true); }
template <typename T>
inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    bone_host::mma_m16n8k16(d, a, b0, b1, std::is_same<T, __half>::value);
}
inline unsigned char* dynamic_smem() { return bone_host::dynamic_shared(); }
inline int warp_uniform(int value) { return bone_host::warp_uniform(value); }
inline void shfl_xor4(float (&v)[4], int lane_mask) { bone_host::shfl_xor4(v, lane_mask); }
inline void mbarrier_init(uint64_t* bar, int count) { bone_host::mbarrier_init(bar, count); }
inline void mbarrier_init_fence() {}  // one memory here
inline void mbarrier_arrive(uint64_t* bar) { bone_host::mbarrier_arrive(bar); }
inline void mbarrier_wait(uint64_t* bar, int parity) { bone_host::mbarrier_wait(bar, parity); }
inline void copy_arrive(uint64_t* bar) { bone_host::copy_arrive(bar); }
inline uint32_t smem_addr(const void* p) { return bone_host::shared_offset(p); }
inline void fence_proxy_async() {}  // one memory here: nothing to order between proxies
inline void wgmma_fence() { bone_host::wgmma_fence(); }
inline void wgmma_commit() { bone_host::wgmma_commit(); }
template <int N>
inline void wgmma_wait() {
    bone_host::wgmma_wait(N);
}
template <int N>
inline void wgmma_fence_operands(float (&)[N]) {}  // the accumulators are written only at a wait here
template <typename T, int N, int TRANS_A, int TRANS_B>
inline void wgmma(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b) {
    bone_host::wgmma_m64nNk16(d, N, std::is_same<T, __half>::value, desc_a, desc_b, TRANS_A, TRANS_B);
}
}  // namespace bone_ptx
