//! Which base tensors the adapters change, and how, validated against the checkpoint
//! before anything is written (an unmerge's `I + B` blocks too).

use std::borrow::Cow;

use safetensors::Dtype;

use super::apply::Direction;
use super::checkpoint::{Checkpoint, TensorEntry};
use super::error::{AdapterError, Result};
use super::file::Adapter;
use crate::reference;
use crate::shape::{Dims, LayerShape};

/// One base tensor the adapters rewrite, and how.
pub(super) struct Target<'a> {
    pub name: String,
    pub entry: TensorEntry,
    pub change: Change<'a>,
}

pub(super) enum Change<'a> {
    /// Adapters' blocks for this weight, in the order they are merged: the adapters' order
    /// to merge, the reverse to unmerge (PEFT's `merge_and_unload` with several adapters
    /// merges them one after another; its unmerge pops them off).
    Blocks(Vec<Block<'a>>),
    /// A tensor `adapter` holds whole, rounded to the base's dtype: its only change.
    Replace { values: &'a [f64], adapter: &'a Adapter },
}

/// One adapter's block for a weight, as the adapter to merge: B itself to merge, the
/// adapter that undoes it to unmerge (`reference::unmerge_adapter`).
pub(super) struct Block<'a> {
    pub shape: LayerShape,
    pub b: Cow<'a, [f64]>,
    pub adapter: &'a Adapter,
}

impl Block<'_> {
    /// A failure merging this block into the base's `weight`, naming the adapter's file.
    pub fn error(&self, weight: &str, source: crate::BoneError) -> AdapterError {
        AdapterError::Layer { path: self.adapter.dir.join("adapter_model.safetensors"), key: weight.into(), source }
    }
}

/// Matches every adapter tensor with its base tensor and checks shapes and dtypes. A
/// weight may take blocks from several adapters; a tensor replaced whole takes no other
/// change.
pub(super) fn plan<'a>(
    checkpoint: &Checkpoint,
    adapters: &[&'a Adapter],
    direction: Direction,
) -> Result<Vec<Target<'a>>> {
    let mut targets: Vec<Target<'a>> = Vec::new();
    for adapter in adapters {
        if matches!(direction, Direction::Unmerge { .. }) && !adapter.whole.is_empty() {
            return Err(AdapterError::NotReversible { path: adapter.dir.clone(), what: replaced_whole(adapter) });
        }
        for (name, entry, change) in adapter_changes(checkpoint, adapter, direction)? {
            let Some(target) = targets.iter_mut().find(|target| target.name == name) else {
                targets.push(Target { name, entry, change });
                continue;
            };
            match (&mut target.change, change) {
                (Change::Blocks(blocks), Change::Blocks(more)) => blocks.extend(more),
                (first, _) => {
                    let (path, what) = (adapter.dir.join("adapter_model.safetensors"), conflict(first, adapter));
                    return Err(AdapterError::TwoChanges { path, key: name, what });
                }
            }
        }
    }
    if matches!(direction, Direction::Unmerge { .. }) {
        for target in &mut targets {
            if let Change::Blocks(blocks) = &mut target.change {
                blocks.reverse();
            }
        }
    }
    Ok(targets)
}

/// Why `adapter` may not change a tensor whose `first` change is planned already.
fn conflict(first: &Change, adapter: &Adapter) -> String {
    match first {
        Change::Blocks(blocks) if std::ptr::eq(blocks[0].adapter, adapter) => {
            "is both adapted and replaced whole by this adapter (a module in target_modules and modules_to_save)".into()
        }
        Change::Blocks(blocks) => {
            format!(
                "is replaced whole by this adapter after the adapter {} changed it",
                blocks[0].adapter.dir.display()
            )
        }
        Change::Replace { adapter: earlier, .. } => {
            format!("was replaced whole by the adapter {} before this one changes it", earlier.dir.display())
        }
    }
}

/// One adapter's changes: its blocks, then the tensors it holds whole.
fn adapter_changes<'a>(
    checkpoint: &Checkpoint,
    adapter: &'a Adapter,
    direction: Direction,
) -> Result<Vec<(String, TensorEntry, Change<'a>)>> {
    let adapter_file = adapter.dir.join("adapter_model.safetensors");
    let block = adapter.config.peft_type.block_name();
    let mut changes = Vec::new();
    let base_tensor = |key: String, adapter_key: String| -> Result<(String, TensorEntry)> {
        let entry = checkpoint.tensors.get(&key).cloned().ok_or_else(|| {
            let (path, key) = (checkpoint.dir.clone(), key.clone());
            if key == "lm_head.weight" && checkpoint.ties_word_embeddings() {
                AdapterError::TiedWeight { path, key, adapter_key }
            } else {
                AdapterError::MissingKey { path, key, adapter_key }
            }
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
        let b = match direction {
            Direction::Merge => Cow::Borrowed(layer.values.as_slice()),
            Direction::Unmerge { max_condition } => {
                let undo = reference::unmerge_adapter(&shape, &layer.values, max_condition);
                let key = format!("{adapter_key} (base {name})");
                Cow::Owned(undo.map_err(|source| AdapterError::Layer { path: adapter_file.clone(), key, source })?)
            }
        };
        changes.push((name, entry, Change::Blocks(vec![Block { shape, b, adapter }])));
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
        changes.push((name, entry, Change::Replace { values: &tensor.values, adapter }));
    }
    Ok(changes)
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
