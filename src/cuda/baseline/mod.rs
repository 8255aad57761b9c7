//! The baselines Bone is measured against, built from cuBLAS calls: the plain GEMM
//! floor, full fine-tuning, LoRA at a chosen rank, and the cuBLAS-backed BatCol plan
//! (W' formed in a transient N x K buffer, cuBLAS GEMMs, this crate's dB kernel).
//! They exist for benchmarks: honest alternatives a user would otherwise pick.
//! All tensors are row-major bf16 (dB f32), on the handle's stream.

mod blas;
mod linear;
mod lora;
mod plan;

pub use blas::RowMajorBlas;
pub(crate) use blas::library_present as cublas_present;
pub(crate) use blas::{Half, Operand, Output};
pub use linear::Linear;
pub use lora::{Lora, LoraGrads, LoraTensors};
pub use plan::{BatColCublasPlan, PlanBuffers};
