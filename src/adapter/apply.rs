//! Merge an adapter into a base checkpoint, or take it back out, writing a new
//! checkpoint with the same shards, tensor order, header bytes and dtypes. Only the
//! adapted weights and the tensors the adapter holds whole (trained biases,
//! `modules_to_save`) change; every other byte is copied.

use std::io::{BufWriter, Write};
use std::path::Path;

use half::{bf16, f16};
use safetensors::Dtype;

use super::checkpoint::{Checkpoint, TensorEntry};
use super::dtype::{decode, encode};
use super::error::{AdapterError, Result, io};
use super::fast_merge::{self, Way};
use super::file::Adapter;
use super::output::StagedDir;
use crate::cuda::{BoneKernels, Element, device_count, kernels_built, stream_on_device};
use crate::reference;
use crate::shape::{Dims, LayerShape};

/// Which way the adapter goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Direction {
    /// `W' = W + dW` (PEFT's `merge_and_unload`).
    Merge,
    /// Recover W from W'; Bat blocks whose `I + B` has a condition number above
    /// `max_condition` are refused (see [`crate::reference::DEFAULT_MAX_CONDITION`]).
    Unmerge { max_condition: f64 },
}

/// Where the arithmetic runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The GPU kernels when this build has them and a device is present, else the CPU.
    Auto,
    /// The f64 CPU reference, rounded once to the weight's dtype.
    Cpu,
    /// The GPU merge kernel (f32 arithmetic, rounded once); an error where unavailable.
    /// Unmerge and f64 weights have no GPU kernel and are refused / done on the CPU.
    Gpu,
}

#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    pub direction: Direction,
    pub engine: Engine,
}

impl ApplyOptions {
    pub fn new(direction: Direction) -> Self {
        ApplyOptions { direction, engine: Engine::Auto }
    }
}

/// What [`apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Weights rewritten, and base tensors replaced by the adapter's whole ones.
    pub changed: usize,
    /// Of those, computed by the GPU kernel.
    pub on_gpu: usize,
    /// Of those, base tensors put in place of the base's whole (trained biases,
    /// `modules_to_save`): copied from the adapter, no arithmetic.
    pub replaced: usize,
    /// Tensors copied byte for byte.
    pub copied: usize,
    /// Safetensors files written.
    pub shards: usize,
}

/// One base tensor the adapter rewrites, validated.
struct Target<'a> {
    name: String,
    entry: TensorEntry,
    change: Change<'a>,
}

enum Change<'a> {
    Weight {
        shape: LayerShape,
        b: &'a [f64],
    },
    /// A tensor the adapter holds whole, rounded to the base's dtype.
    Replace {
        values: &'a [f64],
    },
}

/// Applies `adapter` to the checkpoint in `base`, writing the result to the new
/// directory `out`. Everything is validated before anything is written; `out` appears
/// whole or not at all, and the inputs are only read. `progress(done, total)` is called
/// after each rewritten tensor.
pub fn apply(
    base: &Path,
    adapter: &Adapter,
    out: &Path,
    options: &ApplyOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report> {
    if out.exists() {
        return Err(AdapterError::OutputExists { path: out.to_path_buf() });
    }
    refuse_output_inside(out, &[base, &adapter.dir])?;
    let checkpoint = Checkpoint::open(base)?;
    let targets = plan(&checkpoint, adapter, options.direction)?;
    let kernels = gpu(options)?;
    let staged = StagedDir::new(out)?;
    let mut report = Report::default();
    for (index, shard) in checkpoint.shards.iter().enumerate() {
        let path = staged.path().join(&shard.file_name);
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut writer = BufWriter::new(file);
        let mut entries: Vec<(&String, &TensorEntry)> =
            checkpoint.tensors.iter().filter(|(_, entry)| entry.shard == index).collect();
        entries.sort_by_key(|(_, entry)| entry.start);
        let mut cursor = 0;
        for (name, entry) in entries {
            writer.write_all(&shard.bytes[cursor..entry.start]).map_err(io(&path))?;
            match targets.iter().find(|t| &t.name == name) {
                Some(target) => {
                    let (bytes, on_gpu) = rewrite(&checkpoint, target, options.direction, kernels.as_ref(), adapter)?;
                    writer.write_all(&bytes).map_err(io(&path))?;
                    report.changed += 1;
                    report.on_gpu += usize::from(on_gpu);
                    report.replaced += usize::from(matches!(target.change, Change::Replace { .. }));
                    progress(report.changed, targets.len());
                }
                None => {
                    writer.write_all(checkpoint.bytes(entry)).map_err(io(&path))?;
                    report.copied += 1;
                }
            }
            cursor = entry.end;
        }
        writer.write_all(&shard.bytes[cursor..]).map_err(io(&path))?;
        writer.into_inner().map_err(|e| io(&path)(e.into_error()))?.sync_all().map_err(io(&path))?;
        report.shards += 1;
    }
    let shard_names: Vec<&str> = checkpoint.shards.iter().map(|s| s.file_name.as_str()).collect();
    copy_other_files(base, staged.path(), &shard_names)?;
    staged.commit()?;
    Ok(report)
}

/// Matches every adapter tensor with its base tensor and checks shapes and dtypes.
fn plan<'a>(checkpoint: &Checkpoint, adapter: &'a Adapter, direction: Direction) -> Result<Vec<Target<'a>>> {
    if matches!(direction, Direction::Unmerge { .. }) && !adapter.whole.is_empty() {
        return Err(AdapterError::NotReversible { path: adapter.dir.clone(), what: replaced_whole(adapter) });
    }
    let adapter_file = adapter.dir.join("adapter_model.safetensors");
    let block = adapter.config.peft_type.block_name();
    let mut targets = Vec::new();
    let base_tensor = |key: String, adapter_key: String| -> Result<(String, TensorEntry)> {
        let entry = checkpoint.tensors.get(&key).cloned().ok_or_else(|| AdapterError::MissingKey {
            path: checkpoint.dir.clone(),
            key: key.clone(),
            adapter_key,
        })?;
        if !matches!(entry.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64) {
            let dtype = format!("{:?}", entry.dtype);
            return Err(AdapterError::UnsupportedDtype { path: checkpoint.dir.clone(), key, dtype });
        }
        Ok((key, entry))
    };
    for layer in &adapter.layers {
        let adapter_key = format!("base_model.model.{}.{block}", layer.module);
        if layer.values.iter().any(|v| !v.is_finite()) {
            return Err(AdapterError::NonFinite { path: adapter_file, key: adapter_key });
        }
        let (name, entry) = base_tensor(format!("{}.weight", layer.module), adapter_key.clone())?;
        let [n, k] = entry.shape[..] else {
            let expected = "[N, K] (a linear layer's weight)".to_string();
            return Err(AdapterError::ShapeMismatch {
                path: checkpoint.dir.clone(),
                key: name,
                expected,
                actual: entry.shape,
            });
        };
        let shape = LayerShape::new(adapter.config.variant, Dims { k, n, r: adapter.config.r }).map_err(|source| {
            AdapterError::Layer {
                path: adapter_file.clone(),
                key: format!("{adapter_key} (base {name} [{n}, {k}])"),
                source,
            }
        })?;
        if layer.dims != shape.adapter_dims() {
            let expected = format!("{} for base {name} [{n}, {k}]", shape.adapter_layout());
            return Err(AdapterError::ShapeMismatch {
                path: adapter_file,
                key: adapter_key,
                expected,
                actual: layer.dims.clone(),
            });
        }
        targets.push(Target { name, entry, change: Change::Weight { shape, b: &layer.values } });
    }
    for tensor in &adapter.whole {
        let adapter_key = format!("base_model.model.{}", tensor.name);
        if tensor.values.iter().any(|v| !v.is_finite()) {
            return Err(AdapterError::NonFinite { path: adapter_file, key: adapter_key });
        }
        let (name, entry) = base_tensor(tensor.name.clone(), adapter_key.clone())?;
        if entry.shape != tensor.dims {
            return Err(AdapterError::ShapeMismatch {
                path: adapter_file,
                key: adapter_key,
                expected: format!("{:?} like the base's {name}", entry.shape),
                actual: tensor.dims.clone(),
            });
        }
        if targets.iter().any(|target| target.name == name) {
            return Err(AdapterError::TwoChanges { path: adapter_file, key: name });
        }
        targets.push(Target { name, entry, change: Change::Replace { values: &tensor.values } });
    }
    Ok(targets)
}

/// What the adapter replaces whole, for the error that refuses to unmerge it.
fn replaced_whole(adapter: &Adapter) -> String {
    let config = &adapter.config;
    let mut reasons = Vec::new();
    if config.bias != "none" {
        reasons.push(format!("trained biases, bias = {:?}", config.bias));
    }
    if !config.modules_to_save.is_empty() {
        reasons.push(format!("modules_to_save = {:?}", config.modules_to_save));
    }
    reasons.join("; ")
}

/// The GPU handle the options ask for, if any.
fn gpu(options: &ApplyOptions) -> Result<Option<BoneKernels>> {
    let merging = options.direction == Direction::Merge;
    let available = kernels_built() && device_count() > 0;
    match options.engine {
        Engine::Cpu => Ok(None),
        Engine::Auto if !(available && merging) => Ok(None),
        Engine::Gpu if !merging => Err(AdapterError::Gpu(crate::BoneError::NoDevice(
            "there is no GPU unmerge kernel; unmerge runs on the CPU (engine Auto or Cpu)".into(),
        ))),
        Engine::Auto | Engine::Gpu => {
            let stream = stream_on_device(0).map_err(AdapterError::Gpu)?;
            BoneKernels::new(stream).map(Some).map_err(AdapterError::Gpu)
        }
    }
}

/// The new bytes of one target tensor, and whether the GPU computed them.
fn rewrite(
    checkpoint: &Checkpoint,
    target: &Target,
    direction: Direction,
    kernels: Option<&BoneKernels>,
    adapter: &Adapter,
) -> Result<(Vec<u8>, bool)> {
    let dtype = target.entry.dtype;
    let unsupported = || AdapterError::UnsupportedDtype {
        path: checkpoint.dir.clone(),
        key: target.name.clone(),
        dtype: format!("{dtype:?}"),
    };
    let (shape, b) = match target.change {
        Change::Replace { values } => return Ok((encode(dtype, values).ok_or_else(unsupported)?, false)),
        Change::Weight { shape, b } => (shape, b),
    };
    let bytes = checkpoint.bytes(&target.entry);
    let layer_error = |source| AdapterError::Layer {
        path: adapter.dir.join("adapter_model.safetensors"),
        key: target.name.clone(),
        source,
    };
    if let (Some(kernels), Direction::Merge) = (kernels, direction) {
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
    let way = match direction {
        Direction::Merge => Way::Merge,
        Direction::Unmerge { max_condition } => Way::Unmerge { max_condition },
    };
    let new = match (fast_merge::bat_col(&shape, &w, b, way), direction) {
        (Some(result), _) => result,
        (None, Direction::Merge) => reference::merge(&shape, &w, b),
        (None, Direction::Unmerge { max_condition }) => reference::unmerge(&shape, &w, b, max_condition),
    }
    .map_err(layer_error)?;
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

/// The output may not be created inside an input directory: that would change the input
/// (and copying the base's other files would copy the output into itself).
fn refuse_output_inside(out: &Path, inputs: &[&Path]) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(parent) = parent.canonicalize() else { return Ok(()) }; // a missing parent fails later, clearly
    for input in inputs {
        if let Ok(input) = input.canonicalize()
            && parent.starts_with(&input)
        {
            return Err(AdapterError::OutputInsideInput { out: out.to_path_buf(), input });
        }
    }
    Ok(())
}

/// Copies everything in `from` except the shards (config.json, tokenizer files, the index, ...).
fn copy_other_files(from: &Path, to: &Path, shards: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, name) = (entry.path(), entry.file_name());
        if shards.iter().any(|s| name == **s) {
            continue;
        }
        let destination = to.join(&name);
        if source.is_dir() {
            std::fs::create_dir(&destination).map_err(io(&destination))?;
            copy_other_files(&source, &destination, &[])?;
        } else {
            std::fs::copy(&source, &destination).map_err(io(&destination))?;
        }
    }
    Ok(())
}
