//! BatRow on the GPU, in the factored form of bone-math.md:
//!   forward   X~_i = X_i (I + B_i)^T, R = sum_i X_i B_i^T, Y = X~ W^T + R tiled over output blocks + bias
//!   backward  dX~ = dY W, dR = sum_o dY_o, dX_i = dX~_i (I + B_i) + dR B_i, dB_i = (dX~_i + dR)^T X_i

use super::handle::BoneKernels;
use super::launch::{gemm_params, launch_elementwise, with_second};
use super::training::{Call, Pass};
use crate::error::Result;
use crate::shape::LayerShape;

/// Forward: X~ `[T, K]` bf16, R `[T, r]` bf16, the tiling matrix `[N, r]` bf16.
/// Backward: dX~ `[T, K]` f32, dR `[T, r]` f32.
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass) -> Vec<usize> {
    let (r, n, k) = (layer.r(), layer.n(), layer.k());
    match pass {
        Pass::Forward => vec![tokens * k * 2, tokens * r * 2, n * r * 2],
        Pass::Backward => vec![tokens * k * 4, tokens * r * 4],
    }
}

pub(super) fn forward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (x_mixed, carry, tiling) = (regions[0], regions[1], regions[2]);
    let (layer, tokens, suffix) = (&call.layer, t as i32, call.b_suffix);
    launch_elementwise!(
        kernels,
        &format!("bone_row_mix_b_{suffix}"),
        t * k,
        layer,
        &tokens,
        &call.x,
        &call.b,
        &x_mixed
    );
    launch_elementwise!(
        kernels,
        &format!("bone_row_carry_b_{suffix}"),
        t * r,
        layer,
        &tokens,
        &call.x,
        &call.b,
        &carry
    );
    let (rows, cols, block) = (n as i32, r as i32, r as i32);
    launch_elementwise!(kernels, "bone_tiled_identity", n * r, &rows, &cols, &block, &tiling);
    let mut params = with_second(gemm_params(x_mixed, k, call.w, k, call.y, n, [t, n, k]), carry, r, tiling, r, r);
    params.bias = call.bias as *const _;
    kernels.gemm("bone_gemm_kk_bf16", &params)
}

pub(super) fn backward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (dx_mixed, d_carry) = (regions[0], regions[1]);
    let (layer, tokens) = (&call.layer, t as i32);
    kernels.gemm("bone_gemm_kt_f32", &gemm_params(call.y, n, call.w, k, dx_mixed, k, [t, k, n]))?;
    launch_elementwise!(kernels, "bone_row_carry_grad", t * r, layer, &tokens, &call.y, &d_carry);
    if call.dx != 0 {
        let name = format!("bone_row_input_grad_b_{}", call.b_suffix);
        launch_elementwise!(kernels, &name, t * k, layer, &tokens, &dx_mixed, &d_carry, &call.b, &call.dx);
    }
    launch_elementwise!(kernels, "bone_row_block_grad", k * r, layer, &tokens, &dx_mixed, &d_carry, &call.x, &call.db);
    Ok(())
}
