//! One validated call of a pass, as its launch sequences see it: the layer, the device
//! addresses of its buffers (checked for the alignment the GEMMs need) and the kernel-name
//! suffixes of its types. Built by the trainer-facing entry points (`training.rs`) after
//! every shape and buffer check.

use super::params::{BoneDropout, BoneLayer};
use super::training::Accumulate;
use crate::error::{BoneError, Result};
use crate::shape::LayerShape;

/// Validated device addresses and sizes of one call.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub layer: BoneLayer,
    pub shape: LayerShape,
    pub tokens: usize,
    /// Kernel-name suffix of the activations' type (`bf16` or `f16`).
    pub x_suffix: &'static str,
    /// Kernel-name suffix of B's type (`f32` or `bf16`).
    pub b_suffix: &'static str,
    pub x: u64,
    pub w: u64,
    pub b: u64,
    pub bias: u64,
    /// Y (forward) or dY (backward).
    pub y: u64,
    pub dx: u64,
    pub db: u64,
    pub dbias: u64,
    /// Which backward outputs are added to.
    pub accumulate: Accumulate,
    /// The adapter input's dropout (none: threshold 0).
    pub dropout: BoneDropout,
    /// S `[T, r]` the caller keeps (shared block, mini; 0: none): the forward writes it
    /// there too, the backward reads it there instead of summing X (X is then 0).
    pub saved_s: u64,
}

impl Call {
    /// A call with its inputs X, W, B (X and W must be 16-byte aligned: GEMM operands; so must
    /// the GEMMs' outputs Y, dX and dB, which they store in pairs and wider) and
    /// the kernel-name suffixes of the activations' and B's types; the outputs and bias are
    /// filled in by the pass.
    pub(crate) fn new(
        layer: BoneLayer,
        shape: LayerShape,
        tokens: usize,
        (x_suffix, b_suffix): (&'static str, &'static str),
        [x, w, b]: [u64; 3],
    ) -> Result<Self> {
        Ok(Call {
            layer,
            shape,
            tokens,
            x_suffix,
            b_suffix,
            x: aligned("X", x)?,
            w: aligned("W", w)?,
            b,
            bias: 0,
            y: 0,
            dx: 0,
            db: 0,
            dbias: 0,
            accumulate: Accumulate::NONE,
            dropout: BoneDropout::of(None),
            saved_s: 0,
        })
    }
}

impl Call {
    /// The GEMM with operand layouts `layouts` (`kk`, `kt`, `tt`) on this call's activation
    /// type, its output in that type.
    pub(crate) fn gemm(&self, layouts: &str) -> String {
        format!("bone_gemm_{layouts}_{0}_{0}", self.x_suffix)
    }

    /// The same GEMM with an f32 output.
    pub(crate) fn gemm_f32(&self, layouts: &str) -> String {
        format!("bone_gemm_{layouts}_{}_f32", self.x_suffix)
    }

    /// The pass `base` (kernels/adapter_passes.cu) on this call's activation type.
    pub(crate) fn pass(&self, base: &str) -> String {
        format!("{base}_x_{}", self.x_suffix)
    }

    /// The pass `base` that reads B, on this call's activation and B types.
    pub(crate) fn adapter_pass(&self, base: &str) -> String {
        format!("{base}_x_{}_b_{}", self.x_suffix, self.b_suffix)
    }
}

/// `address` where it is 16-byte aligned (GEMM operands and outputs, the 16-byte passes),
/// else [`BoneError::Misaligned`] naming `buffer`.
pub(crate) fn aligned(buffer: &'static str, address: u64) -> Result<u64> {
    if !address.is_multiple_of(16) {
        return Err(BoneError::Misaligned { buffer });
    }
    Ok(address)
}
