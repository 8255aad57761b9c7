//! BatCol merge and unmerge for the adapter tool on the CPU, fast: read as a `[K, r]`
//! matrix, output block o of W is contiguous, so `W'_o = W_o (I + B_o) + onehot B_o` is
//! one dense product per block (and unmerge `(W'_o - onehot B_o) (I + B_o)^{-1}`), run on
//! all cores. Checked against the oracle (`reference::merge` / `unmerge`) in its tests;
//! other variants are elementwise and go through the oracle directly.

use nalgebra::DMatrix;

use crate::error::Result;
use crate::reference::checked_inverse;
use crate::shape::LayerShape;
use crate::variant::Variant;

/// Which way to go, with the unmerge's condition limit.
#[derive(Clone, Copy)]
pub enum Way {
    Merge,
    Unmerge { max_condition: f64 },
}

/// The new weight for a BatCol layer; `None` for other variants.
pub fn bat_col(layer: &LayerShape, w: &[f64], b: &[f64], way: Way) -> Option<Result<Vec<f64>>> {
    if layer.variant() != Variant::BatCol || w.len() != layer.weight_len() || b.len() != layer.adapter_len() {
        return None;
    }
    Some(run(layer, w, b, way))
}

fn run(layer: &LayerShape, w: &[f64], b: &[f64], way: Way) -> Result<Vec<f64>> {
    let (k, r) = (layer.k(), layer.r());
    let blocks = layer.n() / r;
    // Per block: the right factor and the r x r matrix added (merge) or removed (unmerge) per row group.
    let factors = (0..blocks)
        .map(|o| {
            let b_o = DMatrix::from_row_slice(r, r, &b[o * r * r..(o + 1) * r * r]);
            let plus_identity = DMatrix::identity(r, r) + &b_o;
            match way {
                Way::Merge => Ok((plus_identity, b_o)),
                Way::Unmerge { max_condition } => Ok((checked_inverse(&plus_identity, o, max_condition)?, b_o)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = vec![0.0; w.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(blocks).max(1);
    let per_thread = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk, out_chunk) in out.chunks_mut(per_thread * r * k).enumerate() {
            let factors = &factors;
            scope.spawn(move || {
                for (local, out_block) in out_chunk.chunks_mut(r * k).enumerate() {
                    let o = chunk * per_thread + local;
                    let (factor, b_o) = &factors[o];
                    // Rows q = a (K / r) + i of the [K, r] reading belong to block row a.
                    let mut block = DMatrix::from_row_slice(k, r, &w[o * r * k..(o + 1) * r * k]);
                    let shift = |block: &mut DMatrix<f64>, sign: f64| {
                        for q in 0..k {
                            let a = q / (k / r);
                            for c in 0..r {
                                block[(q, c)] += sign * b_o[(a, c)];
                            }
                        }
                    };
                    let result = match way {
                        Way::Merge => {
                            let mut merged = &block * factor;
                            shift(&mut merged, 1.0);
                            merged
                        }
                        Way::Unmerge { .. } => {
                            shift(&mut block, -1.0);
                            &block * factor
                        }
                    };
                    out_block.copy_from_slice(result.transpose().as_slice());
                }
            });
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{merge, unmerge};
    use crate::shape::Dims;

    #[test]
    fn matches_the_oracle() {
        let layer = LayerShape::new(Variant::BatCol, Dims { k: 48, n: 40, r: 8 }).unwrap();
        let w: Vec<f64> = (0..layer.weight_len()).map(|i| ((i * 7919) % 101) as f64 / 101.0 - 0.5).collect();
        let b: Vec<f64> = (0..layer.adapter_len()).map(|i| ((i * 104729) % 97) as f64 / 970.0 - 0.05).collect();
        let fast = bat_col(&layer, &w, &b, Way::Merge).unwrap().unwrap();
        let oracle = merge(&layer, &w, &b).unwrap();
        assert!(fast.iter().zip(&oracle).all(|(a, b)| (a - b).abs() < 1e-12), "merge");
        let back = bat_col(&layer, &fast, &b, Way::Unmerge { max_condition: 1e4 }).unwrap().unwrap();
        let oracle_back = unmerge(&layer, &oracle, &b, 1e4).unwrap();
        assert!(back.iter().zip(&oracle_back).all(|(a, b)| (a - b).abs() < 1e-12), "unmerge");
        assert!(back.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-12), "round trip");
    }

    #[test]
    fn refuses_what_the_oracle_refuses() {
        let layer = LayerShape::new(Variant::BatCol, Dims { k: 8, n: 8, r: 4 }).unwrap();
        let mut b = vec![0.0; layer.adapter_len()];
        for j in 0..4 {
            b[16 + j * 4 + j] = -1.0; // block 1: I + B = 0
        }
        let err = bat_col(&layer, &[0.5; 64], &b, Way::Unmerge { max_condition: 1e4 }).unwrap().unwrap_err();
        assert_eq!(err.to_string(), "I + B of adapter block 1 is singular; the merge cannot be undone");
        let shared = LayerShape::new(Variant::Shared, Dims { k: 8, n: 8, r: 4 }).unwrap();
        assert!(bat_col(&shared, &[0.5; 64], &[0.0; 32], Way::Merge).is_none());
    }
}
