//! BatCol the way a careful user would build it from cuBLAS: W' formed whole in a
//! transient N x K bf16 buffer (this crate's merge kernel), cuBLAS GEMMs, and this
//! crate's dB reduction (the fused path's own, `bat_col::block_grads`) on G = dY^T X held
//! whole in bf16. Correct, simple, and N x K x 4 bytes of transient memory: the
//! alternative the fused kernels must beat.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use super::blas::RowMajorBlas;
use super::linear::Linear;
use crate::cuda::BoneKernels;
use crate::cuda::bat_col;
use crate::cuda::call::Call;
use crate::cuda::params::BoneLayer;
use crate::error::{BoneError, Result};
use crate::shape::{LayerShape, check_len};
use crate::variant::Variant;

pub struct BatColCublasPlan {
    layer: LayerShape,
    params: BoneLayer,
}

/// The plan's transient buffers: W' and G (bf16, N x K each) and dB's partial sums (f32,
/// [`BatColCublasPlan::partials_len`]).
pub struct PlanBuffers<'a> {
    pub w_prime: CudaViewMut<'a, bf16>,
    pub g: CudaViewMut<'a, bf16>,
    pub partials: CudaViewMut<'a, f32>,
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

    /// Bytes of transient memory the plan needs (W' and G in bf16, both N x K; dB's partial
    /// sums).
    pub fn transient_bytes(&self) -> usize {
        self.layer.weight_len() * 4 + self.partials_len() * 4
    }

    /// f32 elements of dB's partial sums over chunks of K (at least 1, so that it can be
    /// allocated).
    pub fn partials_len(&self) -> usize {
        (bat_col::block_grads_partial_bytes(true, &self.layer, self.layer.n()) / 4).max(1)
    }

    /// X `[T, K]` and the `[T, N]` buffer `name`, checked before anything is launched.
    fn check_tokens(&self, t: usize, x: usize, out: usize, name: &'static str) -> Result<()> {
        let (k, n) = (self.layer.k(), self.layer.n());
        check_len("X", x, t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len(name, out, t * n, || format!("[T, N] = [{t}, {n}]"))
    }

    /// The plain GEMMs on W' and G, through the cuBLAS linear layer.
    fn linear(&self) -> Linear {
        Linear { k: self.layer.k(), n: self.layer.n() }
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
        self.check_tokens(t, x.len(), y.len(), "Y")?; // before the merge launches anything
        kernels.merge(&self.layer, w, b, &mut buffers.w_prime)?;
        self.linear().forward(blas, t, x, &buffers.w_prime.as_view(), y)
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
        self.check_tokens(t, x.len(), dy.len(), "dY")?;
        check_len("dX", dx.len(), t * k, || format!("[T, K] = [{t}, {k}]"))?;
        check_len("G", buffers.g.len(), n * k, || format!("[N, K] = [{n}, {k}]"))?;
        check_len("dB", db.len(), self.layer.adapter_len(), || self.layer.adapter_layout())?;
        check_len("partials", buffers.partials.len(), self.partials_len(), || "partials_len()".into())?;
        kernels.merge(&self.layer, w, b, &mut buffers.w_prime)?;
        let linear = self.linear();
        linear.input_grad(blas, t, dy, &buffers.w_prime.as_view(), dx)?;
        linear.weight_grad(blas, t, dy, x, &mut buffers.g)?;
        // dB_o = W_o^T G_o + onehot^T G_o per output block, as in the fused path.
        let stream = kernels.stream().clone();
        let (x_ptr, _x) = x.device_ptr(&stream);
        let (w_ptr, _w) = w.device_ptr(&stream);
        let (b_ptr, _b) = b.device_ptr(&stream);
        let (g, _g) = buffers.g.device_ptr(&stream);
        let (partials, _partials) = buffers.partials.device_ptr_mut(&stream);
        let (db, _db) = db.device_ptr_mut(&stream);
        let call = Call::new(self.params, self.layer, t, ("bf16", "f32"), [x_ptr, w_ptr, b_ptr])?;
        bat_col::block_grads(kernels, &call, (w_ptr, g, n), partials, db)
    }
}
