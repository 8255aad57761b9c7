//! Not part of the API (hidden from the docs): one plain bf16 product on the crate's GEMM
//! kernels or on cuBLAS, so that `benches/layers.rs` can time them side by side on the same
//! shape (issue #4 asks for the GEMM-shaped kernels' throughput as a fraction of cuBLAS's);
//! the engines a GPU run covers (`BONE_GEMM_ENGINES`), for the GPU tests and benches; and
//! each launch's time within a pass, for the benches' breakdown.

use std::sync::Arc;

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use super::baseline::RowMajorBlas;
use super::call::aligned;
use super::handle::{BoneKernels, GemmEngine};
use super::launch::Gemm;
use super::split::{Cublas, Split};
use super::timed::LaunchTimer;
use crate::error::{BoneError, Result};

/// The three products a layer's passes take, by their operands' layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// `C = A B^T`, A `[m, k]`, B `[n, k]` (the forward's `Y = X W^T`; kernels `kk`).
    Forward,
    /// `C = A B`, A `[m, k]`, B `[k, n]` (the backward's `dX = dY W`; kernels `kt`).
    Input,
    /// `C = A^T B`, A `[k, m]`, B `[k, n]` (a weight gradient `dW = dY^T X`; kernels `tt`).
    Weight,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Forward => "kk",
            Product::Input => "kt",
            Product::Weight => "tt",
        }
    }
}

/// C `[m, n]` (bf16) = the `product` of bf16 `a` and `b` (f32 accumulation), on cuBLAS
/// where `blas` is given, else on `kernels`' own GEMM (that of its engine: mma.sync, wgmma
/// or the warp-specialised wgmma). Lengths must be exactly m k, n k and m n; m, n and k
/// multiples of 8; every view 16-byte aligned.
pub fn product(
    kernels: &BoneKernels,
    blas: Option<&RowMajorBlas>,
    product: Product,
    [m, n, k]: [usize; 3],
    (a, b): (&CudaView<bf16>, &CudaView<bf16>),
    c: &mut CudaViewMut<bf16>,
) -> Result<()> {
    if ![m, n, k].iter().all(|v| v.is_multiple_of(8)) {
        return Err(BoneError::UnsupportedByKernels(format!("[m, n, k] = [{m}, {n}, {k}]: multiples of 8 only")));
    }
    let dims = || format!("[m, n, k] = [{m}, {n}, {k}]");
    kernels.check_buffer("A", a, m * k, dims)?;
    kernels.check_buffer("B", b, n * k, dims)?;
    kernels.check_buffer("C", c, m * n, dims)?;
    let stream = kernels.stream().clone();
    let ((a_ptr, _a), (b_ptr, _b), (c_ptr, _c)) =
        (a.device_ptr(&stream), b.device_ptr(&stream), c.device_ptr_mut(&stream));
    let (lda, ldb) = match product {
        Product::Forward => (k, k),
        Product::Input => (k, n),
        Product::Weight => (m, n),
    };
    let (a_ptr, b_ptr, c_ptr) = (aligned("A", a_ptr)?, aligned("B", b_ptr)?, aligned("C", c_ptr)?);
    let gemm = Gemm::new((a_ptr, lda), (b_ptr, ldb), (c_ptr, n), [m, n, k]);
    let kernel = format!("bone_gemm_{}_bf16_bf16", product.name());
    match blas {
        Some(blas) => gemm.launch(&Split(Cublas { kernels, blas }), &kernel, 1),
        None => gemm.launch(kernels, &kernel, 1),
    }
}

/// One launch of a pass and its GPU time (CUDA events around it on the handle's stream).
#[derive(Clone, Debug)]
pub struct LaunchTime {
    /// The kernel; a GEMM as `<instantiation> <m>x<n>x<k>[+<k2>] x<batches> on <engine>`, a
    /// library product as `cublas <m>x<n>x<k> x<batches> beta=<beta>`.
    pub kernel: String,
    pub ms: f32,
}

/// Runs `passes` (forward and backward calls on the handle it is given: a copy of
/// `kernels` whose every launch is marked with CUDA events), waits for them, and returns
/// each launch's time, in launch order. The marks add an event record before and after
/// each launch, so the sum is a little above the passes' time unmarked.
pub fn time_launches(
    kernels: &BoneKernels,
    passes: impl FnOnce(&BoneKernels) -> Result<()>,
) -> Result<Vec<LaunchTime>> {
    let timer = Arc::new(LaunchTimer::default());
    passes(&kernels.timed(timer.clone()))?;
    timer
        .take()
        .into_iter()
        .map(|(kernel, start, end)| Ok(LaunchTime { kernel, ms: start.elapsed_ms(&end)? }))
        .collect()
}

/// The engines a GPU run tests and times: every one `kernels`' device runs
/// ([`BoneKernels::available_gemm_engines`]), or, where `BONE_GEMM_ENGINES` is set, those it
/// names by [`GemmEngine::label`], comma-separated: so that a run can leave out an engine
/// that fails on this hardware and still check and measure the others.
pub fn engines_to_run(kernels: &BoneKernels) -> Result<Vec<GemmEngine>> {
    let available = kernels.available_gemm_engines()?;
    match std::env::var("BONE_GEMM_ENGINES") {
        Ok(names) => pick_engines(&available, &names),
        Err(_) => Ok(available),
    }
}

/// The engines of `available` that `names` lists (labels, comma-separated), in its order;
/// at least one (an empty list would leave every engine's test with nothing to check).
fn pick_engines(available: &[GemmEngine], names: &str) -> Result<Vec<GemmEngine>> {
    let labels = || available.iter().map(|engine| engine.label()).collect::<Vec<_>>().join(", ");
    let picked = names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            available.iter().copied().find(|engine| engine.label() == name).ok_or_else(|| {
                BoneError::UnsupportedByKernels(format!(
                    "BONE_GEMM_ENGINES names {name:?}; this device runs {}",
                    labels()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if picked.is_empty() {
        return Err(BoneError::UnsupportedByKernels(format!(
            "BONE_GEMM_ENGINES names no engine; this device runs {}",
            labels()
        )));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bone_gemm_engines_picks_available_engines_by_label() {
        let available = [GemmEngine::Native, GemmEngine::Wgmma, GemmEngine::Cublas];
        let picked = pick_engines(&available, "cublas, native,").unwrap();
        assert_eq!(picked, [GemmEngine::Cublas, GemmEngine::Native]);
        let err = pick_engines(&available, "native,wgmma-ws").unwrap_err();
        assert!(err.to_string().contains("\"wgmma-ws\"; this device runs native, wgmma, cublas"), "{err}");
        let err = pick_engines(&available, " , ").unwrap_err();
        assert!(err.to_string().contains("names no engine"), "{err}");
    }
}
