//! The new bytes of one base tensor: its changes made one after another, each rounded to
//! the tensor's dtype (as PEFT rounds after each adapter it merges), on the GPU where
//! asked and possible, else on the CPU in f64. An unmerge is the merge of the adapter that
//! undoes the block (made by the plan), so both run on the same code.

use half::{bf16, f16};
use safetensors::Dtype;

use super::apply::{ApplyOptions, Engine};
use super::checkpoint::Checkpoint;
use super::dtype::{decode, encode};
use super::error::{AdapterError, Result};
use super::fast_merge;
use super::plan::{Change, Target};
use crate::cuda::{BoneKernels, Element, device_count, kernels_built, stream_on_device};
use crate::reference;
use crate::shape::LayerShape;

/// The GPU handle the options ask for, if any.
pub(super) fn gpu(options: &ApplyOptions) -> Result<Option<BoneKernels>> {
    let available = kernels_built() && device_count() > 0;
    match options.engine {
        Engine::Cpu => Ok(None),
        Engine::Auto if !available => Ok(None),
        Engine::Auto | Engine::Gpu => {
            let stream = stream_on_device(0).map_err(AdapterError::Gpu)?;
            BoneKernels::new(stream).map(Some).map_err(AdapterError::Gpu)
        }
    }
}

/// The new bytes of `target`, and whether the GPU computed its blocks.
pub(super) fn rewrite(
    checkpoint: &Checkpoint,
    target: &Target,
    kernels: Option<&BoneKernels>,
) -> Result<(Vec<u8>, bool)> {
    let mut bytes = checkpoint.bytes(&target.entry).to_vec();
    let mut on_gpu = false;
    for change in &target.changes {
        (bytes, on_gpu) = change_once(checkpoint, target, change, &bytes, kernels)?;
    }
    Ok((bytes, on_gpu))
}

/// One change of `target`, from its current bytes.
fn change_once(
    checkpoint: &Checkpoint,
    target: &Target,
    change: &Change,
    bytes: &[u8],
    kernels: Option<&BoneKernels>,
) -> Result<(Vec<u8>, bool)> {
    let dtype = target.entry.dtype;
    let unsupported = || AdapterError::UnsupportedDtype {
        path: checkpoint.dir.clone(),
        key: target.name.clone(),
        dtype: format!("{dtype:?}"),
    };
    let (shape, b, adapter) = match change {
        Change::Replace { values, .. } => return Ok((encode(dtype, values).ok_or_else(unsupported)?, false)),
        Change::Weight { shape, b, adapter } => (*shape, b.as_ref(), *adapter),
    };
    let layer_error = |source| AdapterError::Layer {
        path: adapter.dir.join("adapter_model.safetensors"),
        key: target.name.clone(),
        source,
    };
    if let Some(kernels) = kernels {
        let gpu = match dtype {
            Dtype::BF16 => Some(gpu_merge::<bf16>(kernels, &shape, bytes, b)),
            Dtype::F16 => Some(gpu_merge::<f16>(kernels, &shape, bytes, b)),
            Dtype::F32 => Some(gpu_merge::<f32>(kernels, &shape, bytes, b)),
            _ => None, // f64 weights: no f64 kernel; the CPU reference below is exact for them
        };
        if let Some(result) = gpu {
            return Ok((result.map_err(layer_error)?, true));
        }
    }
    let w = decode(dtype, bytes).ok_or_else(unsupported)?;
    let new = match fast_merge::bat_col(&shape, &w, b) {
        Some(merged) => merged,
        None => reference::merge(&shape, &w, b).map_err(layer_error)?,
    };
    Ok((encode(dtype, &new).ok_or_else(unsupported)?, false))
}

/// Merges one weight on the GPU: W in its own type, B as f32, W' rounded once.
fn gpu_merge<T: Element>(kernels: &BoneKernels, shape: &LayerShape, bytes: &[u8], b: &[f64]) -> crate::Result<Vec<u8>> {
    let width = size_of::<T>();
    let w: Vec<T> = bytes.chunks_exact(width).map(T::read_le).collect();
    let b: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    let stream = kernels.stream();
    let (w, b) = (stream.clone_htod(&w)?, stream.clone_htod(&b)?);
    let mut out = stream.alloc_zeros::<T>(shape.weight_len())?;
    kernels.merge(shape, &w, &b, &mut out)?;
    let mut merged = Vec::with_capacity(bytes.len());
    for value in stream.clone_dtoh(&out)? {
        value.write_le(&mut merged);
    }
    Ok(merged)
}
