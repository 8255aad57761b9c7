//! A base checkpoint as users have it: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (transformers), or the same as
//! `diffusion_pytorch_model.safetensors[.index.json]` (diffusers). Shards are
//! memory-mapped, so reading a tensor costs page cache, not a copy of the model.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::error::{AdapterError, Result, io};

/// The checkpoint file names' stems, transformers' then diffusers': `<stem>.safetensors`,
/// or its shards listed by `<stem>.safetensors.index.json`.
const STEMS: [&str; 2] = ["model", "diffusion_pytorch_model"];

/// Where one tensor lives in its shard.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the shard file (not in its data section).
    pub start: usize,
    pub end: usize,
}

pub struct Shard {
    pub file_name: String,
    pub path: PathBuf,
    pub bytes: Mmap,
}

/// An opened, validated base checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub shards: Vec<Shard>,
    /// Every tensor of every shard, by name.
    pub tensors: BTreeMap<String, TensorEntry>,
}

impl Checkpoint {
    /// Whether the model's `config.json` ties the output layer to the input embeddings
    /// (`tie_word_embeddings`, true where unset, as in transformers), so that the
    /// checkpoint stores only the embeddings. False without a readable config.json.
    pub fn ties_word_embeddings(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.dir.join("config.json")) else { return false };
        let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
        config.get("tie_word_embeddings").and_then(serde_json::Value::as_bool).unwrap_or(true)
    }

    /// Opens `dir`, validating every shard's header against its length (a truncated or
    /// malformed file is an error naming it) and, when sharded, against the index.
    pub fn open(dir: &Path) -> Result<Self> {
        let stem = STEMS.iter().find(|stem| {
            [format!("{stem}.safetensors.index.json"), format!("{stem}.safetensors")]
                .iter()
                .any(|f| dir.join(f).is_file())
        });
        let Some(stem) = stem else {
            let pickles = ["pytorch_model.bin", "pytorch_model.bin.index.json", "diffusion_pytorch_model.bin"];
            return Err(match pickle_in(dir, &pickles) {
                Some(pickle) => AdapterError::PickleOnly { path: pickle },
                None => AdapterError::NoCheckpoint { path: dir.to_path_buf() },
            });
        };
        let (single, index_name) = (format!("{stem}.safetensors"), format!("{stem}.safetensors.index.json"));
        let index_path = dir.join(&index_name);
        let (file_names, index) = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|source| AdapterError::Json { path: index_path.clone(), source })?;
            let Some(map) = json.get("weight_map").and_then(Value::as_object) else {
                let message = "is missing or not an object".to_string();
                return Err(AdapterError::Config { path: index_path, field: "weight_map", message });
            };
            let mut index = BTreeMap::new();
            for (tensor, file) in map {
                let Some(file) = file.as_str() else {
                    let message = format!("maps {tensor:?} to {file}, not a file name");
                    return Err(AdapterError::Config { path: index_path, field: "weight_map", message });
                };
                // A shard is a file of this directory: no separators, no "..", so neither
                // the read nor the merged copy's write can leave its directory.
                let plain = Path::new(file).file_name().is_some_and(|name| name == file) && file != "..";
                if !plain {
                    let message = format!("maps {tensor:?} to {file:?}, which is not a file name in this directory");
                    return Err(AdapterError::Config { path: index_path, field: "weight_map", message });
                }
                index.insert(tensor.clone(), file.to_string());
            }
            let mut files: Vec<String> = index.values().cloned().collect();
            files.sort();
            files.dedup();
            (files, Some(index))
        } else {
            (vec![single], None)
        };

        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for (shard, file_name) in file_names.into_iter().enumerate() {
            let path = dir.join(&file_name);
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read-only and this tool never writes its inputs. Another
            // process truncating or rewriting the file while we read it is outside what
            // any memory-mapped reader (safetensors' own loaders included) can defend against.
            let bytes = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let malformed = |message: String| AdapterError::Safetensors { path: path.clone(), message };
            let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| malformed(e.to_string()))?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                if let Some(index) = &index
                    && index.get(&name) != Some(&file_name)
                {
                    return Err(malformed(format!("holds {name:?}, which {index_name} does not place in this file")));
                }
                let (start, end) = (data_start + info.data_offsets.0, data_start + info.data_offsets.1);
                let entry = TensorEntry { shard, dtype: info.dtype, shape: info.shape.clone(), start, end };
                tensors.insert(name, entry);
            }
            shards.push(Shard { file_name, path, bytes });
        }
        if let Some(index) = index
            && let Some(missing) = index.keys().find(|name| !tensors.contains_key(*name))
        {
            let message = format!("lists {missing:?} in {}, which does not hold it", index[missing]);
            return Err(AdapterError::Config { path: index_path, field: "weight_map", message });
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), shards, tensors })
    }

    /// A tensor's bytes.
    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        &self.shards[entry.shard].bytes[entry.start..entry.end]
    }
}

/// The first of `names` that is a file in `dir`: a checkpoint or adapter saved as a pickle.
pub(super) fn pickle_in(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|name| dir.join(name)).find(|path| path.is_file())
}
