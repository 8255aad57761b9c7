//! The shared block (PEFT's default) and MiSS mini on the GPU:
//!   forward   Y = X W^T + S Bfull + bias, S = sum_i X_i            (one GEMM, S Bfull appended along K)
//!   backward  dBfull = S^T dY, dX = dY W + tile_K(dY Bfull^T)     (two GEMMs + a short one)

use super::handle::BoneKernels;
use super::launch::{gemm_params, launch_elementwise, with_second};
use super::training::{Call, Pass};
use crate::error::Result;
use crate::shape::LayerShape;
use crate::variant::Variant;

/// S `[T, r]` bf16, Bfull `[r, N]` bf16, Bfull^T `[N, r]` bf16; backward adds
/// U = dY Bfull^T `[T, r]` bf16, the tiling matrix `[r, K]` bf16 and, for mini, dBfull `[r, N]` f32.
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass) -> Vec<usize> {
    let (r, n, k) = (layer.r(), layer.n(), layer.k());
    let mut sizes = vec![tokens * r * 2, r * n * 2, n * r * 2];
    if pass == Pass::Backward {
        let mini = matches!(layer.variant(), Variant::Mini { .. });
        sizes.extend([tokens * r * 2, r * k * 2, if mini { r * n * 4 } else { 0 }]);
    }
    sizes
}

/// S and the two layouts of Bfull, into regions 0, 1, 2.
fn prepare(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    let (layer, tokens, r, n) = (&call.layer, call.tokens as i32, call.shape.r(), call.shape.n());
    launch_elementwise!(kernels, "bone_chunk_sum", call.tokens * r, layer, &tokens, &call.x, &regions[0]);
    let name = format!("bone_shared_blocks_b_{}", call.b_suffix);
    launch_elementwise!(kernels, &name, r * n, layer, &call.b, &regions[1], &regions[2]);
    Ok(())
}

pub(super) fn forward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(kernels, call, regions)?;
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let mut params =
        with_second(gemm_params(call.x, k, call.w, k, call.y, n, [t, n, k]), regions[0], r, regions[2], r, r);
    params.bias = call.bias as *const _;
    kernels.gemm("bone_gemm_kk_bf16", &params)
}

pub(super) fn backward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(kernels, call, regions)?;
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    // dBfull [r, N] = S^T dY: both operands are read along T.
    let mini = matches!(call.shape.variant(), Variant::Mini { .. });
    let db_full = if mini { regions[5] } else { call.db };
    kernels.gemm("bone_gemm_tt_f32", &gemm_params(regions[0], r, call.y, n, db_full, n, [r, n, t]))?;
    if mini {
        let mini_r = call.layer.mini_r as usize;
        launch_elementwise!(kernels, "bone_mini_fold", r * mini_r, &call.layer, &db_full, &call.db);
    }
    if call.dx != 0 {
        // U [T, r] = dY Bfull^T, then dX = dY W + U E with E [r, K] tiling U along K.
        let (u, tiling) = (regions[3], regions[4]);
        kernels.gemm("bone_gemm_kk_bf16", &gemm_params(call.y, n, regions[1], n, u, r, [t, r, n]))?;
        let (rows, cols, block) = (r as i32, k as i32, r as i32);
        launch_elementwise!(kernels, "bone_tiled_identity", r * k, &rows, &cols, &block, &tiling);
        let params = with_second(gemm_params(call.y, n, call.w, k, call.dx, k, [t, k, n]), u, r, tiling, k, r);
        kernels.gemm("bone_gemm_kt_bf16", &params)?;
    }
    Ok(())
}
