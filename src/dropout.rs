//! Dropout on the shared block's adapter input: PEFT's `miss_dropout`, which MiSS applies
//! to X before summing its r-wide chunks (`S = sum_i dropout(X)_i`), for the shared block
//! and mini only (PEFT's `bat` mode has none).
//!
//! The mask is a pure function of a seed and the element's index, the same on the CPU
//! (here) and on the GPU (kernels/dropout.cuh): the backward recomputes it instead of
//! keeping it, so dropout costs no memory between the passes, and the oracle can check the
//! kernels element for element. Give the forward and the backward of one step the same
//! [`Dropout`], and each layer and step its own seed (the mask depends on the seed and the
//! element's index only, so two layers of the same K given one seed drop the same elements).

use crate::error::{BoneError, Result};
use crate::variant::Variant;

/// Element `(t, k)` of X `[T, K]` is kept with probability 1 - p and then scaled by
/// 1 / (1 - p), as `torch.nn.Dropout` does in training; else it is zeroed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    p: f64,
    seed: u64,
}

impl Dropout {
    /// Dropout with probability `p` in [0, 1) and this step's `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(BoneError::InvalidDropout { p });
        }
        Ok(Dropout { p, seed })
    }

    /// The probability of zeroing an element.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// The seed the mask is drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Elements whose 32 random bits fall below this are dropped: round(p 2^32).
    pub(crate) fn threshold(&self) -> u32 {
        (self.p * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32
    }

    /// What element `index` (t K + k of X) is multiplied by: 0, or 1 / (1 - p).
    pub fn factor(&self, index: u64) -> f64 {
        if random_bits(self.seed, index) < self.threshold() { 0.0 } else { 1.0 / (1.0 - self.p) }
    }

    /// Whether it zeroes anything at all (p > 0).
    pub(crate) fn is_active(&self) -> bool {
        self.threshold() > 0
    }

    /// Refuses dropout on the variants PEFT gives none (BatCol, BatRow), unless p = 0.
    pub(crate) fn check_variant(&self, variant: Variant) -> Result<()> {
        if self.is_active() && variant.is_bat() {
            return Err(BoneError::DropoutOnBat { variant: variant.name() });
        }
        Ok(())
    }
}

/// 32 random bits for element `index` under `seed`: splitmix64's output function on the
/// seed advanced `index + 1` steps (kernels/dropout.cuh computes the same).
pub(crate) fn random_bits(seed: u64, index: u64) -> u32 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        for p in [-0.1, 1.0, 1.5, f64::NAN] {
            let err = Dropout::new(p, 1).unwrap_err();
            assert!(matches!(err, BoneError::InvalidDropout { .. }), "{err}");
        }
        assert_eq!(Dropout::new(0.0, 1).unwrap().threshold(), 0);
    }

    #[test]
    fn the_mask_drops_about_p_of_the_elements_and_scales_the_rest() {
        for p in [0.05, 0.1, 0.5, 0.9] {
            let dropout = Dropout::new(p, 42).unwrap();
            let factors: Vec<f64> = (0..200_000).map(|i| dropout.factor(i)).collect();
            let dropped = factors.iter().filter(|&&f| f == 0.0).count() as f64 / factors.len() as f64;
            assert!((dropped - p).abs() < 0.005, "p = {p}: dropped {dropped}");
            assert!(factors.iter().all(|&f| f == 0.0 || f == 1.0 / (1.0 - p)));
            // The expected factor is 1: dropout keeps the activations' mean.
            let mean = factors.iter().sum::<f64>() / factors.len() as f64;
            assert!((mean - 1.0).abs() < 0.02, "p = {p}: mean factor {mean}");
        }
    }

    #[test]
    fn seeds_give_different_masks_and_the_same_seed_the_same() {
        let (a, b) = (Dropout::new(0.5, 1).unwrap(), Dropout::new(0.5, 2).unwrap());
        let differ = (0..1000).filter(|&i| a.factor(i) != b.factor(i)).count();
        assert!((400..600).contains(&differ), "{differ} of 1000 differ");
        assert!((0..1000).all(|i| a.factor(i) == Dropout::new(0.5, 1).unwrap().factor(i)));
    }

    #[test]
    fn only_the_shared_block_and_mini_take_dropout() {
        let dropout = Dropout::new(0.1, 7).unwrap();
        assert!(dropout.check_variant(Variant::Shared).is_ok());
        assert!(dropout.check_variant(Variant::Mini { mini_r: 4 }).is_ok());
        let err = dropout.check_variant(Variant::BatCol).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dropout applies to the shared block and mini (PEFT's miss_dropout); PEFT gives BatCol none"
        );
        // p = 0 is no dropout, accepted everywhere (a config's miss_dropout = 0.0).
        assert!(Dropout::new(0.0, 7).unwrap().check_variant(Variant::BatRow).is_ok());
    }
}
