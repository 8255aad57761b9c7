//! BatCol on the GPU. Nothing factors (bone-math.md), so W' must be formed; it is
//! formed a bounded window at a time (the merge kernel over a window), never whole:
//!   forward   for each slab of output rows: W'[slab, :] -> Y[:, slab] = X W'[slab, :]^T + bias
//!   backward  for each slab of output rows: G = dY[:, slab]^T X, dB_o = sum_i (W_{o,i} + I)^T G_{o,i};
//!             for each slab of input columns: W'[:, slab] -> dX[:, slab] = dY W'[:, slab]
//! The slabs hold at most `WINDOW_BYTES` of workspace. This is the correct, general first
//! version; forming each W' tile in shared memory inside the GEMM is the planned next step.

use super::handle::BoneKernels;
use super::launch::{gemm_params, launch_elementwise};
use super::params::BoneWindow;
use super::training::{Call, Pass};
use crate::error::Result;
use crate::shape::LayerShape;

/// Workspace a BatCol pass may use for its windows of W' (bf16) and G (f32).
const WINDOW_BYTES: usize = 32 << 20;

/// Rows of W' (and G) per slab: a multiple of 128 (so of r) fitting `WINDOW_BYTES`
/// with 6 bytes an element (bf16 W' + f32 G), at least 128, at most N.
fn slab_rows(layer: &LayerShape) -> usize {
    (WINDOW_BYTES / (6 * layer.k()) / 128 * 128).max(128).min(layer.n())
}

/// Columns of W' per slab for dX: a multiple of 128 fitting `WINDOW_BYTES` in bf16, at most K.
fn slab_cols(layer: &LayerShape) -> usize {
    (WINDOW_BYTES / (2 * layer.n()) / 128 * 128).max(128).min(layer.k())
}

/// Forward: a W' row slab. Backward: a W' window (row or column slab) and a G row slab.
pub(super) fn regions(layer: &LayerShape, _tokens: usize, pass: Pass) -> Vec<usize> {
    let row_slab = slab_rows(layer) * layer.k();
    match pass {
        Pass::Forward => vec![row_slab * 2],
        Pass::Backward => vec![row_slab.max(layer.n() * slab_cols(layer)) * 2, row_slab * 4],
    }
}

fn form_window(kernels: &BoneKernels, call: &Call, window: BoneWindow, out: u64) -> Result<()> {
    let name = format!("bone_merge_w_bf16_b_{}", call.b_suffix);
    let elements = window.rows as usize * window.cols as usize;
    launch_elementwise!(kernels, &name, elements, &call.layer, &window, &call.w, &call.b, &out);
    Ok(())
}

pub(super) fn forward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    let slab = slab_rows(&call.shape);
    for row0 in (0..n).step_by(slab) {
        let rows = slab.min(n - row0);
        let window = BoneWindow { row0: row0 as i32, col0: 0, rows: rows as i32, cols: k as i32, ld_out: k as i32 };
        form_window(kernels, call, window, regions[0])?;
        // Y[:, row0 .. row0 + rows] (row0 is a multiple of 128: 16-byte aligned offsets).
        let y = call.y + (row0 * 2) as u64;
        let mut params = gemm_params(call.x, k, regions[0], k, y, n, [t, rows, k]);
        if call.bias != 0 {
            params.bias = (call.bias + (row0 * 2) as u64) as *const _;
        }
        kernels.gemm("bone_gemm_kk_bf16", &params)?;
    }
    Ok(())
}

pub(super) fn backward(kernels: &BoneKernels, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    let (w_window, g) = (regions[0], regions[1]);
    let slab = slab_rows(&call.shape);
    for row0 in (0..n).step_by(slab) {
        let rows = slab.min(n - row0);
        // G [rows, K] = dY[:, row0 ..]^T X, reduced over T inside each GEMM tile (deterministic).
        let dy = call.y + (row0 * 2) as u64;
        kernels.gemm("bone_gemm_tt_f32", &gemm_params(dy, n, call.x, k, g, k, [rows, k, t]))?;
        let (first, count) = (row0 as i32, rows as i32);
        launch_elementwise!(
            kernels,
            "bone_col_block_grad",
            rows * call.shape.r(),
            &call.layer,
            &first,
            &count,
            &call.w,
            &g,
            &call.db
        );
    }
    if call.dx != 0 {
        let cols_slab = slab_cols(&call.shape);
        for col0 in (0..k).step_by(cols_slab) {
            let cols = cols_slab.min(k - col0);
            let window =
                BoneWindow { row0: 0, col0: col0 as i32, rows: n as i32, cols: cols as i32, ld_out: cols as i32 };
            form_window(kernels, call, window, w_window)?;
            let dx = call.dx + (col0 * 2) as u64;
            kernels.gemm("bone_gemm_kt_bf16", &gemm_params(call.y, n, w_window, cols, dx, k, [t, cols, n]))?;
        }
    }
    Ok(())
}
