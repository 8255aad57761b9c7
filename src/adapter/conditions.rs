//! How safely an adapter can be taken back out of a merged checkpoint: unmerging a Bat
//! block multiplies the merged weight's rounding error by up to the condition number of
//! its `I + B` (the shared block and mini subtract B, exactly).

use super::file::Adapter;
use crate::reference::bat_conditions;

/// The Bat block whose `I + B` has the largest condition number in an adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct WorstBlock {
    /// The adapted module, e.g. `model.layers.0.mlp.down_proj`.
    pub module: String,
    /// The block's index in that module's B (`[blocks, r, r]`).
    pub block: usize,
    /// Its condition number (2-norm); infinite where `I + B` is singular.
    pub condition: f64,
}

impl Adapter {
    /// The block `bone unmerge` would find worst conditioned (it refuses blocks above its
    /// `--max-condition`), from one SVD per r x r block, the layers spread over all cores;
    /// `None` for the shared block and mini, whose unmerge is exact, or an adapter
    /// without layers.
    pub fn worst_unmerge_block(&self) -> Option<WorstBlock> {
        if !self.config.variant.is_bat() || self.layers.is_empty() {
            return None;
        }
        let r = self.config.r;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(self.layers.len());
        let per_thread = self.layers.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .layers
                .chunks(per_thread)
                .map(|layers| {
                    scope.spawn(move || {
                        layers
                            .iter()
                            .flat_map(|layer| {
                                let conditions = bat_conditions(r, &layer.values).into_iter().enumerate();
                                conditions.map(move |(block, condition)| (layer, block, condition))
                            })
                            .max_by(|a, b| a.2.total_cmp(&b.2))
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|worker| worker.join().expect("a condition worker does not panic"))
                .max_by(|a, b| a.2.total_cmp(&b.2))
                .map(|(layer, block, condition)| WorstBlock { module: layer.module.clone(), block, condition })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{AdapterConfig, AdapterLayer, PeftType};
    use crate::shape::{Dims, LayerShape};
    use crate::variant::Variant;

    /// An adapter of `variant` (r = 2) with one layer per entry of `layers`, B given.
    fn adapter(variant: Variant, layers: &[(&str, Vec<f32>)]) -> Adapter {
        let shape = LayerShape::new(variant, Dims { k: 4, n: 4, r: 2 }).unwrap();
        let layers = layers.iter().map(|(name, b)| AdapterLayer::from_f32(*name, &shape, b).unwrap()).collect();
        Adapter::new(AdapterConfig::new(PeftType::Miss, variant, 2), layers)
    }

    #[test]
    fn the_worst_block_is_found_across_layers_and_threads() {
        // Two blocks a layer (N / r); I + B = diag(1 + d1, 1 + d2): condition (1 + d1) / (1 + d2).
        let diagonal = |d1: f32, d2: f32, e1: f32, e2: f32| vec![d1, 0.0, 0.0, d2, e1, 0.0, 0.0, e2];
        let layers = [
            ("a", diagonal(0.1, 0.0, 0.0, 0.0)),
            ("b", diagonal(0.0, 0.0, 3.0, 0.0)),
            ("c", diagonal(0.0, -0.5, 0.0, 0.0)),
        ];
        let worst = adapter(Variant::BatCol, &layers).worst_unmerge_block().unwrap();
        assert_eq!((worst.module.as_str(), worst.block), ("b", 1));
        assert!((worst.condition - 4.0).abs() < 1e-12, "{worst:?}");
        // A singular block is the worst of all.
        let singular = [("a", diagonal(0.1, 0.0, 0.0, 0.0)), ("z", diagonal(0.0, -1.0, 0.0, 0.0))];
        let worst = adapter(Variant::BatRow, &singular).worst_unmerge_block().unwrap();
        assert_eq!((worst.module.as_str(), worst.block, worst.condition), ("z", 0, f64::INFINITY));
    }

    #[test]
    fn the_shared_block_and_an_empty_adapter_have_none() {
        let shared = adapter(Variant::Shared, &[("a", vec![0.5; 8])]);
        assert_eq!(shared.worst_unmerge_block(), None);
        assert_eq!(adapter(Variant::BatCol, &[]).worst_unmerge_block(), None);
    }
}
