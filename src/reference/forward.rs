//! Forward pass, each variant in its own form (bone-math.md, "The three variants").

use nalgebra::{DMatrix, DMatrixView};

use super::blocks::{
    bat_block, bat_block_for, check_input, check_weights, chunk_sum, matrix, row_major, shared_block, transpose_of,
    weight_block,
};
use crate::dropout::Dropout;
use crate::error::Result;
use crate::shape::{LayerShape, check_len};
use crate::variant::Variant;

/// `Y = X W'^T + bias`, `[T, N]`, without forming `W'` for the factored variants.
///
/// `bias`, when given, is `[N]` (the base layer's bias; the adapter never changes it).
pub fn forward(
    layer: &LayerShape,
    t: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
) -> Result<Vec<f64>> {
    forward_with_dropout(layer, t, x, w, b, bias, None)
}

/// [`forward`] with PEFT's `miss_dropout` on the adapter's input: the shared block's (and
/// mini's) `Y = X W^T + S B + bias` with `S` summed over the dropped X ([`Dropout`]).
pub fn forward_with_dropout(
    layer: &LayerShape,
    t: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    dropout: Option<Dropout>,
) -> Result<Vec<f64>> {
    if let Some(dropout) = dropout {
        dropout.check_variant(layer.variant())?;
    }
    check_input(layer, "X", t, x)?;
    check_weights(layer, w, b)?;
    if let Some(bias) = bias {
        check_len("bias", bias.len(), layer.n(), || format!("[N] = [{}]", layer.n()))?;
    }
    let (x, w_t) = (matrix(t, layer.k(), x), transpose_of(layer.n(), layer.k(), w));
    let mut y = match layer.variant() {
        Variant::BatCol => bat_col(layer, &x, &w_t, b),
        Variant::BatRow => bat_row(layer, &x, &w_t, b),
        Variant::Shared | Variant::Mini { .. } => &x * w_t + chunk_sum(layer, &x, dropout) * shared_block(layer, b),
    };
    if let Some(bias) = bias {
        for mut row in y.row_iter_mut() {
            for (value, add) in row.iter_mut().zip(bias) {
                *value += add;
            }
        }
    }
    Ok(row_major(&y))
}

/// `W'_{o,i} = W_{o,i} (I + B_o) + B_o` for one block (`w_t` is W^T); shared by forward
/// and backward.
pub(super) fn adapted_block(layer: &LayerShape, w_t: &DMatrixView<f64>, b: &[f64], o: usize, i: usize) -> DMatrix<f64> {
    let r = layer.r();
    let mixer = bat_block_for(layer, b, o, i);
    weight_block(layer, w_t, o, i) * (DMatrix::identity(r, r) + &mixer) + mixer
}

/// `Y_o = sum_i X_i W'_{o,i}^T`, block by block.
fn bat_col(layer: &LayerShape, x: &DMatrix<f64>, w_t: &DMatrixView<f64>, b: &[f64]) -> DMatrix<f64> {
    let r = layer.r();
    let mut y = DMatrix::zeros(x.nrows(), layer.n());
    for o in 0..layer.n() / r {
        for i in 0..layer.k() / r {
            let x_i = x.columns(i * r, r);
            let product = x_i * adapted_block(layer, w_t, b, o, i).transpose();
            let mut y_o = y.columns_mut(o * r, r);
            y_o += product;
        }
    }
    y
}

/// `X~_i = X_i (I + B_i)^T`, `R = sum_i X_i B_i^T`, `Y = X~ W^T + R` tiled over the output blocks.
fn bat_row(layer: &LayerShape, x: &DMatrix<f64>, w_t: &DMatrixView<f64>, b: &[f64]) -> DMatrix<f64> {
    let r = layer.r();
    let mut x_mixed = DMatrix::zeros(x.nrows(), layer.k());
    let mut carry = DMatrix::zeros(x.nrows(), r);
    for i in 0..layer.k() / r {
        let b_i = bat_block(layer, b, i);
        let x_i = x.columns(i * r, r);
        x_mixed.columns_mut(i * r, r).copy_from(&(x_i * (DMatrix::identity(r, r) + &b_i).transpose()));
        carry += x_i * b_i.transpose();
    }
    let mut y = x_mixed * w_t;
    for o in 0..layer.n() / r {
        let mut y_o = y.columns_mut(o * r, r);
        y_o += &carry;
    }
    y
}
