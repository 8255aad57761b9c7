//! BatCol the way a careful user would build it from cuBLAS: W' formed whole in a
//! transient N x K bf16 buffer (this crate's merge kernel), cuBLAS GEMMs, and this
//! crate's dB GEMM on G = dY^T X held whole in bf16. Correct, simple, and
//! N x K x 4 bytes of transient memory: the alternative the fused kernels must beat.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use super::blas::{Operand, RowMajorBlas};
use crate::cuda::BoneKernels;
use crate::cuda::launch::{Arg, Gemm, Launcher};
use crate::cuda::params::BoneLayer;
use crate::error::{BoneError, Result};
use crate::shape::{LayerShape, check_len};
use crate::variant::Variant;

pub struct BatColCublasPlan {
    layer: LayerShape,
    params: BoneLayer,
}

/// The plan's transient buffers: W' and G (bf16, N x K each) and onehot (bf16, K x r).
pub struct PlanBuffers<'a> {
    pub w_prime: CudaViewMut<'a, bf16>,
    pub g: CudaViewMut<'a, bf16>,
    pub onehot: CudaViewMut<'a, bf16>,
}

impl BatColCublasPlan {
    pub fn new(layer: &LayerShape) -> Result<Self> {
        if layer.variant() != Variant::BatCol {
            return Err(BoneError::UnsupportedByKernels(format!(
                "the cuBLAS plan is for BatCol, not {}",
                layer.variant()
            )));
        }
        Ok(BatColCublasPlan { layer: *layer, params: BoneLayer::new(layer, None)? })
    }

    /// Bytes of transient memory the plan needs (W' and G in bf16, both N x K; onehot K x r).
    pub fn transient_bytes(&self) -> usize {
        self.layer.weight_len() * 4 + self.layer.k() * self.layer.r() * 2
    }

    fn form_w_prime(
        &self,
        kernels: &BoneKernels,
        w: &CudaView<bf16>,
        b: &CudaView<f32>,
        out: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        kernels.merge(&self.layer, w, b, out)
    }

    /// `Y = X W'^T`.
    #[allow(clippy::too_many_arguments)] // the step's own tensors
    pub fn forward(
        &self,
        kernels: &BoneKernels,
        blas: &RowMajorBlas,
        t: usize,
        x: &CudaView<bf16>,
        w: &CudaView<bf16>,
        b: &CudaView<f32>,
        buffers: &mut PlanBuffers,
        y: &mut CudaViewMut<bf16>,
    ) -> Result<()> {
        let (k, n) = (self.layer.k(), self.layer.n());
        check_len("X", x.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("Y", y.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        self.form_w_prime(kernels, w, b, &mut buffers.w_prime)?;
        let stream = kernels.stream().clone();
        let (x, _x) = x.device_ptr(&stream);
        let (w_prime, _wp) = buffers.w_prime.device_ptr(&stream);
        let (y, _y) = y.device_ptr_mut(&stream);
        // SAFETY: lengths checked above and by merge (W' is [N, K]); Y does not alias X or W'.
        unsafe {
            blas.gemm_row_major([t, n, k], Operand::new(x, k, false), Operand::new(w_prime, k, true), y, n, 0.0, false)
        }
    }

    /// dX = dY W' (W' formed again) and dB from G = dY^T X.
    #[allow(clippy::too_many_arguments)] // the step's own tensors
    pub fn backward(
        &self,
        kernels: &BoneKernels,
        blas: &RowMajorBlas,
        t: usize,
        x: &CudaView<bf16>,
        w: &CudaView<bf16>,
        b: &CudaView<f32>,
        dy: &CudaView<bf16>,
        buffers: &mut PlanBuffers,
        dx: &mut CudaViewMut<bf16>,
        db: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        let (k, n) = (self.layer.k(), self.layer.n());
        check_len("X", x.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("dY", dy.len(), t * n, || format!("[T, N] = [{t}, {n}]"))?;
        check_len("dX", dx.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("dB", db.len(), self.layer.adapter_len(), || self.layer.adapter_layout())?;
        check_len("G", buffers.g.len(), n * k, || format!("[N, K] = [{n}, {k}]"))?;
        let r = self.layer.r();
        check_len("onehot", buffers.onehot.len(), k * r, || format!("[K, r] = [{k}, {r}]"))?;
        self.form_w_prime(kernels, w, b, &mut buffers.w_prime)?;
        let stream = kernels.stream().clone();
        let (x, _x) = x.device_ptr(&stream);
        let (w_ptr, _w) = w.device_ptr(&stream);
        let (w_prime, _wp) = buffers.w_prime.device_ptr(&stream);
        let (dy, _dy) = dy.device_ptr(&stream);
        let (dx, _dx) = dx.device_ptr_mut(&stream);
        let (g, _g) = buffers.g.device_ptr_mut(&stream);
        let (db, _db) = db.device_ptr_mut(&stream);
        let (onehot, _onehot) = buffers.onehot.device_ptr_mut(&stream);
        let dx_operands = (Operand::new(dy, n, false), Operand::new(w_prime, k, false));
        let g_operands = (Operand::new(dy, n, true), Operand::new(x, k, false));
        // SAFETY: lengths checked above; outputs do not alias inputs.
        unsafe {
            blas.gemm_row_major([t, k, n], dx_operands.0, dx_operands.1, dx, k, 0.0, false)?;
            blas.gemm_row_major([n, k, t], g_operands.0, g_operands.1, g, k, 0.0, false)?;
        }
        // dB_o = W_o^T G_o + onehot^T G_o per output block, as in the fused path (cuda/bat_col.rs).
        kernels.elementwise("bone_block_one_hot", k * r, &[Arg::Layer(self.params), Arg::Ptr(onehot)])?;
        Gemm::new((w_ptr, r), (g, r), (db, r), [r, r, k])
            .second((onehot, r), (g, r), k)
            .strides([r * k, r * k, 0, r * k, r * r])
            .launch(kernels, "bone_gemm_tt_f32", n / r)
    }
}
