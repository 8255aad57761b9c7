//! An adapter as PEFT saves it: `adapter_config.json` + `adapter_model.safetensors`.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::config::AdapterConfig;
use super::dtype::decode;
use super::error::{AdapterError, Result, io};
use super::output::StagedDir;

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

/// A loaded (or to-be-saved) Bone / MiSS adapter.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The adapter's directory (empty for one built in memory).
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub layers: Vec<AdapterLayer>,
    /// Trained biases (`bias != "none"`): (module, values, dtype); they replace the base's.
    pub biases: Vec<(String, Vec<f64>, Dtype)>,
}

impl Adapter {
    /// Reads the adapter in `dir`. Every tensor must be an adapter block of the
    /// configured `peft_type` (or a bias, when the config trains biases).
    pub fn load(dir: &Path) -> Result<Self> {
        let config = AdapterConfig::load(dir)?;
        let path = dir.join(TENSOR_FILE);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| AdapterError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let block_suffix = format!(".{}", config.peft_type.block_name());
        let mut tensors = file.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut layers, mut biases) = (Vec::new(), Vec::new());
        for (key, view) in tensors {
            let values = decode(view.dtype(), view.data()).ok_or_else(|| AdapterError::UnsupportedDtype {
                path: path.clone(),
                key: key.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let module_key = key.strip_prefix(KEY_PREFIX);
            if let Some(module) = module_key.and_then(|k| k.strip_suffix(&block_suffix)) {
                layers.push(AdapterLayer {
                    module: module.into(),
                    dims: view.shape().to_vec(),
                    values,
                    dtype: view.dtype(),
                });
            } else if let Some(module) =
                module_key.and_then(|k| k.strip_suffix(".bias")).filter(|_| config.bias != "none")
            {
                biases.push((module.to_string(), values, view.dtype()));
            } else {
                return Err(AdapterError::UnexpectedKey {
                    path,
                    key,
                    peft_type: config.peft_type.name(),
                    block: config.peft_type.block_name(),
                    bias: if config.bias == "none" { "" } else { " or `...bias`" },
                });
            }
        }
        if layers.is_empty() {
            return Err(AdapterError::EmptyAdapter { path });
        }
        Ok(Adapter { dir: dir.to_path_buf(), config, layers, biases })
    }

    /// Trainable parameters (adapter blocks and trained biases).
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|l| l.values.len()).sum::<usize>() + self.biases.iter().map(|b| b.1.len()).sum::<usize>()
    }

    /// Writes the adapter in PEFT's format into the new directory `dir` (refused if it
    /// exists; it appears whole or not at all): f32 tensors keyed
    /// `base_model.model.<module>.<miss_block|bone_block>` and an `adapter_config.json`
    /// whose `target_modules` lists the exact module paths.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let config_path = AdapterConfig::path(dir);
        let mut config = self.config.clone();
        config.target_modules = self.layers.iter().map(|l| l.module.clone()).collect();
        let json = config.to_json().ok_or_else(|| AdapterError::Config {
            path: config_path.clone(),
            field: "init_weights",
            message: "cannot express BatRow: PEFT has no per-input-block Bat variant".into(),
        })?;
        let staged = StagedDir::new(dir)?;
        let block = self.config.peft_type.block_name();
        let as_f32 = |values: &[f64]| values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect::<Vec<u8>>();
        let blocks = self
            .layers
            .iter()
            .map(|l| (format!("{KEY_PREFIX}{}.{block}", l.module), l.dims.clone(), as_f32(&l.values)));
        let biases = self
            .biases
            .iter()
            .map(|(module, values, _)| (format!("{KEY_PREFIX}{module}.bias"), vec![values.len()], as_f32(values)));
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = blocks.chain(biases).collect();
        let tensor_path = staged.path().join(TENSOR_FILE);
        let views = data
            .iter()
            .map(|(key, dims, bytes)| {
                let view = TensorView::new(Dtype::F32, dims.clone(), bytes)
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
