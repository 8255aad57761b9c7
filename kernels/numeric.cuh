// Conversions between the storage types and f32, the type every kernel accumulates in.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// A vector access of `bytes` bytes at p needs p aligned to that size: the GPU faults
// otherwise. The host runtime, which would not, fails the launch instead, and also where
// the access touches memory past the buffers the launch was given (its guards), even if
// what is read is thrown away; on the GPU this is nothing.
__device__ __forceinline__ void require_access(const void* p, int bytes) {
#ifdef BONE_KERNELS_ON_HOST
    bone_host::require_access(p, bytes);
#else
    (void)p;
    (void)bytes;
#endif
}

// N adjacent elements loaded or stored in one access of N * sizeof(T) bytes: eight 16-bit
// ones or four f32 in 16 bytes (LDG.128 / STG.128 / STS.128), two 16-bit ones in 4.
template <typename T, int N>
struct alignas(sizeof(T) * N) Adjacent {
    T v[N];
};
template <typename T>
using Eight = Adjacent<T, 8>;
template <typename T>
using Two = Adjacent<T, 2>;
template <int N, typename T>
__device__ __forceinline__ Adjacent<T, N> load_adjacent(const T* p) {
    require_access(p, int(sizeof(T)) * N);
    return *reinterpret_cast<const Adjacent<T, N>*>(p);
}
template <typename T>
__device__ __forceinline__ Eight<T> load8(const T* p) {
    return load_adjacent<8>(p);
}
template <typename T>
__device__ __forceinline__ Two<T> load2(const T* p) {
    return load_adjacent<2>(p);
}
template <int N, typename T>
__device__ __forceinline__ void store_adjacent(T* p, const Adjacent<T, N>& v) {
    require_access(p, int(sizeof(T)) * N);
    *reinterpret_cast<Adjacent<T, N>*>(p) = v;
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const Eight<T>& v) {
    store_adjacent<8>(p, v);
}

// Two adjacent 16-bit outputs (lo at the lower address) rounded into one 32-bit word, by
// one conversion of the pair (cvt.rn.bf16x2.f32). Rounding a wgmma accumulator element by
// element into shared memory made ptxas serialize the wgmma pipeline before it (C7514).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
#ifdef BONE_KERNELS_ON_HOST
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    return uint32_t(from_f32<T>(lo).bits) | uint32_t(from_f32<T>(hi).bits) << 16;
}
#else
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
}
#endif
