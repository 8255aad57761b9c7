//! `W' = W + dW` on the GPU (kernels/merge.cu).

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::element::Element;
use super::handle::BoneKernels;
use super::params::{BONE_MERGE_THREADS, BoneLayer};
use crate::error::Result;
use crate::shape::LayerShape;

impl BoneKernels {
    /// Writes the merged weight `W' = W + dW` of `layer` into `out` (same type and
    /// shape as W, `[N, K]`), computed in f32 and rounded once. Every variant.
    ///
    /// `w` is `[N, K]` and `b` is B as PEFT stores it ([`LayerShape::adapter_dims`]).
    /// Stream-ordered on [`BoneKernels::stream`]; allocates nothing.
    pub fn merge<TW: Element, TB: Element>(
        &self,
        layer: &LayerShape,
        w: &impl DevicePtr<TW>,
        b: &impl DevicePtr<TB>,
        out: &mut impl DevicePtrMut<TW>,
    ) -> Result<()> {
        let params = BoneLayer::new(layer, None)?;
        let weight_layout = || format!("[N, K] = [{}, {}]", layer.n(), layer.k());
        self.check_buffer("W", w, layer.weight_len(), weight_layout)?;
        self.check_buffer("B", b, layer.adapter_len(), || layer.adapter_layout())?;
        self.check_buffer("out", out, layer.weight_len(), weight_layout)?;

        let function = self.function(&format!("bone_merge_w_{}_b_{}", TW::KERNEL_SUFFIX, TB::KERNEL_SUFFIX))?;
        let total = layer.weight_len() as u32; // <= i32::MAX, checked by BoneLayer::new
        let config = LaunchConfig {
            grid_dim: (total.div_ceil(BONE_MERGE_THREADS), 1, 1),
            block_dim: (BONE_MERGE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = self.stream();
        let (w_ptr, _w_done) = w.device_ptr(stream);
        let (b_ptr, _b_done) = b.device_ptr(stream);
        let (out_ptr, _out_done) = out.device_ptr_mut(stream);
        let mut launch = stream.launch_builder(&function);
        launch.arg(&params).arg(&w_ptr).arg(&b_ptr).arg(&out_ptr);
        // SAFETY: the arguments match `bone_merge_w_*_b_*(BoneLayer, const TW*, const TB*, TW*)`
        // in type and order; W, B and out hold exactly the elements the kernel reads and
        // writes (checked above) and live in this context; the kernel bounds-checks every
        // index against N * K; `out` is borrowed mutably, so it cannot alias `w` or `b`.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}
