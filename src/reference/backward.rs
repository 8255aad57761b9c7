//! Backward pass: dX, dB and dbias from dY, each variant in its own form.

use nalgebra::{DMatrix, DMatrixView};

use super::blocks::{
    bat_block, check_input, check_output, check_weights, chunk_sum, dropout_factor, fold_shared_grad, matrix,
    row_major, shared_block, transpose_of, weight_block,
};
use super::forward::adapted_block;
use crate::dropout::Dropout;
use crate::error::Result;
use crate::shape::LayerShape;
use crate::variant::Variant;

/// Gradients of one layer, row-major, shaped like what they differentiate.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    /// dX `[T, K]`.
    pub dx: Vec<f64>,
    /// dB, shaped like B.
    pub db: Vec<f64>,
    /// dbias `[N]`: column sums of dY (meaningful when the layer has a bias).
    pub dbias: Vec<f64>,
}

/// Backward of [`super::forward()`] for the upstream gradient `dy` `[T, N]`.
pub fn backward(layer: &LayerShape, t: usize, x: &[f64], w: &[f64], b: &[f64], dy: &[f64]) -> Result<Gradients> {
    backward_with_dropout(layer, t, x, w, b, dy, None)
}

/// Backward of [`super::forward_with_dropout`] with the same `dropout`.
pub fn backward_with_dropout(
    layer: &LayerShape,
    t: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    dy: &[f64],
    dropout: Option<Dropout>,
) -> Result<Gradients> {
    if let Some(dropout) = dropout {
        dropout.check_variant(layer.variant())?;
    }
    check_input(layer, "X", t, x)?;
    check_output(layer, "dY", t, dy)?;
    check_weights(layer, w, b)?;
    let (x, w_t, dy) = (matrix(t, layer.k(), x), transpose_of(layer.n(), layer.k(), w), matrix(t, layer.n(), dy));
    let (dx, db) = match layer.variant() {
        Variant::BatCol => bat_col(layer, &x, &w_t, b, &dy),
        Variant::BatRow => bat_row(layer, &x, &w_t, b, &dy),
        Variant::Shared | Variant::Mini { .. } => shared(layer, &x, &w_t, b, &dy, dropout),
    };
    let dbias = dy.row_sum().iter().copied().collect();
    Ok(Gradients { dx: row_major(&dx), db, dbias })
}

/// `dY W` from W^T, as `(W^T dY^T)^T`: both products' operands in nalgebra's own layout.
fn dy_times_w(dy: &DMatrix<f64>, w_t: &DMatrixView<f64>) -> DMatrix<f64> {
    (w_t * dy.transpose()).transpose()
}

/// `dX_i = sum_o dY_o W'_{o,i}`, `dB_o = sum_i (W_{o,i} + I)^T dY_o^T X_i`.
fn bat_col(
    layer: &LayerShape,
    x: &DMatrix<f64>,
    w_t: &DMatrixView<f64>,
    b: &[f64],
    dy: &DMatrix<f64>,
) -> (DMatrix<f64>, Vec<f64>) {
    let r = layer.r();
    let mut dx = DMatrix::zeros(x.nrows(), layer.k());
    let mut db = Vec::with_capacity(layer.adapter_len());
    for o in 0..layer.n() / r {
        let dy_o = dy.columns(o * r, r);
        let mut db_o = DMatrix::zeros(r, r);
        for i in 0..layer.k() / r {
            let product = dy_o * adapted_block(layer, w_t, b, o, i);
            let mut dx_i = dx.columns_mut(i * r, r);
            dx_i += product;
            let w_plus_identity = weight_block(layer, w_t, o, i) + DMatrix::<f64>::identity(r, r);
            db_o += w_plus_identity.transpose() * (dy_o.transpose() * x.columns(i * r, r));
        }
        db.extend(row_major(&db_o));
    }
    (dx, db)
}

/// `dX~ = dY W`, `dR = sum_o dY_o`, `dX_i = dX~_i (I + B_i) + dR B_i`, `dB_i = (dX~_i + dR)^T X_i`.
fn bat_row(
    layer: &LayerShape,
    x: &DMatrix<f64>,
    w_t: &DMatrixView<f64>,
    b: &[f64],
    dy: &DMatrix<f64>,
) -> (DMatrix<f64>, Vec<f64>) {
    let r = layer.r();
    let dx_mixed = dy_times_w(dy, w_t);
    let mut d_carry = DMatrix::zeros(x.nrows(), r);
    for o in 0..layer.n() / r {
        d_carry += dy.columns(o * r, r);
    }
    let mut dx = DMatrix::zeros(x.nrows(), layer.k());
    let mut db = Vec::with_capacity(layer.adapter_len());
    for i in 0..layer.k() / r {
        let b_i = bat_block(layer, b, i);
        let dx_mixed_i = dx_mixed.columns(i * r, r);
        let dx_i = dx_mixed_i * (DMatrix::identity(r, r) + &b_i) + &d_carry * &b_i;
        dx.columns_mut(i * r, r).copy_from(&dx_i);
        db.extend(row_major(&((dx_mixed_i + &d_carry).transpose() * x.columns(i * r, r))));
    }
    (dx, db)
}

/// `S = sum_i X_i`, `dB = S^T dY` (folded for mini), `dX = dY W + tile_K(dY B^T)`; with
/// dropout, X_i dropped in S and the tiled term dropped (the same mask) in dX.
fn shared(
    layer: &LayerShape,
    x: &DMatrix<f64>,
    w_t: &DMatrixView<f64>,
    b: &[f64],
    dy: &DMatrix<f64>,
    dropout: Option<Dropout>,
) -> (DMatrix<f64>, Vec<f64>) {
    let r = layer.r();
    let block = shared_block(layer, b);
    let db = fold_shared_grad(layer, &(chunk_sum(layer, x, dropout).transpose() * dy));
    let d_sum = dy * block.transpose();
    let mut dx = dy_times_w(dy, w_t);
    for col in 0..layer.k() {
        for row in 0..dx.nrows() {
            dx[(row, col)] += d_sum[(row, col % r)] * dropout_factor(dropout, layer, row, col);
        }
    }
    (dx, db)
}
