//! LoRA through cuBLAS, the baseline users would pick instead of Bone:
//!   forward   H = X A^T, Y = X W^T + H B^T                    (H [T, q] kept for backward)
//!   backward  dH = dY B, dX = dY W + dH A, dA = dH^T X, dB = dY^T H
//! PEFT layout: A (`lora_A.weight`) `[q, K]`, B (`lora_B.weight`) `[N, q]`, scaling 1.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use super::blas::{Operand, RowMajorBlas};
use crate::error::{BoneError, Dim, Result};
use crate::shape::check_len;

/// A LoRA layer's sizes.
#[derive(Clone, Copy, Debug)]
pub struct Lora {
    pub k: usize,
    pub n: usize,
    pub rank: usize,
}

/// Views of one LoRA step's tensors; `h` is written by forward and read by backward.
pub struct LoraTensors<'a> {
    pub x: CudaView<'a, bf16>,
    pub w: CudaView<'a, bf16>,
    pub a: CudaView<'a, bf16>,
    pub b: CudaView<'a, bf16>,
    pub h: CudaViewMut<'a, bf16>,
}

/// Where LoRA's backward writes (bf16, as the GEMMs produce them) and its `[T, q]` scratch.
pub struct LoraGrads<'a> {
    pub dx: CudaViewMut<'a, bf16>,
    pub da: CudaViewMut<'a, bf16>,
    pub db: CudaViewMut<'a, bf16>,
    pub dh: CudaViewMut<'a, bf16>,
}

impl Lora {
    pub fn new(k: usize, n: usize, rank: usize) -> Result<Self> {
        for (dim, value) in [(Dim::In, k), (Dim::Out, n), (Dim::Block, rank)] {
            if value == 0 {
                return Err(BoneError::ZeroDim { dim });
            }
        }
        Ok(Lora { k, n, rank })
    }

    fn check(&self, t: usize, tensors: &LoraTensors) -> Result<()> {
        let (k, n, q) = (self.k, self.n, self.rank);
        check_len("X", tensors.x.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("W", tensors.w.len(), n * k, || format!("[N, K] = [{n}, {k}]"))?;
        check_len("A", tensors.a.len(), q * k, || format!("[q, K] = [{q}, {k}]"))?;
        check_len("B", tensors.b.len(), n * q, || format!("[N, q] = [{n}, {q}]"))?;
        check_len("H", tensors.h.len(), t * q, || format!("[T, q] = [{t}, {q}]"))
    }

    /// `Y = X W^T + (X A^T) B^T`, keeping `H = X A^T` in `tensors.h`.
    pub fn forward(
        &self,
        blas: &RowMajorBlas,
        t: usize,
        tensors: &mut LoraTensors,
        y: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        self.check(t, tensors)?;
        check_len("Y", y.len(), t * self.n, || format!("[T, N] = [{t}, {}]", self.n))?;
        let (k, n, q) = (self.k, self.n, self.rank);
        let stream = blas.stream().clone();
        let (x, _x) = tensors.x.device_ptr(&stream);
        let (w, _w) = tensors.w.device_ptr(&stream);
        let (a, _a) = tensors.a.device_ptr(&stream);
        let (b, _b) = tensors.b.device_ptr(&stream);
        let (h, _h) = tensors.h.device_ptr_mut(&stream);
        let (y, _y) = y.device_ptr_mut(&stream);
        // SAFETY: every length was checked against its shape above; outputs do not alias inputs.
        unsafe {
            blas.gemm_row_major([t, q, k], Operand::new(x, k, false), Operand::new(a, k, true), h, q, 0.0, false)?;
            blas.gemm_row_major([t, n, k], Operand::new(x, k, false), Operand::new(w, k, true), y, n, 0.0, false)?;
            blas.gemm_row_major([t, n, q], Operand::new(h, q, false), Operand::new(b, q, true), y, n, 1.0, false)
        }
    }

    /// dX, dA, dB for the upstream gradient `dy`, using the `H` the forward kept.
    pub fn backward(
        &self,
        blas: &RowMajorBlas,
        t: usize,
        tensors: &mut LoraTensors,
        dy: &CudaView<bf16>,
        grads: &mut LoraGrads,
    ) -> Result<()> {
        self.check(t, tensors)?;
        let (k, n, q) = (self.k, self.n, self.rank);
        check_len("dY", dy.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        check_len("dX", grads.dx.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("dA", grads.da.len(), q * k, || format!("[q, K] = [{q}, {k}]"))?;
        check_len("dB", grads.db.len(), n * q, || format!("[N, q] = [{n}, {q}]"))?;
        check_len("dH", grads.dh.len(), t * q, || format!("[T, q] = [{t}, {q}]"))?;
        let stream = blas.stream().clone();
        let (x, _x) = tensors.x.device_ptr(&stream);
        let (w, _w) = tensors.w.device_ptr(&stream);
        let (a, _a) = tensors.a.device_ptr(&stream);
        let (b, _b) = tensors.b.device_ptr(&stream);
        let (h, _h) = tensors.h.device_ptr_mut(&stream);
        let (dy, _dy) = dy.device_ptr(&stream);
        let (dx, _dx) = grads.dx.device_ptr_mut(&stream);
        let (da, _da) = grads.da.device_ptr_mut(&stream);
        let (db, _db) = grads.db.device_ptr_mut(&stream);
        let (dh, _dh) = grads.dh.device_ptr_mut(&stream);
        // SAFETY: every length was checked against its shape above; outputs do not alias inputs.
        unsafe {
            blas.gemm_row_major([t, q, n], Operand::new(dy, n, false), Operand::new(b, q, false), dh, q, 0.0, false)?;
            blas.gemm_row_major([t, k, n], Operand::new(dy, n, false), Operand::new(w, k, false), dx, k, 0.0, false)?;
            blas.gemm_row_major([t, k, q], Operand::new(dh, q, false), Operand::new(a, k, false), dx, k, 1.0, false)?;
            blas.gemm_row_major([q, k, t], Operand::new(dh, q, true), Operand::new(x, k, false), da, k, 0.0, false)?;
            blas.gemm_row_major([n, q, t], Operand::new(dy, n, true), Operand::new(h, q, false), db, q, 0.0, false)
        }
    }
}
