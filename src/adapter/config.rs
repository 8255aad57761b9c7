//! `adapter_config.json`: the fields of PEFT's `MissConfig` / `BoneConfig` this crate uses.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::error::{AdapterError, Result, io};
use crate::variant::Variant;

/// Which PEFT tuner wrote the adapter; decides the tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeftType {
    /// `peft_type: "MISS"` (PEFT >= 0.19), tensors `...miss_block`.
    Miss,
    /// `peft_type: "BONE"` (PEFT 0.14 to 0.18), tensors `...bone_block`.
    Bone,
}

impl PeftType {
    pub fn name(&self) -> &'static str {
        match self {
            PeftType::Miss => "MISS",
            PeftType::Bone => "BONE",
        }
    }

    /// The last component of every adapter tensor's key.
    pub fn block_name(&self) -> &'static str {
        match self {
            PeftType::Miss => "miss_block",
            PeftType::Bone => "bone_block",
        }
    }
}

/// What `adapter_config.json` says, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    pub peft_type: PeftType,
    /// PEFT's `r`: the block size.
    pub r: usize,
    /// From `init_weights` (and `mini_r`): `"bat"` is BatCol, `"mini"` is Mini, `true`/`false` the shared block.
    pub variant: Variant,
    /// PEFT's `bias`: `"none"`, or the name of a setting that trains (and saves) biases.
    pub bias: String,
    /// PEFT's `miss_dropout` (MISS only; BONE has none: 0): the probability to give
    /// [`crate::Dropout`] when training this adapter (it only acts on the shared block and mini).
    pub dropout: f64,
    /// `target_modules` as written (a list of names or one regular expression).
    pub target_modules: Value,
    /// PEFT's `modules_to_save`: modules trained whole (a classification head, say), saved
    /// whole in the adapter file, and put in place of the base's on merge. A module path
    /// matches an entry when it ends with it, as in PEFT.
    pub modules_to_save: Vec<String>,
    pub base_model_name_or_path: Option<String>,
    /// PEFT's `task_type` (`"CAUSAL_LM"`, `"SEQ_CLS"`, ...): which model class PEFT's
    /// `AutoPeftModel` wraps the base in; kept so a saved adapter loads the same way.
    pub task_type: Option<String>,
}

const CONFIG_FILE: &str = "adapter_config.json";

impl AdapterConfig {
    /// The config of an adapter trained with this crate, for [`super::Adapter::save`]:
    /// PEFT's defaults otherwise (no bias trained, no dropout, nothing saved whole, no base
    /// model named); `save` fills `target_modules` in from the layers.
    pub fn new(peft_type: PeftType, variant: Variant, r: usize) -> Self {
        AdapterConfig {
            peft_type,
            r,
            variant,
            bias: "none".into(),
            dropout: 0.0,
            target_modules: Value::Null,
            modules_to_save: Vec::new(),
            base_model_name_or_path: None,
            task_type: None,
        }
    }

    /// Reads `dir/adapter_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|source| AdapterError::Json { path: path.clone(), source })?;
        Self::from_json(&json, &path)
    }

    fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let bad = |field: &'static str, message: &str| AdapterError::Config {
            path: path.to_path_buf(),
            field,
            message: message.to_string(),
        };
        let peft_type = match json.get("peft_type").and_then(Value::as_str) {
            Some("MISS") => PeftType::Miss,
            Some("BONE") => PeftType::Bone,
            Some(other) => return Err(AdapterError::UnknownPeftType { path: path.into(), value: other.into() }),
            None => return Err(bad("peft_type", "is missing or not a string")),
        };
        let positive = |field: &'static str| -> Result<usize> {
            match json.get(field).and_then(Value::as_u64) {
                Some(value) if value > 0 => usize::try_from(value).map_err(|_| bad(field, "is too large")),
                _ => Err(bad(field, "must be a positive integer")),
            }
        };
        let r = positive("r")?;
        let variant = match json.get("init_weights") {
            None | Some(Value::Bool(_)) => Variant::Shared,
            Some(Value::String(s)) if s == "bat" => Variant::BatCol,
            Some(Value::String(s)) if s == "mini" => Variant::Mini { mini_r: positive("mini_r")? },
            Some(other) => {
                return Err(bad("init_weights", &format!("is {other}; expected true, false, \"bat\" or \"mini\"")));
            }
        };
        // What PEFT's tuners take (`_mark_only_adapters_as_trainable`); it refuses the rest.
        let bias = match json.get("bias") {
            None | Some(Value::Null) => "none".to_string(),
            Some(Value::String(s)) if s == "none" || s == "all" || s.ends_with("_only") => s.clone(),
            Some(other) => {
                return Err(bad("bias", &format!("is {other}; PEFT takes \"none\", \"all\" or \"<method>_only\"")));
            }
        };
        let dropout = match json.get("miss_dropout") {
            None | Some(Value::Null) => 0.0,
            Some(value) => match value.as_f64() {
                Some(p) if (0.0..1.0).contains(&p) => p,
                _ => return Err(bad("miss_dropout", &format!("is {value}; expected a probability in [0, 1)"))),
            },
        };
        let modules_to_save = match json.get("modules_to_save") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) if names.iter().all(|name| name.as_str().is_some_and(|s| !s.is_empty())) => {
                names.iter().filter_map(Value::as_str).map(str::to_string).collect()
            }
            Some(other) => {
                return Err(bad(
                    "modules_to_save",
                    &format!("is {other}; expected null or a list of module names (none empty)"),
                ));
            }
        };
        Ok(AdapterConfig {
            peft_type,
            r,
            variant,
            bias,
            dropout,
            modules_to_save,
            target_modules: json.get("target_modules").cloned().unwrap_or(Value::Null),
            base_model_name_or_path: json.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
            task_type: json.get("task_type").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// The JSON PEFT writes for this configuration (`PeftModel.from_pretrained` reads it
    /// back), to be written at `path`; an error, saying why, where PEFT cannot express
    /// it: BatRow (PEFT has no per-input-block Bat), and for `BONE`, mini and dropout
    /// (only `MISS` has them).
    pub fn to_json(&self, path: &Path) -> Result<Value> {
        let refuse = |field, message: &str| AdapterError::Config { path: path.into(), field, message: message.into() };
        let bone = self.peft_type == PeftType::Bone;
        let init_weights = match self.variant {
            Variant::BatRow => {
                return Err(refuse("init_weights", "cannot express BatRow: PEFT has no per-input-block Bat variant"));
            }
            Variant::Mini { .. } if bone => {
                return Err(refuse("init_weights", "cannot express mini as BONE: only MISS has it (save it as MISS)"));
            }
            Variant::BatCol => json!("bat"),
            Variant::Mini { .. } => json!("mini"),
            Variant::Shared => json!(true),
        };
        if bone && self.dropout != 0.0 {
            return Err(refuse("miss_dropout", "cannot be expressed as BONE: only MISS has it (save it as MISS)"));
        }
        let mut config = json!({
            "base_model_name_or_path": self.base_model_name_or_path,
            "bias": self.bias,
            "exclude_modules": null,
            "inference_mode": true,
            "init_weights": init_weights,
            "layers_pattern": null,
            "layers_to_transform": null,
            "modules_to_save": if self.modules_to_save.is_empty() { Value::Null } else { json!(self.modules_to_save) },
            "peft_type": self.peft_type.name(),
            "r": self.r,
            "revision": null,
            "target_modules": self.target_modules,
            "task_type": self.task_type,
        });
        let extra = match self.peft_type {
            PeftType::Miss => {
                let mini_r = if let Variant::Mini { mini_r } = self.variant { mini_r } else { 1 };
                json!({ "mini_r": mini_r, "miss_dropout": self.dropout })
            }
            PeftType::Bone => json!({}),
        };
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        Ok(config)
    }

    /// Whether `module` (a module path) is one of `modules_to_save`: PEFT's rule, the path
    /// ends with an entry.
    pub fn saves_whole(&self, module: &str) -> bool {
        self.modules_to_save.iter().any(|entry| module.ends_with(entry.as_str()))
    }

    /// Where the config of the adapter in `dir` lives.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        for variant in [Variant::BatCol, Variant::Shared, Variant::Mini { mini_r: 4 }] {
            for peft_type in [PeftType::Miss, PeftType::Bone] {
                if peft_type == PeftType::Bone && matches!(variant, Variant::Mini { .. }) {
                    continue; // Bone has no mini
                }
                let config = AdapterConfig {
                    peft_type,
                    r: 8,
                    variant,
                    bias: "none".into(),
                    dropout: if peft_type == PeftType::Miss { 0.05 } else { 0.0 },
                    target_modules: json!(["q_proj"]),
                    modules_to_save: if variant == Variant::Shared { vec!["score".into()] } else { Vec::new() },
                    base_model_name_or_path: Some("base".into()),
                    task_type: if variant == Variant::Shared { Some("SEQ_CLS".into()) } else { None },
                };
                let json = config.to_json(Path::new("x")).unwrap();
                assert_eq!(AdapterConfig::from_json(&json, Path::new("x")).unwrap(), config);
            }
        }
        let row = AdapterConfig {
            variant: Variant::BatRow,
            ..AdapterConfig::from_json(&json!({"peft_type": "MISS", "r": 4}), Path::new("x")).unwrap()
        };
        let refusal = |config: &AdapterConfig| config.to_json(Path::new("x")).unwrap_err().to_string();
        assert!(refusal(&row).contains("PEFT has no per-input-block Bat variant"));
        let bone = |variant, dropout| AdapterConfig { peft_type: PeftType::Bone, variant, dropout, ..row.clone() };
        assert!(
            refusal(&bone(Variant::Mini { mini_r: 2 }, 0.0)).contains("`init_weights` cannot express mini as BONE")
        );
        assert!(refusal(&bone(Variant::Shared, 0.1)).contains("`miss_dropout` cannot be expressed as BONE"));
        assert!(bone(Variant::Shared, 0.0).to_json(Path::new("x")).is_ok());
    }
}
