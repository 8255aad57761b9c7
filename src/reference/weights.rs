//! The adapted weight itself: delta weight, merge and unmerge, written element by
//! element from PEFT's definitions (independent of the factored forward pass).

use nalgebra::DMatrix;

use super::blocks::{bat_block, check_weights, matrix};
use crate::error::{BoneError, Dim, Result};
use crate::shape::{LayerShape, check_len};
use crate::variant::Variant;

/// Default limit on the condition number of `I + B` that [`unmerge`] accepts.
///
/// Unmerging multiplies the merged weight's rounding error by up to cond(I + B);
/// 1e4 keeps an f32 merge exact to about 1e-3 and refuses blocks where bf16 would not be.
pub const DEFAULT_MAX_CONDITION: f64 = 1e4;

/// The B entry that `dW[n, k]` reads for the shared variants (B as PEFT stores it).
fn shared_entry(layer: &LayerShape, b: &[f64], n: usize, k: usize) -> f64 {
    let j = k % layer.r();
    match layer.variant() {
        Variant::Mini { mini_r } => b[j * mini_r + n % mini_r],
        _ => b[j * layer.n() + n],
    }
}

/// The mixing block of a Bat adapter that acts on W's element `(n, k)`.
fn bat_index(layer: &LayerShape, n: usize, k: usize) -> usize {
    match layer.variant() {
        Variant::BatRow => k / layer.r(),
        _ => n / layer.r(),
    }
}

/// `dW = W' - W`, `[N, K]`.
///
/// Bat: `dW_{o,i} = W_{o,i} B + B`; shared: `dW[n, k] = B[k mod r, n]` (mini: `n mod mini_r`).
pub fn delta_weight(layer: &LayerShape, w: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_weights(layer, w, b)?;
    let (k_in, r) = (layer.k(), layer.r());
    let mut delta = vec![0.0; layer.weight_len()];
    for n in 0..layer.n() {
        for k in 0..k_in {
            delta[n * k_in + k] = if layer.variant().is_bat() {
                let block = &b[bat_index(layer, n, k) * r * r..][..r * r];
                let (row, col, first) = (n % r, k % r, k - k % r);
                let w_times_b: f64 = (0..r).map(|j| w[n * k_in + first + j] * block[j * r + col]).sum();
                w_times_b + block[row * r + col]
            } else {
                shared_entry(layer, b, n, k)
            };
        }
    }
    Ok(delta)
}

/// The merged weight `W' = W + dW` (what PEFT's `merge_and_unload` writes).
pub fn merge(layer: &LayerShape, w: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    let delta = delta_weight(layer, w, b)?;
    Ok(w.iter().zip(delta).map(|(w, d)| w + d).collect())
}

/// Recovers W from a merged `W'`.
///
/// Bat: `W_{o,i} = (W'_{o,i} - B)(I + B)^{-1}` per block; a singular `I + B`, or one
/// whose condition number exceeds `max_condition`, is an error (see
/// [`DEFAULT_MAX_CONDITION`]). Shared: subtracts the tiled B, which is exact.
pub fn unmerge(layer: &LayerShape, merged: &[f64], b: &[f64], max_condition: f64) -> Result<Vec<f64>> {
    check_condition_limit(max_condition)?;
    check_weights(layer, merged, b)?;
    if !layer.variant().is_bat() {
        let (n_out, k_in) = (layer.n(), layer.k());
        let mut w = merged.to_vec();
        for n in 0..n_out {
            for k in 0..k_in {
                w[n * k_in + k] -= shared_entry(layer, b, n, k);
            }
        }
        return Ok(w);
    }
    let r = layer.r();
    let blocks = layer.adapter_dims()[0];
    let inverses = (0..blocks)
        .map(|j| checked_inverse(&(DMatrix::identity(r, r) + bat_block(layer, b, j)), j, max_condition))
        .collect::<Result<Vec<_>>>()?;
    let merged_matrix = matrix(layer.n(), layer.k(), merged);
    let mut w = merged.to_vec();
    for o in 0..layer.n() / r {
        for i in 0..layer.k() / r {
            let j = bat_index(layer, o * r, i * r);
            let shifted = merged_matrix.view((o * r, i * r), (r, r)) - bat_block(layer, b, j);
            let block = shifted * &inverses[j];
            for row in 0..r {
                for col in 0..r {
                    w[(o * r + row) * layer.k() + i * r + col] = block[(row, col)];
                }
            }
        }
    }
    Ok(w)
}

/// The adapter C whose merge undoes the merge of `b`: `unmerge(W', B) = merge(W', C)`.
///
/// Bat: per block, `W = (W' - B)(I + B)^{-1} = W' (I + C) + C` with
/// `C = (I + B)^{-1} - I` (which is `-B (I + B)^{-1}`), refused as [`unmerge`] refuses
/// (singular or ill-conditioned `I + B`); shared: `C = -B`. So an unmerge runs on a
/// merge's code, the GPU kernel included.
pub fn unmerge_adapter(layer: &LayerShape, b: &[f64], max_condition: f64) -> Result<Vec<f64>> {
    check_condition_limit(max_condition)?;
    check_len("B", b.len(), layer.adapter_len(), || layer.adapter_layout())?;
    if !layer.variant().is_bat() {
        return Ok(b.iter().map(|v| -v).collect());
    }
    let r = layer.r();
    let identity = DMatrix::<f64>::identity(r, r);
    let mut c = Vec::with_capacity(b.len());
    for j in 0..layer.adapter_dims()[0] {
        let inverse = checked_inverse(&(&identity + bat_block(layer, b, j)), j, max_condition)?;
        // Row-major, as B's blocks are stored.
        c.extend((inverse - &identity).transpose().iter());
    }
    Ok(c)
}

/// The condition number of `I + B` for each r x r block of a Bat adapter's `b` (its
/// blocks row-major one after another, as PEFT stores them): what [`unmerge`] and
/// [`unmerge_adapter`] compare with their `max_condition`, since unmerging a block
/// amplifies the merged weight's rounding error by up to that much. Infinite where
/// `I + B` is singular, NaN where B holds a non-finite value. An error where r is 0 or
/// `b` is not a whole number of r x r blocks.
pub fn bat_conditions(r: usize, b: &[f64]) -> Result<Vec<f64>> {
    if r == 0 {
        return Err(BoneError::ZeroDim { dim: Dim::Block });
    }
    let block_len = r.checked_mul(r).ok_or(BoneError::Overflow { what: "r x r", a: r, b: r })?;
    let whole_blocks = b.len() / block_len * block_len;
    check_len("B", b.len(), whole_blocks, || format!("whole r x r blocks of r = {r}"))?;
    let identity = DMatrix::<f64>::identity(r, r);
    Ok(b.chunks_exact(block_len).map(|block| condition(&(&identity + DMatrix::from_row_slice(r, r, block)))).collect())
}

/// The 2-norm condition number of `a` from its singular values: infinite where `a` is
/// singular (or its SVD does not converge), NaN where it holds a non-finite value.
fn condition(a: &DMatrix<f64>) -> f64 {
    if a.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    // A bounded iteration count: nalgebra's default SVD iterates until convergence.
    match a.clone().try_svd(false, false, f64::EPSILON, 10_000) {
        Some(svd) if svd.singular_values.min() > 0.0 => svd.singular_values.max() / svd.singular_values.min(),
        _ => f64::INFINITY,
    }
}

/// A limit below 1 (or NaN, which compares false with every condition number) would
/// refuse every block (or none) without saying why.
fn check_condition_limit(limit: f64) -> Result<()> {
    match limit >= 1.0 {
        true => Ok(()),
        false => Err(BoneError::InvalidConditionLimit { limit }),
    }
}

/// `a^{-1}`, refusing non-finite, singular or ill-conditioned blocks.
fn checked_inverse(a: &DMatrix<f64>, block: usize, max_condition: f64) -> Result<DMatrix<f64>> {
    match condition(a) {
        c if c.is_nan() => Err(BoneError::NonFiniteAdapter { block }),
        c if c.is_infinite() => Err(BoneError::Singular { block }),
        c if c > max_condition => Err(BoneError::IllConditioned { block, condition: c, limit: max_condition }),
        _ => a.clone().try_inverse().ok_or(BoneError::Singular { block }),
    }
}
