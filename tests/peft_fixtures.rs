//! The oracle against numbers made by PEFT itself (tests/fixtures/peft/make_fixtures.py):
//! forward, merge and unmerge of MiSS adapters, all in float64.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bone_kernels::reference::{DEFAULT_MAX_CONDITION, forward, merge, unmerge};
use bone_kernels::{Dims, LayerShape, Variant};
use common::rel_err;
use safetensors::{Dtype, SafeTensors};

struct Fixture {
    name: String,
    shape: LayerShape,
    t: usize,
    tensors: HashMap<String, Vec<f64>>,
}

fn load(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().expect("fixture metadata");
    let size = |key: &str| -> usize { meta[key].parse().unwrap() };
    let variant = match meta["variant"].as_str() {
        "BatCol" => Variant::BatCol,
        "Shared" => Variant::Shared,
        "Mini" => Variant::Mini { mini_r: size("mini_r") },
        other => panic!("unknown fixture variant {other}"),
    };
    let shape = LayerShape::new(variant, Dims { k: size("k"), n: size("n"), r: size("r") }).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            assert_eq!(view.dtype(), Dtype::F64, "{key}");
            let values = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            (key, values)
        })
        .collect();
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    Fixture { name, shape, t: size("t"), tensors }
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "the PEFT fixtures are missing");
    paths.iter().map(|p| load(p)).collect()
}

#[test]
fn oracle_reproduces_peft_forward_merge_and_unmerge() {
    let mut variants = Vec::new();
    for f in fixtures() {
        let get = |key: &str| f.tensors[key].as_slice();
        let (w, b) = (get("weight"), get("block"));
        assert_eq!(f.shape.adapter_len(), b.len(), "{}: PEFT's block has our B layout", f.name);

        let y = forward(&f.shape, f.t, get("x"), w, b, Some(get("bias"))).unwrap();
        let err = rel_err(&y, get("y"));
        assert!(err < 1e-12, "{}: forward vs PEFT {err:.2e}", f.name);

        let merged = merge(&f.shape, w, b).unwrap();
        let err = rel_err(&merged, get("merged"));
        assert!(err < 1e-12, "{}: merge vs PEFT {err:.2e}", f.name);

        // PEFT inverts I + B in f32 even for an f64 model, so its unmerge is only f32-exact;
        // ours (f64 throughout) restores the original weight exactly.
        let restored = unmerge(&f.shape, get("merged"), b, DEFAULT_MAX_CONDITION).unwrap();
        let err = rel_err(&restored, get("unmerged"));
        assert!(err < 1e-6, "{}: unmerge vs PEFT {err:.2e}", f.name);
        let err = rel_err(&restored, w);
        assert!(err < 1e-12, "{}: unmerge vs the original weight {err:.2e}", f.name);
        variants.push(f.shape.variant().name());
    }
    for expected in ["BatCol", "Shared", "Mini"] {
        assert!(variants.contains(&expected), "no PEFT fixture for {expected}");
    }
}
