//! [`BoneKernels`]: the loaded kernel module for one stream's context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, DeviceSlice};
use cudarc::nvrtc::Ptx;

use super::baseline::{RowMajorBlas, cublas_present};
use super::image::kernel_image;
use super::launch::GemmKernels;
use super::timed::LaunchTimer;
use crate::error::{BoneError, Result};
use crate::shape::check_len;

/// The Bone kernels, loaded once into the context of `stream`; every launch goes
/// to that stream. Create one per stream (they are cheap to clone and share the
/// module).
#[derive(Clone)]
pub struct BoneKernels {
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Arc<Mutex<HashMap<String, CudaFunction>>>,
    /// cuBLAS, when it computes the forward and backward products ([`GemmEngine::Cublas`]).
    blas: Option<Arc<RowMajorBlas>>,
    /// The crate's GEMM kernels otherwise.
    gemm_kernels: GemmKernels,
    /// The device's streaming multiprocessors (the persistent GEMM's grid).
    multiprocessors: u32,
    /// Where a benchmark's breakdown wants each launch of this handle's passes marked
    /// (`bench_support::time_launches`); None otherwise.
    launch_timer: Option<Arc<LaunchTimer>>,
}

impl std::fmt::Debug for BoneKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoneKernels").field("stream", &self.stream).field("gemm_engine", &self.gemm_engine()).finish()
    }
}

/// What computes the forward and backward passes' matrix products. On an H200
/// (2026-11-28, README "Speed, measured") `Cublas` ran every pass 2.1-3.1x faster than
/// the crate's own GEMMs, which reached 16-32% of cuBLAS's throughput; so a handle starts
/// on `Cublas` where the cuBLAS library loads, and on `Native` where it does not
/// ([`BoneKernels::new`]; [`BoneKernels::gemm_engine`] says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmEngine {
    /// This crate's tensor-core GEMM on mma.sync (kernels/gemm.cuh), the adapter's product
    /// appended along K. Any supported GPU (compute capability 8.0 and later).
    Native,
    /// The same GEMM on Hopper's wgmma (kernels/gemm_wgmma.cuh): compute capability 9.0
    /// only (H100, H200).
    Wgmma,
    /// The wgmma GEMM with its loads on a warpgroup of their own, handing each stage to the
    /// two computing warpgroups through mbarriers (kernels/gemm_wgmma_ws.cuh): compute
    /// capability 9.0 only. Not yet run on a GPU (README, "Status").
    WgmmaWarpSpecialized,
    /// cuBLAS, the adapter's product as a second call accumulating into the first; the
    /// same launch sequence otherwise, and this crate's kernels for everything else,
    /// including the short two-part products of r-wide blocks (BatCol's W', BatRow's
    /// dX_i: memory-bound, one pass over their output on the crate's GEMM instead of two).
    Cublas,
}

impl GemmEngine {
    /// A short name for tables and logs: `native`, `wgmma`, `wgmma-ws`, `cublas`.
    pub fn label(self) -> &'static str {
        match self {
            GemmEngine::Native => "native",
            GemmEngine::Wgmma => "wgmma",
            GemmEngine::WgmmaWarpSpecialized => "wgmma-ws",
            GemmEngine::Cublas => "cublas",
        }
    }
}

impl BoneKernels {
    /// Loads the embedded kernel image into `stream`'s context, with the default GEMM
    /// engine: [`GemmEngine::Cublas`] where the cuBLAS library is on the library path (the
    /// fastest measured), else [`GemmEngine::Native`]. [`BoneKernels::gemm_engine`] says
    /// which; [`BoneKernels::with_gemm_engine`] asks for one and fails where it cannot run.
    ///
    /// Fails with [`BoneError::KernelsNotBuilt`] when the crate was built without nvcc, and
    /// with [`BoneError::Cublas`] where the library is there but its handle cannot be made.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let engine = if cublas_present() { GemmEngine::Cublas } else { GemmEngine::Native };
        Self::with_gemm_engine(stream, engine)
    }

    /// As [`BoneKernels::new`], on `engine` (see [`BoneKernels::set_gemm_engine`]).
    pub fn with_gemm_engine(stream: Arc<CudaStream>, engine: GemmEngine) -> Result<Self> {
        let mut kernels = Self::load(stream)?;
        kernels.set_gemm_engine(engine)?;
        Ok(kernels)
    }

    /// The module loaded, on the crate's mma.sync GEMM.
    fn load(stream: Arc<CudaStream>) -> Result<Self> {
        let image = kernel_image()?;
        let module = stream.context().load_module(Ptx::from_binary(image.to_vec()))?;
        let multiprocessors =
            stream.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        Ok(BoneKernels {
            stream,
            module,
            functions: Arc::default(),
            blas: None,
            gemm_kernels: GemmKernels::MmaSync,
            multiprocessors,
            launch_timer: None,
        })
    }

    /// A handle for another stream of the same context, sharing the loaded module (and
    /// the GEMM engine choice; cuBLAS, if chosen, gets a handle on the new stream).
    pub fn on_stream(&self, stream: Arc<CudaStream>) -> Result<Self> {
        if stream.context() != self.stream.context() {
            return Err(BoneError::WrongContext { buffer: "stream" });
        }
        let blas = match self.blas {
            Some(_) => Some(Arc::new(RowMajorBlas::new(stream.clone())?)),
            None => None,
        };
        Ok(BoneKernels {
            stream,
            module: self.module.clone(),
            functions: self.functions.clone(),
            blas,
            gemm_kernels: self.gemm_kernels,
            multiprocessors: self.multiprocessors,
            launch_timer: None,
        })
    }

    /// The GEMM engines this handle's device can run: [`GemmEngine::Native`] everywhere,
    /// [`GemmEngine::Wgmma`] and [`GemmEngine::WgmmaWarpSpecialized`] on compute capability
    /// 9.0, [`GemmEngine::Cublas`] where the cuBLAS library loads.
    pub fn available_gemm_engines(&self) -> Result<Vec<GemmEngine>> {
        let mut engines = vec![GemmEngine::Native];
        if self.compute_capability()? == (9, 0) {
            engines.extend([GemmEngine::Wgmma, GemmEngine::WgmmaWarpSpecialized]);
        }
        if cublas_present() {
            engines.push(GemmEngine::Cublas);
        }
        Ok(engines)
    }

    fn compute_capability(&self) -> Result<(i32, i32)> {
        let context = self.stream.context();
        let major = context.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = context.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        Ok((major, minor))
    }

    /// Chooses what computes the passes' products (the default: [`BoneKernels::new`]).
    ///
    /// [`GemmEngine::Wgmma`] and [`GemmEngine::WgmmaWarpSpecialized`] fail with
    /// [`BoneError::UnsupportedByKernels`] on a device other than compute capability 9.0
    /// (see [`BoneKernels::available_gemm_engines`]); [`GemmEngine::Cublas`] with
    /// [`BoneError::Cublas`] where the library does not load.
    pub fn set_gemm_engine(&mut self, engine: GemmEngine) -> Result<()> {
        if matches!(engine, GemmEngine::Wgmma | GemmEngine::WgmmaWarpSpecialized) {
            let (major, minor) = self.compute_capability()?;
            if (major, minor) != (9, 0) {
                return Err(BoneError::UnsupportedByKernels(format!(
                    "the wgmma GEMM needs compute capability 9.0 (H100, H200); this device is {major}.{minor}"
                )));
            }
        }
        self.blas = match engine {
            GemmEngine::Native | GemmEngine::Wgmma | GemmEngine::WgmmaWarpSpecialized => None,
            GemmEngine::Cublas => Some(match self.blas.take() {
                Some(blas) => blas,
                None => Arc::new(RowMajorBlas::new(self.stream.clone())?),
            }),
        };
        self.gemm_kernels = GemmKernels::of(engine);
        Ok(())
    }

    /// What computes the passes' products now.
    pub fn gemm_engine(&self) -> GemmEngine {
        if self.blas.is_some() { GemmEngine::Cublas } else { self.own_gemm_engine() }
    }

    /// The crate's GEMM this handle launches: every product's unless cuBLAS is the engine,
    /// then the short two-part products' and those with an addend (`split`).
    pub(crate) fn own_gemm_engine(&self) -> GemmEngine {
        match self.gemm_kernels {
            GemmKernels::MmaSync => GemmEngine::Native,
            GemmKernels::Wgmma => GemmEngine::Wgmma,
            GemmKernels::WgmmaWarpSpecialized => GemmEngine::WgmmaWarpSpecialized,
        }
    }

    /// The crate's GEMM kernels this handle launches when cuBLAS is not the engine.
    pub(crate) fn gemm_kernels(&self) -> GemmKernels {
        self.gemm_kernels
    }

    /// The device's streaming multiprocessors.
    pub(crate) fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// cuBLAS, when it is the GEMM engine.
    pub(crate) fn blas(&self) -> Option<&RowMajorBlas> {
        self.blas.as_deref()
    }

    /// This handle with every launch of its passes marked into `timer`.
    pub(crate) fn timed(&self, timer: Arc<LaunchTimer>) -> Self {
        BoneKernels { launch_timer: Some(timer), ..self.clone() }
    }

    /// The timer this handle's passes mark their launches into, if any.
    pub(crate) fn launch_timer(&self) -> Option<&LaunchTimer> {
        self.launch_timer.as_deref()
    }

    /// The stream every launch of this handle is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernel `name`, allowed `shared_bytes` of dynamic shared memory per block (the
    /// driver's default limit is 48 KiB), looked up once and cached.
    pub(crate) fn function_with_shared(&self, name: &str, shared_bytes: u32) -> Result<CudaFunction> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut functions = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(function) = functions.get(name) {
            return Ok(function.clone());
        }
        let function = self.module.load_function(name)?;
        if shared_bytes > 48 * 1024 {
            let attribute = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            function.set_attribute(attribute, shared_bytes as i32)?;
        }
        functions.insert(name.to_string(), function.clone());
        Ok(function)
    }

    /// Checks that a device buffer has `expected` elements and lives in this handle's context.
    pub(crate) fn check_buffer<T>(
        &self,
        name: &'static str,
        buffer: &impl DeviceSlice<T>,
        expected: usize,
        layout: impl FnOnce() -> String,
    ) -> Result<()> {
        check_len(name, buffer.len(), expected, layout)?;
        if buffer.stream().context() != self.stream.context() {
            return Err(BoneError::WrongContext { buffer: name });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A trainer with a thread per GPU moves its handle, workspace and layer descriptions
    /// there; a handle can also be shared between threads (each clone has its own engine).
    #[test]
    fn handles_and_workspaces_can_move_between_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<super::BoneKernels>();
        sync::<super::BoneKernels>();
        send::<super::super::Workspace>();
        send::<crate::LayerShape>();
        sync::<crate::LayerShape>();
        send::<crate::Dropout>();
    }
}
