// The dropout mask of struct BoneDropout (params.h), computed where it is used instead of
// kept: the same function of the seed and the element's index as bone_kernels::Dropout.
#pragma once
#include "params.h"

// splitmix64's output function on the seed advanced index + 1 steps: the high 32 bits.
__device__ __forceinline__ unsigned int bone_dropout_bits(unsigned long long seed, unsigned long long index) {
    unsigned long long z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (unsigned int)((z ^ (z >> 31)) >> 32);
}

// What element `index` (t K + k of X) is multiplied by: 0 or the scale (1 without dropout).
__device__ __forceinline__ float bone_dropout_factor(const BoneDropout& dropout, unsigned long long index) {
    if (dropout.threshold == 0) return 1.f;
    return bone_dropout_bits(dropout.seed, index) < dropout.threshold ? 0.f : dropout.scale;
}
