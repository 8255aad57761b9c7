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
