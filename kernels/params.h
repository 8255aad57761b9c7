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

// Threads per block of the element-wise merge kernels.
#define BONE_MERGE_THREADS 256
