// What the PTX instructions the kernels use compute, given every participating lane's
// operands at once (the PTX ISA's fragment layouts and wgmma's shared-memory matrix
// descriptors). No scheduling here: runtime.cpp gathers the lanes and calls these.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bone_host {

constexpr int WARP = 32;
constexpr int WARPGROUP = 128;

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: `rows[l]` is lane l's row address.
void ldmatrix_x4(const void* const (&rows)[WARP], bool trans, uint32_t (&out)[WARP][4]);

// One lane's operands of mma.sync m16n8k16 -> f32; d is updated in place. The operands
// are bf16, or f16 when `f16`.
struct MmaLane {
    uint32_t a[4];
    uint32_t b[2];
    float d[4];
};
void mma_m16n8k16(MmaLane (&lanes)[WARP], bool f16);

// One wgmma.mma_async m64nNk16 -> f32: its width, operand type (bf16, or f16 when
// `f16`), descriptors, transpose flags, each thread's accumulators, and its operands' bits
// as they were when it was issued.
struct WgmmaOp {
    uint64_t desc_a, desc_b;
    int n, trans_a, trans_b;
    bool f16;
    float* d[WARPGROUP];
    std::vector<uint16_t> issued;
};
// Reads `op`'s operands from the `shared_bytes` of shared memory at `shared` into `bits`
// (A's 64 x 16, then B's n x 16, k fastest). Returns "" or why they cannot be read.
std::string wgmma_operands(const WgmmaOp& op, const unsigned char* shared, size_t shared_bytes,
                           std::vector<uint16_t>& bits);
// D += A B^T for `op`, from its operands' `bits` (wgmma_operands).
void wgmma_m64nNk16(const WgmmaOp& op, const std::vector<uint16_t>& bits);

}  // namespace bone_host
