//! How safely an adapter can be taken back out of a merged checkpoint: unmerging a Bat
//! block multiplies the merged weight's rounding error by up to the condition number of
//! its `I + B` (the shared block and mini subtract B, exactly).

use super::error::{AdapterError, Result};
use super::file::{Adapter, AdapterLayer};
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
    /// without layers. An error where a layer's block does not have the config's shape.
    pub fn worst_unmerge_block(&self) -> Result<Option<WorstBlock>> {
        if !self.config.variant.is_bat() || self.layers.is_empty() {
            return Ok(None);
        }
        self.check_blocks(&self.tensor_path())?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(self.layers.len());
        let per_thread = self.layers.len().div_ceil(threads);
        let per_worker: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> =
                self.layers.chunks(per_thread).map(|layers| scope.spawn(move || self.worst_block_in(layers))).collect();
            workers.into_iter().map(|worker| worker.join().expect("a condition worker does not panic")).collect()
        });
        let worst = per_worker.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten().max_by(by_condition);
        Ok(worst.map(|(layer, block, condition)| WorstBlock { module: layer.module.clone(), block, condition }))
    }

    /// The worst-conditioned block of `layers` (some of this adapter's), with its layer.
    fn worst_block_in<'a>(&self, layers: &'a [AdapterLayer]) -> Result<Option<(&'a AdapterLayer, usize, f64)>> {
        let mut worst = None;
        for layer in layers {
            let conditions = bat_conditions(self.config.r, &layer.values).map_err(|source| AdapterError::Layer {
                path: self.tensor_path(),
                key: self.block_key(&layer.module),
                source,
            })?;
            let blocks = conditions.into_iter().enumerate().map(|(block, c)| (layer, block, c));
            worst = worst.into_iter().chain(blocks).max_by(by_condition);
        }
        Ok(worst)
    }
}

fn by_condition(a: &(&AdapterLayer, usize, f64), b: &(&AdapterLayer, usize, f64)) -> std::cmp::Ordering {
    a.2.total_cmp(&b.2)
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
        let worst = adapter(Variant::BatCol, &layers).worst_unmerge_block().unwrap().unwrap();
        assert_eq!((worst.module.as_str(), worst.block), ("b", 1));
        assert!((worst.condition - 4.0).abs() < 1e-12, "{worst:?}");
        // A singular block is the worst of all.
        let singular = [("a", diagonal(0.1, 0.0, 0.0, 0.0)), ("z", diagonal(0.0, -1.0, 0.0, 0.0))];
        let worst = adapter(Variant::BatRow, &singular).worst_unmerge_block().unwrap().unwrap();
        assert_eq!((worst.module.as_str(), worst.block, worst.condition), ("z", 0, f64::INFINITY));
    }

    #[test]
    fn the_shared_block_and_an_empty_adapter_have_none() {
        let shared = adapter(Variant::Shared, &[("a", vec![0.5; 8])]);
        assert_eq!(shared.worst_unmerge_block().unwrap(), None);
        assert_eq!(adapter(Variant::BatCol, &[]).worst_unmerge_block().unwrap(), None);
    }

    #[test]
    fn blocks_that_disagree_with_the_config_are_an_error() {
        let mut wrong_r = adapter(Variant::BatCol, &[("a", vec![0.5; 8])]);
        wrong_r.config.r = 4;
        let error = wrong_r.worst_unmerge_block().unwrap_err().to_string();
        assert!(error.contains("a.miss_block: shape [2, 2, 2], expected [N/r, r, r] with r = 4"), "{error}");
        let mut short = adapter(Variant::BatCol, &[("a", vec![0.5; 8])]);
        short.layers[0].values.pop();
        assert!(short.worst_unmerge_block().is_err());
    }
}
