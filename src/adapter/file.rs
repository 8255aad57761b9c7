//! An adapter as PEFT saves it: `adapter_config.json` + `adapter_model.safetensors`.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::checkpoint::pickle_in;
use super::config::AdapterConfig;
use super::dtype::{decode, encode};
use super::error::{AdapterError, Result, io};
use super::output::StagedDir;
use crate::shape::{LayerShape, check_len};

const TENSOR_FILE: &str = "adapter_model.safetensors";
/// PEFT prefixes every saved key with this (the wrapper's path to the base model).
const KEY_PREFIX: &str = "base_model.model.";

/// One adapted module's trainable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterLayer {
    /// The module path in the base model, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// B's shape as stored (PEFT's layout, see [`crate::LayerShape::adapter_dims`]).
    pub dims: Vec<usize>,
    /// B's values, widened exactly from the stored dtype.
    pub values: Vec<f64>,
    /// The stored dtype (PEFT keeps adapters in f32 by default).
    pub dtype: Dtype,
}

/// A base tensor the adapter holds whole and puts in place of the base's on merge: a
/// trained bias (`bias != "none"`) or a parameter of one of `modules_to_save`.
#[derive(Clone, Debug, PartialEq)]
pub struct WholeTensor {
    /// Its key in the base checkpoint, e.g. `lm_head.weight` or `model.layers.0.mlp.up_proj.bias`.
    pub name: String,
    pub dims: Vec<usize>,
    /// Its values, widened exactly from the stored dtype.
    pub values: Vec<f64>,
    /// The stored dtype; [`Adapter::save`] writes it back in it.
    pub dtype: Dtype,
}

/// A loaded (or to-be-saved) Bone / MiSS adapter.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The adapter's directory (empty for one built in memory).
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub layers: Vec<AdapterLayer>,
    /// Base tensors it replaces whole: trained biases and the parameters of `modules_to_save`.
    pub whole: Vec<WholeTensor>,
}

impl AdapterLayer {
    /// `module`'s block as a trainer holds it: f32 values in PEFT's layout, which is this
    /// crate's ([`LayerShape::adapter_dims`]: the buffer given as `LayerWeights::b`, read
    /// back from the device). Its length must match `shape`.
    pub fn from_f32(module: impl Into<String>, shape: &LayerShape, values: &[f32]) -> crate::Result<Self> {
        check_len("B", values.len(), shape.adapter_len(), || shape.adapter_layout())?;
        Ok(AdapterLayer {
            module: module.into(),
            dims: shape.adapter_dims(),
            values: values.iter().map(|&v| f64::from(v)).collect(),
            dtype: Dtype::F32,
        })
    }
}

impl Adapter {
    /// An adapter trained with this crate, to [`save`](Adapter::save): its config and its
    /// layers' blocks, nothing saved whole.
    pub fn new(config: AdapterConfig, layers: Vec<AdapterLayer>) -> Self {
        Adapter { dir: PathBuf::new(), config, layers, whole: Vec::new() }
    }

    /// Reads the adapter in `dir`. Every tensor must be an adapter block of the
    /// configured `peft_type`, a parameter of one of `modules_to_save`, or a bias when the
    /// config trains biases.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = AdapterConfig::load(dir)?;
        let path = dir.join(TENSOR_FILE);
        if !path.exists()
            && let Some(pickle) = pickle_in(dir, &["adapter_model.bin"])
        {
            return Err(AdapterError::PickleOnly { path: pickle });
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| AdapterError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let block_suffix = format!(".{}", config.peft_type.block_name());
        let mut tensors = file.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut layers, mut whole) = (Vec::new(), Vec::new());
        for (key, view) in tensors {
            let values = decode(view.dtype(), view.data()).ok_or_else(|| AdapterError::UnsupportedDtype {
                path: path.clone(),
                key: key.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let name = key.strip_prefix(KEY_PREFIX);
            if let Some(module) = name.and_then(|k| k.strip_suffix(&block_suffix)) {
                layers.push(AdapterLayer {
                    module: module.into(),
                    dims: view.shape().to_vec(),
                    values,
                    dtype: view.dtype(),
                });
            } else if let Some(name) = name.filter(|name| replaces_whole(&config, name)) {
                whole.push(WholeTensor { name: name.into(), dims: view.shape().to_vec(), values, dtype: view.dtype() });
            } else {
                return Err(AdapterError::UnexpectedKey {
                    path,
                    key,
                    peft_type: config.peft_type.name(),
                    block: config.peft_type.block_name(),
                    whole: match (config.bias == "none", config.modules_to_save.is_empty()) {
                        (true, true) => "",
                        (false, true) => ", or `...bias` (bias is trained)",
                        (true, false) => ", or a parameter of one of modules_to_save",
                        (false, false) => ", `...bias` (bias is trained), or a parameter of one of modules_to_save",
                    },
                });
            }
        }
        if layers.is_empty() {
            return Err(AdapterError::EmptyAdapter { path });
        }
        let adapter = Adapter { dir: dir.to_path_buf(), config, layers, whole };
        adapter.check_blocks(&path)?;
        Ok(adapter)
    }

    /// Where [`Adapter::load`] read the blocks (or `save` writes them).
    pub(super) fn tensor_path(&self) -> PathBuf {
        self.dir.join(TENSOR_FILE)
    }

    /// The key of `module`'s block in the adapter file.
    pub(super) fn block_key(&self, module: &str) -> String {
        format!("{KEY_PREFIX}{module}.{}", self.config.peft_type.block_name())
    }

    /// Every layer's block has the shape the config gives it (`[blocks, r, r]` for Bat,
    /// `[r, N]` for the shared block, `[r, mini_r]` for mini) and as many values, so that
    /// what reads the blocks without a base model (`save`, `worst_unmerge_block`) can
    /// trust them; an error naming the tensor in `path` else.
    pub(super) fn check_blocks(&self, path: &Path) -> Result<()> {
        let (variant, r) = (self.config.variant, self.config.r);
        let elements = |dims: &[usize]| dims.iter().try_fold(1_usize, |count, &d| count.checked_mul(d));
        let fits = |l: &AdapterLayer| variant.holds_blocks(r, &l.dims) && elements(&l.dims) == Some(l.values.len());
        match self.layers.iter().find(|l| !fits(l)) {
            None => Ok(()),
            Some(layer) => Err(AdapterError::ShapeMismatch {
                path: path.to_path_buf(),
                key: self.block_key(&layer.module),
                expected: format!("{} with r = {r} ({variant} in the config)", variant.adapter_layout()),
                actual: layer.dims.clone(),
            }),
        }
    }

    /// `module`'s block as f32 for a trainer to go on training it (the buffer to give as
    /// `LayerWeights::b`), checked against the layer it goes with: the config's variant,
    /// and B's shape for `shape`.
    pub fn block_f32(&self, module: &str, shape: &LayerShape) -> Result<Vec<f32>> {
        let (path, key) = (self.tensor_path(), self.block_key(module));
        let Some(layer) = self.layers.iter().find(|l| l.module == module) else {
            return Err(AdapterError::NoBlock { path, key });
        };
        if self.config.variant != shape.variant() {
            let message = format!("says {}, the layer is {}", self.config.variant, shape.variant());
            return Err(AdapterError::Config { path: AdapterConfig::path(&self.dir), field: "init_weights", message });
        }
        if layer.dims != shape.adapter_dims() {
            let (expected, actual) = (shape.adapter_layout(), layer.dims.clone());
            return Err(AdapterError::ShapeMismatch { path, key, expected, actual });
        }
        Ok(layer.values.iter().map(|&v| v as f32).collect())
    }

    /// Trainable parameters (adapter blocks, trained biases, modules_to_save).
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|l| l.values.len()).sum::<usize>()
            + self.whole.iter().map(|t| t.values.len()).sum::<usize>()
    }

    /// Writes the adapter in PEFT's format into the new directory `dir` (refused if it
    /// exists; it appears whole or not at all): f32 blocks keyed
    /// `base_model.model.<module>.<miss_block|bone_block>`, the whole tensors keyed
    /// `base_model.model.<name>` in their own dtype, and an `adapter_config.json` whose
    /// `target_modules` lists the exact module paths.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tensor_file = dir.join(TENSOR_FILE);
        if self.layers.is_empty() {
            return Err(AdapterError::EmptyAdapter { path: tensor_file });
        }
        self.check_blocks(&tensor_file)?;
        let config_path = AdapterConfig::path(dir);
        let mut config = self.config.clone();
        config.target_modules = self.layers.iter().map(|l| l.module.clone()).collect();
        let json = config.to_json(&config_path)?;
        let staged = StagedDir::new(dir)?;
        let tensor_path = staged.path().join(TENSOR_FILE);
        let blocks = self
            .layers
            .iter()
            .map(|l| (self.block_key(&l.module), Dtype::F32, l.dims.clone(), encode(Dtype::F32, &l.values)));
        let whole = self
            .whole
            .iter()
            .map(|t| (format!("{KEY_PREFIX}{}", t.name), t.dtype, t.dims.clone(), encode(t.dtype, &t.values)));
        let data = blocks
            .chain(whole)
            .map(|(key, dtype, dims, bytes)| {
                let bytes = bytes.ok_or_else(|| AdapterError::UnsupportedDtype {
                    path: tensor_path.clone(),
                    key: key.clone(),
                    dtype: format!("{dtype:?}"),
                })?;
                Ok((key, dtype, dims, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let views = data
            .iter()
            .map(|(key, dtype, dims, bytes)| {
                let view = TensorView::new(*dtype, dims.clone(), bytes)
                    .map_err(|e| AdapterError::Safetensors { path: tensor_path.clone(), message: e.to_string() })?;
                Ok((key.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = Some([("format".to_string(), "pt".to_string())].into());
        safetensors::serialize_to_file(views, metadata, &tensor_path)
            .map_err(|e| AdapterError::Safetensors { path: tensor_path.clone(), message: e.to_string() })?;
        let text = serde_json::to_string_pretty(&json)
            .map_err(|source| AdapterError::Json { path: config_path.clone(), source })?;
        let staged_config = AdapterConfig::path(staged.path());
        std::fs::write(&staged_config, text).map_err(io(&staged_config))?;
        staged.commit()
    }
}

/// Whether the adapter file's tensor `name` (its key less PEFT's prefix) is a base tensor
/// the adapter replaces whole: a parameter of one of `modules_to_save`, or a bias where
/// the config trains biases.
fn replaces_whole(config: &AdapterConfig, name: &str) -> bool {
    let Some((module, parameter)) = name.rsplit_once('.') else { return false };
    config.saves_whole(module) || (parameter == "bias" && config.bias != "none")
}
