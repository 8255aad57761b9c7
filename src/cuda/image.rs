//! The fatbin that build.rs compiled from `kernels/*.cu`, if nvcc was found.

use crate::error::{BoneError, Result};

#[cfg(bone_kernels_built)]
const IMAGE: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/bone_kernels.fatbin")));
#[cfg(not(bone_kernels_built))]
const IMAGE: Option<&[u8]> = None;

/// True when this build carries compiled CUDA kernels.
pub fn kernels_built() -> bool {
    IMAGE.is_some()
}

/// The nvcc that compiled the embedded kernels, e.g. `"Cuda compilation tools, release 13.0, V13.0.88"`.
pub fn nvcc_version() -> Option<&'static str> {
    option_env!("BONE_NVCC_VERSION")
}

/// The kernel image, or the error that says how to get one.
pub(crate) fn kernel_image() -> Result<&'static [u8]> {
    require_image(IMAGE)
}

fn require_image(image: Option<&'static [u8]>) -> Result<&'static [u8]> {
    image.ok_or(BoneError::KernelsNotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_nvcc_explains_how_to_get_the_kernels() {
        let err = require_image(None).unwrap_err();
        assert!(matches!(err, BoneError::KernelsNotBuilt));
        let message = err.to_string();
        assert!(message.contains("without its CUDA kernels") && message.contains("scripts/install-nvcc"), "{message}");
    }

    /// CI sets BONE_REQUIRE_KERNELS=1 so that a build that silently lost nvcc fails.
    #[test]
    fn kernels_are_built_where_required() {
        if std::env::var("BONE_REQUIRE_KERNELS").is_ok_and(|v| v == "1") {
            assert!(kernels_built(), "BONE_REQUIRE_KERNELS=1 but the crate was built without nvcc");
            println!("kernels built by {}", nvcc_version().unwrap_or("?"));
        }
    }

    #[test]
    fn the_embedded_image_matches_the_build() {
        assert_eq!(kernel_image().is_ok(), kernels_built());
        assert_eq!(nvcc_version().is_some(), kernels_built());
    }
}
