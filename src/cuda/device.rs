//! Finding a CUDA device without panicking where there is none.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::error::{BoneError, Result};

/// Number of CUDA devices; 0 where libcuda is absent (cudarc would panic on its
/// first driver call there, so the library is probed first).
pub fn device_count() -> usize {
    // SAFETY: only tries to dlopen libcuda and closes it again; touches no driver state.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

/// A new stream on device `ordinal`'s primary context, or [`BoneError::NoDevice`]
/// saying why there is none.
pub fn stream_on_device(ordinal: usize) -> Result<Arc<CudaStream>> {
    let count = device_count();
    if ordinal >= count {
        let why = if count == 0 {
            "no CUDA driver (libcuda) or no CUDA device on this machine".to_string()
        } else {
            format!("device {ordinal} requested, {count} present")
        };
        return Err(BoneError::NoDevice(why));
    }
    let context = CudaContext::new(ordinal)?;
    Ok(context.new_stream()?)
}
