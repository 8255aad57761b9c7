//! BatCol merge for the adapter tool on the CPU, fast: read as a `[K, r]` matrix, output
//! block o of W is contiguous, so `W'_o = W_o (I + B_o) + onehot B_o` is one dense
//! product per block, run on all cores. An unmerge is the merge of the undoing adapter
//! (`reference::unmerge_adapter`). Checked against the oracle (`reference::merge` /
//! `unmerge`) in its tests; other variants are elementwise and go through the oracle.

use nalgebra::DMatrix;

use crate::shape::LayerShape;
use crate::variant::Variant;

/// The merged weight for a BatCol layer; `None` for other variants.
pub fn bat_col(layer: &LayerShape, w: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    if layer.variant() != Variant::BatCol || w.len() != layer.weight_len() || b.len() != layer.adapter_len() {
        return None;
    }
    Some(run(layer, w, b))
}

fn run(layer: &LayerShape, w: &[f64], b: &[f64]) -> Vec<f64> {
    let (k, r) = (layer.k(), layer.r());
    let blocks = layer.n() / r;
    let mut out = vec![0.0; w.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(blocks).max(1);
    let per_thread = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk, out_chunk) in out.chunks_mut(per_thread * r * k).enumerate() {
            scope.spawn(move || {
                for (local, out_block) in out_chunk.chunks_mut(r * k).enumerate() {
                    let o = chunk * per_thread + local;
                    let b_o = DMatrix::from_row_slice(r, r, &b[o * r * r..(o + 1) * r * r]);
                    let block = DMatrix::from_row_slice(k, r, &w[o * r * k..(o + 1) * r * k]);
                    let mut merged = &block * (DMatrix::identity(r, r) + &b_o);
                    // Rows q = a (K / r) + i of the [K, r] reading belong to block row a.
                    for q in 0..k {
                        let a = q / (k / r);
                        for c in 0..r {
                            merged[(q, c)] += b_o[(a, c)];
                        }
                    }
                    out_block.copy_from_slice(merged.transpose().as_slice());
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{merge, unmerge, unmerge_adapter};
    use crate::shape::Dims;

    #[test]
    fn matches_the_oracle() {
        let layer = LayerShape::new(Variant::BatCol, Dims { k: 48, n: 40, r: 8 }).unwrap();
        let w: Vec<f64> = (0..layer.weight_len()).map(|i| ((i * 7919) % 101) as f64 / 101.0 - 0.5).collect();
        let b: Vec<f64> = (0..layer.adapter_len()).map(|i| ((i * 104729) % 97) as f64 / 970.0 - 0.05).collect();
        let fast = bat_col(&layer, &w, &b).unwrap();
        let oracle = merge(&layer, &w, &b).unwrap();
        assert!(fast.iter().zip(&oracle).all(|(a, b)| (a - b).abs() < 1e-12), "merge");
        let undo = unmerge_adapter(&layer, &b, 1e4).unwrap();
        let back = bat_col(&layer, &fast, &undo).unwrap();
        let oracle_back = unmerge(&layer, &oracle, &b, 1e4).unwrap();
        assert!(back.iter().zip(&oracle_back).all(|(a, b)| (a - b).abs() < 1e-12), "unmerge");
        assert!(back.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-12), "round trip");
    }

    #[test]
    fn other_variants_go_through_the_oracle() {
        let shared = LayerShape::new(Variant::Shared, Dims { k: 8, n: 8, r: 4 }).unwrap();
        assert!(bat_col(&shared, &[0.5; 64], &[0.0; 32]).is_none());
    }
}
