//! The GPU side: the embedded kernel image, device discovery, and [`BoneKernels`],
//! the handle that owns the loaded module for one CUDA context and stream.
//!
//! Every entry point validates shapes and buffer lengths before any launch, works on
//! the caller's stream (stream-ordered, no hidden synchronisation, nothing copied to
//! the host), and returns [`crate::BoneError::KernelsNotBuilt`] when the crate was
//! built without nvcc.
//!
//! One training step of one adapted layer, with MiSS dropout and gradients accumulated
//! over two micro-batches (compiled by the doctests; it needs a GPU to run):
//!
//! ```no_run
//! use bone_kernels::cuda::{Accumulate, BoneKernels, LayerGrads, LayerWeights, Pass, Workspace, stream_on_device};
//! use bone_kernels::{Dims, Dropout, LayerShape, Variant};
//! use half::bf16;
//!
//! let layer = LayerShape::new(Variant::Shared, Dims { k: 4096, n: 4096, r: 64 })?;
//! let t = 512;
//! let stream = stream_on_device(0)?;
//! let kernels = BoneKernels::new(stream.clone())?;
//! let bytes = kernels.workspace_bytes(&layer, t, Pass::Backward)?;
//! let mut workspace = Workspace::with_bytes(stream.clone(), bytes)?;
//! let w = stream.alloc_zeros::<bf16>(layer.weight_len())?; // the frozen nn.Linear.weight
//! let b = stream.alloc_zeros::<f32>(layer.adapter_len())?; // PEFT's miss_block, zero at first
//! let (mut y, mut dx) = (stream.alloc_zeros::<bf16>(t * layer.n())?, stream.alloc_zeros::<bf16>(t * layer.k())?);
//! let mut db = stream.alloc_zeros::<f32>(layer.adapter_len())?;
//! for micro_batch in 0..2u64 {
//!     let x = stream.alloc_zeros::<bf16>(t * layer.k())?; // this micro-batch's input
//!     let dy = stream.alloc_zeros::<bf16>(t * layer.n())?; // and its upstream gradient
//!     // The same dropout mask in both passes: one seed per micro-batch.
//!     let dropout = Some(Dropout::new(0.05, 1000 + micro_batch)?);
//!     let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout };
//!     kernels.forward(&layer, t, &x.as_view(), &weights, &mut y.as_view_mut(), &mut workspace)?;
//!     // dB summed over the micro-batches; dX overwritten for each.
//!     let accumulate = Accumulate { db: micro_batch > 0, ..Accumulate::NONE };
//!     let mut grads = LayerGrads { dx: Some(dx.as_view_mut()), db: db.as_view_mut(), dbias: None, accumulate };
//!     kernels.backward(&layer, t, &x.as_view(), &weights, &dy.as_view(), &mut grads, &mut workspace)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod baseline;
mod bat_col;
#[cfg(test)]
mod bat_col_grads_tests;
mod bat_row;
#[doc(hidden)]
pub mod bench_support;
mod bias_grad;
mod call;
mod device;
#[cfg(test)]
mod dropout_mask_tests;
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
#[cfg(test)]
mod random_shapes_tests;
#[cfg(test)]
mod rounded_once_tests;
#[cfg(test)]
mod saved_block_sums_tests;
mod setup;
mod shared_block;
#[cfg(test)]
mod shared_traffic_tests;
mod split;
mod timed;
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
