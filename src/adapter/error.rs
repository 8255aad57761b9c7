//! Errors of the adapter-file tools. Each names the file (and tensor key) at fault.

use std::path::PathBuf;

use crate::error::BoneError;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{path}: {source}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: invalid JSON: {source}", path = path.display())]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{path}: not a valid safetensors file ({message})", path = path.display())]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: `{field}` {message}", path = path.display())]
    Config { path: PathBuf, field: &'static str, message: String },

    #[error("{path}: unknown peft_type {value:?}; this tool reads \"MISS\" and \"BONE\" adapters", path = path.display())]
    UnknownPeftType { path: PathBuf, value: String },

    #[error("{path}: unexpected tensor {key:?}; a {peft_type} adapter holds `base_model.model.<module>.{block}` tensors{whole}", path = path.display())]
    UnexpectedKey { path: PathBuf, key: String, peft_type: &'static str, block: &'static str, whole: &'static str },

    #[error("{path}: holds no adapter tensors", path = path.display())]
    EmptyAdapter { path: PathBuf },

    #[error("{path}: no adapter block {key:?}", path = path.display())]
    NoBlock { path: PathBuf, key: String },

    #[error("{path}: no tensor {key:?} in the base checkpoint (adapter tensor {adapter_key:?} needs it)", path = path.display())]
    MissingKey { path: PathBuf, key: String, adapter_key: String },

    #[error("{path}: the model ties {key} to its input embeddings (tie_word_embeddings in config.json), so the checkpoint stores only those; the adapter changes it ({adapter_key}), and a changed {key} cannot be stored apart from them (a model loaded with this config ties them again) without changing the embeddings too: refused. Untie them (tie_word_embeddings false, {key} saved) to merge it", path = path.display())]
    TiedWeight { path: PathBuf, key: String, adapter_key: String },

    #[error("{path}: {key}: shape {actual:?}, expected {expected}", path = path.display())]
    ShapeMismatch { path: PathBuf, key: String, expected: String, actual: Vec<usize> },

    #[error("{path}: {key} holds NaN or infinity; merging it would corrupt the weights (PEFT's safe_merge refuses it too)", path = path.display())]
    NonFinite { path: PathBuf, key: String },

    #[error("{path}: {key}: dtype {dtype} is not one this tool merges (BF16, F16, F32, F64)", path = path.display())]
    UnsupportedDtype { path: PathBuf, key: String, dtype: String },

    #[error("{path}: {key}: {source}", path = path.display())]
    Layer { path: PathBuf, key: String, source: BoneError },

    #[error("{path}: no checkpoint there: neither model.safetensors[.index.json] (transformers) nor diffusion_pytorch_model.safetensors[.index.json] (diffusers)", path = path.display())]
    NoCheckpoint { path: PathBuf },

    #[error("{path} is a PyTorch pickle; this tool reads safetensors only (PEFT and transformers write it with save_pretrained(..., safe_serialization=True))", path = path.display())]
    PickleOnly { path: PathBuf },

    #[error("{path} already exists; the output must be a new directory (nothing was written)", path = path.display())]
    OutputExists { path: PathBuf },

    #[error("{out} is inside the input {input}; write the output elsewhere (nothing was written)", out = out.display(), input = input.display())]
    OutputInsideInput { out: PathBuf, input: PathBuf },

    #[error("{path}: the base's {key} {what}; a tensor replaced whole (modules_to_save or a trained bias) takes no other change", path = path.display())]
    TwoChanges { path: PathBuf, key: String, what: String },

    #[error("no adapter given: name one or more to apply")]
    NoAdapters,

    #[error("{path}: the adapter replaces base tensors whole ({what}); a merged checkpoint no longer holds the base's, so it cannot be unmerged", path = path.display())]
    NotReversible { path: PathBuf, what: String },

    #[error("GPU: {0}")]
    Gpu(BoneError),
}

pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// Attaches the path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AdapterError {
    let path = path.into();
    move |source| AdapterError::Io { path, source }
}
