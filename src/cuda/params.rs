//! The kernel parameter structs, generated from `kernels/params.h`, and their
//! construction from validated shapes.

#[rustfmt::skip]
#[allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
mod params_generated;

pub use params_generated::*;

use cudarc::driver::DeviceRepr;

use crate::dropout::Dropout;
use crate::error::Result;
use crate::shape::LayerShape;
use crate::variant::Variant;

// SAFETY: BoneLayer is #[repr(C)] plain integers whose size and field offsets bindgen
// asserts at compile time against kernels/params.h, so a by-value copy is exactly the
// kernel's `const BoneLayer` parameter.
unsafe impl DeviceRepr for BoneLayer {}
// SAFETY: as above; its pointers are device addresses, copied by value into the
// kernel's `const BoneGemm` parameter and never dereferenced on the host.
unsafe impl DeviceRepr for BoneGemm {}
// SAFETY: as above, for the kernel's `const BoneSetup` parameter.
unsafe impl DeviceRepr for BoneSetup {}
// SAFETY: as above (an integer seed and threshold and a float), for `const BoneDropout`.
unsafe impl DeviceRepr for BoneDropout {}

impl BoneDropout {
    /// The kernels' view of a call's dropout: threshold 0 (nothing dropped) without one.
    pub fn of(dropout: Option<Dropout>) -> Self {
        match dropout {
            Some(d) if d.is_active() => {
                BoneDropout { seed: d.seed(), threshold: d.threshold(), scale: (1.0 / (1.0 - d.p())) as f32 }
            }
            _ => BoneDropout { seed: 0, threshold: 0, scale: 1.0 },
        }
    }

    /// Whether it drops anything.
    pub fn is_active(&self) -> bool {
        self.threshold > 0
    }
}

impl BoneLayer {
    /// The kernel's view of a layer; fails unless every tensor fits 32-bit indexing.
    pub fn new(layer: &LayerShape, tokens: Option<usize>) -> Result<Self> {
        layer.check_kernel_indexing(tokens)?;
        // Each size is at most N * K <= i32::MAX, so the casts below are exact.
        let (variant, mini_r) = match layer.variant() {
            Variant::BatCol => (BoneVariant_BONE_BAT_COL, 0),
            Variant::BatRow => (BoneVariant_BONE_BAT_ROW, 0),
            Variant::Shared => (BoneVariant_BONE_SHARED, 0),
            Variant::Mini { mini_r } => (BoneVariant_BONE_MINI, mini_r as i32),
        };
        Ok(BoneLayer { k: layer.k() as i32, n: layer.n() as i32, r: layer.r() as i32, mini_r, variant: variant as i32 })
    }
}
