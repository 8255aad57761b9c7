//! Fused CUDA kernels for Bone / MiSS block-affine adapters, with an f64 CPU
//! reference that every GPU result is checked against.
//!
//! Names and layouts follow PyTorch and PEFT: X `[T, K]`, W `[N, K]`
//! (`nn.Linear.weight`), Y `[T, N]`, block size r, row-major.
//!
//! ```
//! use bone_kernels::{Dims, LayerShape, Variant, reference};
//!
//! // A BatCol layer (PEFT's init_weights="bat"): B is [N/r, r, r], zero at the start.
//! let layer = LayerShape::new(Variant::BatCol, Dims { k: 8, n: 4, r: 4 })?;
//! let (t, x, w) = (2, vec![0.5; 2 * 8], vec![0.25; 4 * 8]);
//! let b = vec![0.01; layer.adapter_len()];
//! let y = reference::forward(&layer, t, &x, &w, &b, None)?; // [T, N]
//! let grads = reference::backward(&layer, t, &x, &w, &b, &vec![1.0; t * 4])?;
//! assert_eq!((y.len(), grads.db.len()), (t * 4, layer.adapter_len()));
//!
//! // Bad input is a typed error whose message names the dimension and value.
//! let err = LayerShape::new(Variant::BatCol, Dims { k: 8, n: 6, r: 4 }).unwrap_err();
//! assert_eq!(err.to_string(), "N (out_features) = 6 is not a multiple of r = 4; BatCol cuts W into r x r blocks");
//! # Ok::<(), bone_kernels::BoneError>(())
//! ```
//!
//! The GPU side is [`cuda`] (forward, backward and merge kernels, cuBLAS baselines); PEFT
//! adapter files and the merge of a whole checkpoint are [`adapter`].

pub mod adapter;
pub mod cuda;
mod dropout;
mod error;
pub mod reference;
mod shape;
mod variant;

pub use dropout::Dropout;
pub use error::{BoneError, Dim, Result};
pub use shape::{Dims, KERNEL_INDEX_LIMIT, LayerShape};
pub use variant::Variant;

/// The README's code, compiled (and, where it needs no GPU, run) by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
