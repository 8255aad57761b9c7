//! A plain linear layer through cuBLAS: the GEMM floors (`Y = X W^T`, `dX = dY W`) and
//! full fine-tuning's weight gradient (`dW = dY^T X`), bf16 in and out, f32 accumulation.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use super::blas::{Operand, RowMajorBlas};
use crate::error::Result;
use crate::shape::check_len;

/// A `[N, K]` weight's sizes.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub k: usize,
    pub n: usize,
}

impl Linear {
    fn check(&self, t: usize, x: usize, w: usize) -> Result<()> {
        let (k, n) = (self.k, self.n);
        check_len("X", x, t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("W", w, n * k, || format!("[N, K] = [{n}, {k}]"))
    }

    /// `Y = X W^T`.
    pub fn forward(
        &self,
        blas: &RowMajorBlas,
        t: usize,
        x: &CudaView<bf16>,
        w: &CudaView<bf16>,
        y: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        self.check(t, x.len(), w.len())?;
        check_len("Y", y.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        let stream = blas.stream().clone();
        let ((x, _x), (w, _w), (y, _y)) = (x.device_ptr(&stream), w.device_ptr(&stream), y.device_ptr_mut(&stream));
        // SAFETY: lengths checked above; Y does not alias X or W.
        unsafe { blas.gemm_row_major([t, n, k], Operand::new(x, k, false), Operand::new(w, k, true), y, n, 0.0, false) }
    }

    /// `dX = dY W`.
    pub fn input_grad(
        &self,
        blas: &RowMajorBlas,
        t: usize,
        dy: &CudaView<bf16>,
        w: &CudaView<bf16>,
        dx: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        self.check(t, dx.len(), w.len())?;
        check_len("dY", dy.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        let stream = blas.stream().clone();
        let ((dy, _dy), (w, _w), (dx, _dx)) =
            (dy.device_ptr(&stream), w.device_ptr(&stream), dx.device_ptr_mut(&stream));
        // SAFETY: lengths checked above; dX does not alias dY or W.
        unsafe {
            blas.gemm_row_major([t, k, n], Operand::new(dy, n, false), Operand::new(w, k, false), dx, k, 0.0, false)
        }
    }

    /// `dW = dY^T X`.
    pub fn weight_grad(
        &self,
        blas: &RowMajorBlas,
        t: usize,
        dy: &CudaView<bf16>,
        x: &CudaView<bf16>,
        dw: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        self.check(t, x.len(), dw.len())?;
        check_len("dY", dy.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        let stream = blas.stream().clone();
        let ((dy, _dy), (x, _x), (dw, _dw)) =
            (dy.device_ptr(&stream), x.device_ptr(&stream), dw.device_ptr_mut(&stream));
        // SAFETY: lengths checked above; dW does not alias dY or X.
        unsafe {
            blas.gemm_row_major([n, k, t], Operand::new(dy, n, true), Operand::new(x, k, false), dw, k, 0.0, false)
        }
    }
}
