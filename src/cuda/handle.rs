//! [`BoneKernels`]: the loaded kernel module for one stream's context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, DeviceSlice};
use cudarc::nvrtc::Ptx;

use super::image::kernel_image;
use crate::error::{BoneError, Result};
use crate::shape::check_len;

/// The Bone kernels, loaded once into the context of `stream`; every launch goes
/// to that stream. Create one per stream (they are cheap to clone and share the
/// module).
#[derive(Clone, Debug)]
pub struct BoneKernels {
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Arc<Mutex<HashMap<String, CudaFunction>>>,
}

impl BoneKernels {
    /// Loads the embedded kernel image into `stream`'s context.
    ///
    /// Fails with [`BoneError::KernelsNotBuilt`] when the crate was built without nvcc.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let image = kernel_image()?;
        let module = stream.context().load_module(Ptx::from_binary(image.to_vec()))?;
        Ok(BoneKernels { stream, module, functions: Arc::default() })
    }

    /// The stream every launch of this handle is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernel `name`, looked up in the module once and cached.
    pub(crate) fn function(&self, name: &str) -> Result<CudaFunction> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut functions = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(function) = functions.get(name) {
            return Ok(function.clone());
        }
        let function = self.module.load_function(name)?;
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
