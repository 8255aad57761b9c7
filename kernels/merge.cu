// Merge: W' = W + dW for every variant, one output element per thread, f32 accumulation,
// rounded once to W's type. Deployment-time work: simple and bounds-safe over speed.
#include "numeric.cuh"
#include "params.h"

template <typename TW, typename TB>
__device__ __forceinline__ void merge_element(const BoneLayer layer, const TW* __restrict__ w,
                                              const TB* __restrict__ b, TW* __restrict__ out) {
    const long long total = (long long)layer.n * layer.k;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int row = (int)(idx / layer.k);
    const int col = (int)(idx - (long long)row * layer.k);
    const int r = layer.r;
    float acc = to_f32(w[idx]);
    switch (layer.variant) {
        case BONE_BAT_COL:
        case BONE_BAT_ROW: {
            // W'_{o,i} = W_{o,i} (I + B) + B, with B chosen by the output or input block.
            const int block = layer.variant == BONE_BAT_COL ? row / r : col / r;
            const TB* mixer = b + (long long)block * r * r;
            const int c = col % r;
            const TW* w_row = w + (long long)row * layer.k + (col - c);
            for (int j = 0; j < r; ++j) acc += to_f32(w_row[j]) * to_f32(mixer[j * r + c]);
            acc += to_f32(mixer[(row % r) * r + c]);
            break;
        }
        case BONE_SHARED:  // dW[n, k] = B[k mod r, n]
            acc += to_f32(b[(long long)(col % r) * layer.n + row]);
            break;
        case BONE_MINI:  // dW[n, k] = B[k mod r, n mod mini_r]
            acc += to_f32(b[(col % r) * layer.mini_r + row % layer.mini_r]);
            break;
    }
    out[idx] = from_f32<TW>(acc);
}

#define BONE_MERGE_KERNEL(W_NAME, TW, B_NAME, TB)                                                  \
    extern "C" __global__ void __launch_bounds__(BONE_MERGE_THREADS)                              \
        bone_merge_w_##W_NAME##_b_##B_NAME(const BoneLayer layer, const TW* __restrict__ w,       \
                                           const TB* __restrict__ b, TW* __restrict__ out) {      \
        merge_element<TW, TB>(layer, w, b, out);                                                   \
    }

#define BONE_MERGE_FOR_W(W_NAME, TW)              \
    BONE_MERGE_KERNEL(W_NAME, TW, f32, float)     \
    BONE_MERGE_KERNEL(W_NAME, TW, f16, __half)    \
    BONE_MERGE_KERNEL(W_NAME, TW, bf16, __nv_bfloat16)

BONE_MERGE_FOR_W(f32, float)
BONE_MERGE_FOR_W(f16, __half)
BONE_MERGE_FOR_W(bf16, __nv_bfloat16)
