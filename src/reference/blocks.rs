//! Row-major slices to and from `nalgebra` matrices, and the adapter's blocks.

use nalgebra::{DMatrix, DMatrixView};

use crate::dropout::Dropout;
use crate::error::Result;
use crate::shape::{LayerShape, check_len};
use crate::variant::Variant;

/// A row-major `[rows, cols]` slice as a matrix.
pub fn matrix(rows: usize, cols: usize, data: &[f64]) -> DMatrix<f64> {
    DMatrix::from_row_slice(rows, cols, data)
}

/// The transpose `[cols, rows]` of a row-major `[rows, cols]` slice, read in place: the
/// slice is that transpose in nalgebra's column-major layout. The frozen weight is read
/// this way (W^T), never copied: copying a Llama weight into a matrix took most of a
/// second, most of the oracle's time on such layers.
pub fn transpose_of(rows: usize, cols: usize, data: &[f64]) -> DMatrixView<'_, f64> {
    DMatrixView::from_slice(data, cols, rows)
}

/// W's r x r block (o, i), from W^T (`w_t`, [`transpose_of`]).
pub fn weight_block(layer: &LayerShape, w_t: &DMatrixView<f64>, o: usize, i: usize) -> DMatrix<f64> {
    let r = layer.r();
    w_t.view((i * r, o * r), (r, r)).transpose()
}

/// A matrix back to a row-major vector.
pub fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

/// Block `j` of a Bat adapter `[blocks, r, r]`.
pub fn bat_block(layer: &LayerShape, b: &[f64], j: usize) -> DMatrix<f64> {
    let r = layer.r();
    matrix(r, r, &b[j * r * r..(j + 1) * r * r])
}

/// The Bat block that mixes W's block (o, i): chosen by the output block for
/// BatCol, by the input block for BatRow.
pub fn bat_block_for(layer: &LayerShape, b: &[f64], o: usize, i: usize) -> DMatrix<f64> {
    match layer.variant() {
        Variant::BatRow => bat_block(layer, b, i),
        _ => bat_block(layer, b, o),
    }
}

/// The shared block as a full `[r, N]` matrix (MiSS mini's `[r, mini_r]` repeated along N).
pub fn shared_block(layer: &LayerShape, b: &[f64]) -> DMatrix<f64> {
    let (r, n) = (layer.r(), layer.n());
    match layer.variant() {
        Variant::Mini { mini_r } => DMatrix::from_fn(r, n, |j, c| b[j * mini_r + c % mini_r]),
        _ => matrix(r, n, b),
    }
}

/// Folds a gradient with respect to the full `[r, N]` shared block back onto B's own shape.
pub fn fold_shared_grad(layer: &LayerShape, full: &DMatrix<f64>) -> Vec<f64> {
    match layer.variant() {
        Variant::Mini { mini_r } => {
            let mut folded = vec![0.0; layer.r() * mini_r];
            for j in 0..layer.r() {
                for c in 0..layer.n() {
                    folded[j * mini_r + c % mini_r] += full[(j, c)];
                }
            }
            folded
        }
        _ => row_major(full),
    }
}

/// What element (t, k) of X `[T, K]` is multiplied by where the adapter reads it: its
/// dropout factor, or 1.
pub fn dropout_factor(dropout: Option<Dropout>, layer: &LayerShape, t: usize, k: usize) -> f64 {
    dropout.map_or(1.0, |d| d.factor((t * layer.k() + k) as u64))
}

/// S = sum_i X_i: the block-sum of X's r-wide chunks (after dropout, if any), the last
/// chunk zero-padded. `[T, r]`.
pub fn chunk_sum(layer: &LayerShape, x: &DMatrix<f64>, dropout: Option<Dropout>) -> DMatrix<f64> {
    let r = layer.r();
    DMatrix::from_fn(x.nrows(), r, |row, j| {
        (j..layer.k()).step_by(r).map(|col| x[(row, col)] * dropout_factor(dropout, layer, row, col)).sum()
    })
}

/// Checks W and B against the layer.
pub fn check_weights(layer: &LayerShape, w: &[f64], b: &[f64]) -> Result<()> {
    check_len("W", w.len(), layer.weight_len(), || format!("[N, K] = [{}, {}]", layer.n(), layer.k()))?;
    check_len("B", b.len(), layer.adapter_len(), || layer.adapter_layout())
}

/// Checks an input-side buffer `[T, K]` (X, dX).
pub fn check_input(layer: &LayerShape, buffer: &'static str, t: usize, data: &[f64]) -> Result<()> {
    layer.check_tokens(t)?;
    check_len(buffer, data.len(), t * layer.k(), || format!("[T, K] = [{t}, {}]", layer.k()))
}

/// Checks an output-side buffer `[T, N]` (Y, dY).
pub fn check_output(layer: &LayerShape, buffer: &'static str, t: usize, data: &[f64]) -> Result<()> {
    layer.check_tokens(t)?;
    check_len(buffer, data.len(), t * layer.n(), || format!("[T, N] = [{t}, {}]", layer.n()))
}
