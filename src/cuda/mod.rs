//! The GPU side: the embedded kernel image, device discovery, and [`BoneKernels`],
//! the handle that owns the loaded module for one CUDA context and stream.
//!
//! Every entry point validates shapes and buffer lengths before any launch, works on
//! the caller's stream (stream-ordered, no hidden synchronisation, nothing copied to
//! the host), and returns [`crate::BoneError::KernelsNotBuilt`] when the crate was
//! built without nvcc.

pub mod baseline;
mod bat_col;
#[cfg(test)]
mod bat_col_grads_tests;
mod bat_row;
#[doc(hidden)]
pub mod bench_support;
mod device;
mod element;
#[cfg(test)]
mod emulator;
#[cfg(test)]
mod emulator_probes_tests;
#[cfg(test)]
mod emulator_tests;
#[cfg(test)]
mod gemm_tests;
mod handle;
mod image;
pub(crate) mod launch;
#[cfg(test)]
mod launch_plan_tests;
mod merge;
#[cfg(test)]
mod merge_tests;
pub(crate) mod params;
mod setup;
mod shared_block;
mod split;
mod token_chunks;
mod training;
mod workspace;

pub use device::{device_count, stream_on_device};
pub use element::Element;
pub use handle::{BoneKernels, GemmEngine};
pub use image::{kernels_built, nvcc_version};
pub use training::{Accumulate, ActivationElement, AdapterElement, LayerGrads, LayerWeights, Pass};
pub use workspace::Workspace;

// A trainer may share a handle across threads (each launch goes to the handle's stream)
// and move a workspace to another (its calls take `&mut`).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<BoneKernels>();
    send_sync::<Workspace>();
};
