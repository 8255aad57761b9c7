//! The GPU side: the embedded kernel image, device discovery, and [`BoneKernels`],
//! the handle that owns the loaded module for one CUDA context and stream.
//!
//! Every entry point validates shapes and buffer lengths before any launch, works on
//! the caller's stream (stream-ordered, no hidden synchronisation, nothing copied to
//! the host), and returns [`crate::BoneError::KernelsNotBuilt`] when the crate was
//! built without nvcc.

mod device;
mod element;
mod handle;
mod image;
mod merge;
mod params;

pub use device::{device_count, stream_on_device};
pub use element::Element;
pub use handle::BoneKernels;
pub use image::{kernels_built, nvcc_version};
