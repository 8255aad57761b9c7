//! `W' = W + dW` on the GPU (kernels/merge.cu).

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::element::Element;
use super::handle::BoneKernels;
use super::launch::{Arg, Launcher};
use super::params::BoneLayer;
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
        let weight_layout = || format!("[N, K] = [{}, {}]", layer.n(), layer.k());
        self.check_buffer("W", w, layer.weight_len(), weight_layout)?;
        self.check_buffer("B", b, layer.adapter_len(), || layer.adapter_layout())?;
        self.check_buffer("out", out, layer.weight_len(), weight_layout)?;

        let stream = self.stream();
        let (w_ptr, _w_done) = w.device_ptr(stream);
        let (b_ptr, _b_done) = b.device_ptr(stream);
        let (out_ptr, _out_done) = out.device_ptr_mut(stream);
        // W, B and out hold exactly the elements the kernel reads and writes (checked
        // above); `out` is borrowed mutably, so it cannot alias `w` or `b`.
        launch_merge(self, layer, (TW::KERNEL_SUFFIX, TB::KERNEL_SUFFIX), [w_ptr, b_ptr, out_ptr])
    }
}

/// The merge kernel for W of type suffix `types.0` and B of `types.1`, one thread per
/// element of W, over device addresses of W, B and out that the caller has checked.
pub(crate) fn launch_merge(
    launcher: &impl Launcher,
    layer: &LayerShape,
    types: (&str, &str),
    [w, b, out]: [u64; 3],
) -> Result<()> {
    let params = BoneLayer::new(layer, None)?;
    let kernel = format!("bone_merge_w_{}_b_{}", types.0, types.1);
    launcher.elementwise(&kernel, layer.weight_len(), &[Arg::Layer(params), Arg::Ptr(w), Arg::Ptr(b), Arg::Ptr(out)])
}
