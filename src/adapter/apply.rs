//! Merge adapters into a base checkpoint, or take them back out, writing a new
//! checkpoint with the same shards, tensor order, header bytes and dtypes. Only the
//! adapted weights and the tensors the adapters hold whole (trained biases,
//! `modules_to_save`) change; every other byte is copied.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::checkpoint::{Checkpoint, TensorEntry};
use super::error::{AdapterError, Result, io};
use super::file::Adapter;
use super::output::StagedDir;
use super::plan::{Change, plan};
use super::rewrite::{gpu, rewrite};

/// Which way the adapters go.
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
    /// The GPU merge kernel (f32 arithmetic, rounded once; an unmerge is the merge of
    /// the undoing adapter, computed in f64 on the CPU); an error where unavailable. f64
    /// weights have no GPU kernel and are done on the CPU.
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
    /// Weights rewritten, and base tensors replaced by the adapters' whole ones.
    pub changed: usize,
    /// Of those, computed by the GPU kernel.
    pub on_gpu: usize,
    /// Of those, tensors put in place of the base's whole (trained biases,
    /// `modules_to_save`): copied from the adapter, no arithmetic.
    pub replaced: usize,
    /// Tensors copied byte for byte.
    pub copied: usize,
    /// Safetensors files written.
    pub shards: usize,
}

/// Applies `adapters` to the checkpoint in `base`, writing the result to the new
/// directory `out`. Several adapters are merged one after another in the order given,
/// each weight rounded to its dtype after each (PEFT's `merge_and_unload` with several
/// adapters), and unmerged in the reverse order: give the adapters to unmerge in the
/// order they were merged. Everything is validated before anything is written; `out`
/// appears whole or not at all, and the inputs are only read. `progress(done, total)`
/// is called after each rewritten tensor.
pub fn apply(
    base: &Path,
    adapters: &[&Adapter],
    out: &Path,
    options: &ApplyOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report> {
    if adapters.is_empty() {
        return Err(AdapterError::NoAdapters);
    }
    if out.exists() {
        return Err(AdapterError::OutputExists { path: out.to_path_buf() });
    }
    let inputs: Vec<&Path> = std::iter::once(base).chain(adapters.iter().map(|a| a.dir.as_path())).collect();
    refuse_output_inside(out, &inputs)?;
    let checkpoint = Checkpoint::open(base)?;
    let targets = plan(&checkpoint, adapters, options.direction)?;
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
                    let (bytes, on_gpu) = rewrite(&checkpoint, target, kernels.as_ref())?;
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
