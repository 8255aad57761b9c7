//! Fused CUDA kernels for Bone / MiSS block-affine adapters, with an f64 CPU
//! reference that every GPU result is checked against.
//!
//! Names and layouts follow PyTorch and PEFT: X `[T, K]`, W `[N, K]`
//! (`nn.Linear.weight`), Y `[T, N]`, block size r, row-major.

pub mod adapter;
pub mod cuda;
mod error;
pub mod reference;
mod shape;
mod variant;

pub use error::{BoneError, Dim, Result};
pub use shape::{Dims, KERNEL_INDEX_LIMIT, LayerShape};
pub use variant::Variant;
