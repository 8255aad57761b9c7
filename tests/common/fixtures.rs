//! Reading the tiny-Llama fixtures in tests/fixtures/adapters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// The fixtures, found from the crate root this test was built in or, for test binaries
/// run from elsewhere (the GPU machine runs them from a copy under `.gpu/`), from the
/// working directory or its parent.
pub fn adapters_dir() -> PathBuf {
    let relative = Path::new("tests/fixtures/adapters");
    let cwd = std::env::current_dir().unwrap_or_default();
    let roots = [PathBuf::from(env!("CARGO_MANIFEST_DIR")), cwd.clone(), cwd.join("..")];
    roots.iter().map(|root| root.join(relative)).find(|dir| dir.is_dir()).expect("tests/fixtures/adapters not found")
}

/// (adapter, the base PEFT merged it onto); see make_fixtures.py.
pub const CASES: [(&str, &str); 7] = [
    ("miss_shared", "base_bf16"),
    ("miss_bat", "base_f32_sharded"),
    ("miss_mini", "base_f16"),
    ("bone_bat", "base_bf16"),
    ("bone_shared", "base_f32_sharded"),
    ("miss_lm_head", "base_bf16"),
    ("miss_bat_stacked", "base_bf16"),
];

/// Two adapters merged one after the other onto base_bf16; PEFT's merge of both is
/// `peft_merged_after_miss_lm_head.safetensors` in the second's directory.
pub const STACKED: [&str; 2] = ["miss_lm_head", "miss_bat_stacked"];

/// The case whose adapter also replaces a module whole (`modules_to_save`), which cannot be unmerged.
pub const SAVES_A_MODULE: &str = "miss_lm_head";

/// One tensor: dtype, shape and raw bytes.
pub type Tensor = (Dtype, Vec<usize>, Vec<u8>);

/// Every tensor of a checkpoint directory (all its .safetensors files) or of one file.
pub fn read_tensors(path: &Path) -> BTreeMap<String, Tensor> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut tensors = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for (name, view) in SafeTensors::deserialize(&bytes).unwrap().tensors() {
            tensors.insert(name, (view.dtype(), view.shape().to_vec(), view.data().to_vec()));
        }
    }
    tensors
}

/// A float tensor's values as f64.
pub fn values((dtype, _, bytes): &Tensor) -> Vec<f64> {
    match dtype {
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        other => panic!("fixture dtype {other:?}"),
    }
}

/// The relative error two results computed in different precisions may show after
/// both are rounded to `dtype` (PEFT computes in f32, this crate in f64).
pub fn rounding_tolerance(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::BF16 => 4e-3,
        Dtype::F16 => 5e-4,
        _ => 1e-6,
    }
}
