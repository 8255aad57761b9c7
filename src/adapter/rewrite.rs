//! The new bytes of one base tensor: its blocks merged one after another, each rounded to
//! the tensor's dtype (as PEFT rounds after each adapter it merges), on the GPU where
//! asked and possible, else on the CPU in f64. An unmerge is the merge of the adapter that
//! undoes the block (made by the plan), so both run on the same code.

use std::borrow::Cow;

use half::{bf16, f16};
use safetensors::Dtype;

use super::apply::{ApplyOptions, Engine};
use super::checkpoint::Checkpoint;
use super::dtype::{decode, encode};
use super::error::{AdapterError, Result};
use super::fast_merge;
use super::plan::{Block, Change, Target};
use crate::cuda::{BoneKernels, Element, device_count, kernels_built, stream_on_device};
use crate::reference;

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

/// The new bytes of `target`, and whether the GPU computed them.
pub(super) fn rewrite(
    checkpoint: &Checkpoint,
    target: &Target,
    kernels: Option<&BoneKernels>,
) -> Result<(Vec<u8>, bool)> {
    let dtype = target.entry.dtype;
    let unsupported = || AdapterError::UnsupportedDtype {
        path: checkpoint.dir.clone(),
        key: target.name.clone(),
        dtype: format!("{dtype:?}"),
    };
    let blocks = match &target.change {
        Change::Replace { values, .. } => return Ok((encode(dtype, values).ok_or_else(unsupported)?, false)),
        Change::Blocks(blocks) => blocks,
    };
    let (name, bytes) = (target.name.as_str(), checkpoint.bytes(&target.entry));
    if let Some(kernels) = kernels {
        let merged = match dtype {
            Dtype::BF16 => Some(gpu_merge::<bf16>(kernels, name, bytes, blocks)),
            Dtype::F16 => Some(gpu_merge::<f16>(kernels, name, bytes, blocks)),
            Dtype::F32 => Some(gpu_merge::<f32>(kernels, name, bytes, blocks)),
            _ => None, // f64 weights: no f64 kernel; the CPU reference below is exact for them
        };
        if let Some(merged) = merged {
            return Ok((merged?, true));
        }
    }
    // On the CPU in f64, rounded to the dtype after each block.
    let mut new = Cow::Borrowed(bytes);
    for block in blocks {
        let w = decode(dtype, &new).ok_or_else(unsupported)?;
        let merged = match fast_merge::bat_col(&block.shape, &w, &block.b) {
            Some(merged) => merged,
            None => reference::merge(&block.shape, &w, &block.b).map_err(|source| block.error(name, source))?,
        };
        new = Cow::Owned(encode(dtype, &merged).ok_or_else(unsupported)?);
    }
    Ok((new.into_owned(), false))
}

/// Merges `blocks` into the weight `name` on the GPU, one after another: W uploaded once
/// in its own type, each B as f32, W' rounded once per block on the device (the merge
/// kernel writes W's type), downloaded once.
fn gpu_merge<T: Element>(kernels: &BoneKernels, name: &str, bytes: &[u8], blocks: &[Block]) -> Result<Vec<u8>> {
    let stream = kernels.stream();
    let transfer = |error: cudarc::driver::DriverError| AdapterError::Gpu(error.into());
    let w: Vec<T> = bytes.chunks_exact(size_of::<T>()).map(T::read_le).collect();
    let mut w = stream.clone_htod(&w).map_err(transfer)?;
    let mut out = stream.alloc_zeros::<T>(w.len()).map_err(transfer)?;
    for block in blocks {
        let b: Vec<f32> = block.b.iter().map(|&v| v as f32).collect();
        let b = stream.clone_htod(&b).map_err(transfer)?;
        kernels.merge(&block.shape, &w, &b, &mut out).map_err(|source| block.error(name, source))?;
        std::mem::swap(&mut w, &mut out);
    }
    let mut merged = Vec::with_capacity(bytes.len());
    for value in stream.clone_dtoh(&w).map_err(transfer)? {
        value.write_le(&mut merged);
    }
    Ok(merged)
}
