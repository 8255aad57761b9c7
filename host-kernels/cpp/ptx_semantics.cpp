// What the PTX instructions compute, lane by lane: see ptx_semantics.h.
#include "ptx_semantics.h"

#include <cstring>
#include <tuple>

namespace bone_host {

namespace {

uint16_t element(const void* row, int index) {
    uint16_t v;
    std::memcpy(&v, static_cast<const char*>(row) + 2 * index, 2);
    return v;
}

// The 16-bit element in the low half of `bits`: bf16, or f16 when `f16`.
float to_float(uint32_t bits, bool f16) {
    if (f16) {
        const uint16_t h = uint16_t(bits & 0xffffu);
        _Float16 v;
        std::memcpy(&v, &h, 2);
        return float(v);
    }
    const uint32_t u = (bits & 0xffffu) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8i..8i+7 give the rows of matrix
// i; lane l receives, in register i, row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i
// (of its transpose with .trans), the lower column in the low half.
void ldmatrix_x4(const void* const (&rows)[WARP], bool trans, uint32_t (&out)[WARP][4]) {
    for (int i = 0; i < 4; ++i) {
        for (int l = 0; l < WARP; ++l) {
            const int row = l / 4, col = 2 * (l % 4);
            uint32_t lo, hi;
            if (!trans) {
                lo = element(rows[8 * i + row], col);
                hi = element(rows[8 * i + row], col + 1);
            } else {
                lo = element(rows[8 * i + col], row);
                hi = element(rows[8 * i + col + 1], row);
            }
            out[l][i] = lo | (hi << 16);
        }
    }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, D = A B + C with the PTX ISA's
// fragment layouts (g = lane / 4, q = lane % 4):
//   A (16 x 16): a[0] = A[g][2q..], a[1] = A[g+8][2q..], a[2] = A[g][2q+8..], a[3] = A[g+8][2q+8..]
//   B (16 x 8, k x n): b0 = B[2q..2q+1][g], b1 = B[2q+8..2q+9][g]
//   C, D (16 x 8): d[0..1] = C[g][2q..2q+1], d[2..3] = C[g+8][2q..2q+1]
// The products of bf16 or f16 values are exact in double; the sum is rounded once to f32.
void mma_m16n8k16(MmaLane (&lanes)[WARP], bool f16) {
    double a[16][16], b[16][8], c[16][8];
    float d[WARP][4];
    for (int l = 0; l < WARP; ++l) {
        const int g = l / 4, q = l % 4;
        const int a_rows[4] = {g, g + 8, g, g + 8}, a_cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
        for (int reg = 0; reg < 4; ++reg) {
            a[a_rows[reg]][a_cols[reg]] = to_float(lanes[l].a[reg], f16);
            a[a_rows[reg]][a_cols[reg] + 1] = to_float(lanes[l].a[reg] >> 16, f16);
        }
        for (int reg = 0; reg < 2; ++reg) {
            b[2 * q + 8 * reg][g] = to_float(lanes[l].b[reg], f16);
            b[2 * q + 8 * reg + 1][g] = to_float(lanes[l].b[reg] >> 16, f16);
        }
        for (int e = 0; e < 4; ++e) c[g + 8 * (e / 2)][2 * q + e % 2] = lanes[l].d[e];
    }
    for (int l = 0; l < WARP; ++l) {
        const int g = l / 4, q = l % 4;
        for (int e = 0; e < 4; ++e) {
            const int i = g + 8 * (e / 2), j = 2 * q + e % 2;
            double sum = c[i][j];
            for (int k = 0; k < 16; ++k) sum += a[i][k] * b[k][j];
            d[l][e] = float(sum);
        }
    }
    for (int l = 0; l < WARP; ++l) {
        for (int e = 0; e < 4; ++e) lanes[l].d[e] = d[l][e];
    }
}

namespace {

// Element (mn, k) of an operand in the no-swizzle canonical layout: 8 x 8 core matrices
// of 8 lines of 16 bytes, LBO bytes apart along K and SBO bytes apart along M or N; a
// line holds 8 consecutive k (K-major) or, transposed, 8 consecutive mn. Returns the
// byte offset in shared memory.
uint64_t operand_offset(uint64_t desc, int trans, int mn, int k) {
    const uint64_t start = (desc & 0x3FFF) << 4, lbo = ((desc >> 16) & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
    const uint64_t line = trans ? k % 8 : mn % 8, column = trans ? mn % 8 : k % 8;
    return start + (mn / 8) * sbo + (k / 8) * lbo + line * 16 + column * 2;
}

}  // namespace

// The raw bits of A (64 x 16, k fastest) then B (n x 16), or why they cannot be read.
std::string wgmma_operands(const WgmmaOp& op, const unsigned char* shared, size_t shared_bytes,
                           std::vector<uint16_t>& bits) {
    for (uint64_t desc : {op.desc_a, op.desc_b}) {
        if ((desc >> 62) != 0 || ((desc >> 49) & 7) != 0) return "only wgmma's no-swizzle layout with base offset 0 is modelled";
    }
    bits.clear();
    for (const auto& [desc, trans, rows] : {std::tuple{op.desc_a, op.trans_a, 64}, std::tuple{op.desc_b, op.trans_b, op.n}}) {
        for (int mn = 0; mn < rows; ++mn) {
            for (int k = 0; k < 16; ++k) {
                const uint64_t offset = operand_offset(desc, trans, mn, k);
                if (offset + 2 > shared_bytes) return "a wgmma operand reaches outside dynamic shared memory";
                uint16_t value;
                std::memcpy(&value, shared + offset, 2);
                bits.push_back(value);
            }
        }
    }
    return "";
}

// D[64 x n] += A[64 x 16] B[n x 16]^T. Thread l of the warpgroup holds, in d[4j + e],
// row 16 (l / 32) + (l % 32) / 4 + 8 (e / 2), column 8 j + 2 (l % 4) + e % 2. The
// products of 16-bit values are exact in double; each sum is rounded once to f32.
void wgmma_m64nNk16(const WgmmaOp& op, const std::vector<uint16_t>& bits) {
    auto a = [&](int row, int k) { return double(to_float(bits[16 * row + k], op.f16)); };
    auto b = [&](int col, int k) { return double(to_float(bits[16 * (64 + col) + k], op.f16)); };
    for (int l = 0; l < WARPGROUP; ++l) {
        const int row0 = 16 * (l / 32) + (l % 32) / 4, col0 = 2 * (l % 4);
        for (int j = 0; j < op.n / 8; ++j) {
            for (int e = 0; e < 4; ++e) {
                const int row = row0 + 8 * (e / 2), col = col0 + 8 * j + e % 2;
                double sum = op.d[l][4 * j + e];
                for (int k = 0; k < 16; ++k) sum += a(row, k) * b(col, k);
                op.d[l][4 * j + e] = float(sum);
            }
        }
    }
}

}  // namespace bone_host
