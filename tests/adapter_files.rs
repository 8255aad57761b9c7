//! Merging real PEFT adapters into real checkpoints: the result matches PEFT's own
//! merge_and_unload within the dtype's rounding, every other byte is the base's, and
//! unmerge gives the base back.

mod common;

use std::path::Path;

use bone_kernels::adapter::{Adapter, ApplyOptions, Direction, Engine, PeftType, apply};
use bone_kernels::reference::DEFAULT_MAX_CONDITION;
use bone_kernels::{Dims, LayerShape, Variant};
use common::fixtures::{CASES, SAVES_A_MODULE, adapters_dir, read_tensors, rounding_tolerance, values};
use common::rel_err;

fn merge_with(engine: Engine, adapter_name: &str, base_name: &str, out: &Path) -> bone_kernels::adapter::Report {
    let adapter = Adapter::load(&adapters_dir().join(adapter_name)).unwrap();
    let options = ApplyOptions { direction: Direction::Merge, engine };
    apply(&adapters_dir().join(base_name), &adapter, out, &options, |_, _| {}).unwrap()
}

/// Checks a merged checkpoint against PEFT's: changed tensors within rounding, the rest byte-identical.
fn check_against_peft(adapter_name: &str, base_name: &str, out: &Path) {
    let base = read_tensors(&adapters_dir().join(base_name));
    let ours = read_tensors(out);
    let peft = read_tensors(&adapters_dir().join(adapter_name).join("peft_merged.safetensors"));
    assert_eq!(ours.keys().collect::<Vec<_>>(), base.keys().collect::<Vec<_>>(), "{adapter_name}: same tensors");
    for (name, tensor) in &ours {
        let original = &base[name];
        assert_eq!((tensor.0, &tensor.1), (original.0, &original.1), "{adapter_name}: {name} keeps dtype and shape");
        match peft.get(name) {
            Some(expected) => {
                let err = rel_err(&values(tensor), &values(expected));
                let tolerance = rounding_tolerance(tensor.0);
                assert!(
                    err < tolerance,
                    "{adapter_name}: {name} vs PEFT's merge: {err:.2e} (tolerance {tolerance:.0e})"
                );
                assert_ne!(tensor.2, original.2, "{adapter_name}: {name} must change");
            }
            None => {
                assert_eq!(tensor.2, original.2, "{adapter_name}: {name} is not adapted and must be byte-identical")
            }
        }
    }
    // Shards keep their names, headers (tensor order, metadata) and the other files come along.
    let base_dir = adapters_dir().join(base_name);
    for entry in std::fs::read_dir(&base_dir).unwrap() {
        let name = entry.unwrap().file_name();
        let (theirs, mine) = (std::fs::read(base_dir.join(&name)).unwrap(), std::fs::read(out.join(&name)).unwrap());
        if name.to_string_lossy().ends_with(".safetensors") {
            let header = 8 + u64::from_le_bytes(theirs[..8].try_into().unwrap()) as usize;
            assert_eq!(theirs[..header], mine[..header], "{name:?}: header");
            assert_eq!(theirs.len(), mine.len(), "{name:?}: length");
        } else {
            assert_eq!(theirs, mine, "{name:?} is copied as is");
        }
    }
}

#[test]
fn merge_matches_peft_for_every_fixture() {
    for (adapter_name, base_name) in CASES {
        let temp = tempfile::tempdir().unwrap();
        let out = temp.path().join("merged");
        let report = merge_with(Engine::Cpu, adapter_name, base_name, &out);
        assert_eq!(report.on_gpu, 0);
        assert_eq!(report.replaced, usize::from(adapter_name == SAVES_A_MODULE), "{adapter_name}: lm_head replaced");
        check_against_peft(adapter_name, base_name, &out);
    }
}

#[test]
fn gpu_merge_of_adapter_files_matches_peft() {
    if common::gpu_or_skip("gpu_merge_of_adapter_files_matches_peft").is_none() {
        return;
    }
    for (adapter_name, base_name) in CASES {
        let temp = tempfile::tempdir().unwrap();
        let out = temp.path().join("merged");
        let report = merge_with(Engine::Gpu, adapter_name, base_name, &out);
        assert_eq!(report.on_gpu, report.changed - report.replaced, "{adapter_name}: every weight on the GPU");
        check_against_peft(adapter_name, base_name, &out);
    }
}

#[test]
fn unmerge_restores_the_base() {
    for (adapter_name, base_name) in CASES.into_iter().filter(|(name, _)| *name != SAVES_A_MODULE) {
        let temp = tempfile::tempdir().unwrap();
        let (merged, restored) = (temp.path().join("merged"), temp.path().join("restored"));
        merge_with(Engine::Cpu, adapter_name, base_name, &merged);
        let adapter = Adapter::load(&adapters_dir().join(adapter_name)).unwrap();
        let options = ApplyOptions::new(Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION });
        let report = apply(&merged, &adapter, &restored, &options, |_, _| {}).unwrap();
        assert_eq!(report.changed, adapter.layers.len());
        let (base, back) = (read_tensors(&adapters_dir().join(base_name)), read_tensors(&restored));
        for (name, tensor) in &base {
            // The merged weight was rounded to its dtype; unmerging can amplify that by cond(I + B).
            let err = rel_err(&values(&back[name]), &values(tensor));
            let tolerance = 4.0 * rounding_tolerance(tensor.0);
            assert!(err < tolerance, "{adapter_name}: {name} after merge + unmerge: {err:.2e}");
        }
    }
}

#[test]
fn adapters_load_with_their_variant_and_layout() {
    let expected = [
        ("miss_shared", PeftType::Miss, Variant::Shared, 12, 14),
        ("miss_bat", PeftType::Miss, Variant::BatCol, 8, 14),
        ("miss_mini", PeftType::Miss, Variant::Mini { mini_r: 4 }, 8, 6),
        ("bone_bat", PeftType::Bone, Variant::BatCol, 8, 6),
        ("bone_shared", PeftType::Bone, Variant::Shared, 12, 14),
        ("miss_lm_head", PeftType::Miss, Variant::BatCol, 8, 4),
    ];
    for (name, peft_type, variant, r, layers) in expected {
        let adapter = Adapter::load(&adapters_dir().join(name)).unwrap();
        assert_eq!(
            (adapter.config.peft_type, adapter.config.variant, adapter.config.r),
            (peft_type, variant, r),
            "{name}"
        );
        assert_eq!(adapter.layers.len(), layers, "{name}");
        let q_proj = adapter.layers.iter().find(|l| l.module == "model.layers.0.self_attn.q_proj");
        if let Some(layer) = q_proj {
            let shape = LayerShape::new(variant, Dims { k: 48, n: 48, r }).unwrap();
            assert_eq!(layer.dims, shape.adapter_dims(), "{name}: PEFT's layout is ours");
        }
    }
}

#[test]
fn a_module_to_save_is_loaded_and_saved_back_whole() {
    let adapter = Adapter::load(&adapters_dir().join(SAVES_A_MODULE)).unwrap();
    assert_eq!(adapter.config.modules_to_save, ["lm_head"]);
    let [head] = &adapter.whole[..] else { panic!("one whole tensor: {:?}", adapter.whole.len()) };
    assert_eq!(
        (head.name.as_str(), &head.dims, head.dtype),
        ("lm_head.weight", &vec![96, 48], safetensors::Dtype::BF16)
    );
    assert_eq!(adapter.parameter_count(), adapter.layers.iter().map(|l| l.values.len()).sum::<usize>() + 96 * 48);

    // Saved again, it reads back the same; the whole tensor keeps its dtype and bytes.
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("again");
    adapter.save(&out).unwrap();
    let back = Adapter::load(&out).unwrap();
    assert_eq!((&back.config.modules_to_save, &back.whole), (&adapter.config.modules_to_save, &adapter.whole));
    let key = "base_model.model.lm_head.weight";
    let (ours, theirs) = (
        read_tensors(&out.join("adapter_model.safetensors")),
        read_tensors(&adapters_dir().join(SAVES_A_MODULE).join("adapter_model.safetensors")),
    );
    assert_eq!(ours[key], theirs[key], "lm_head.weight as PEFT saved it");
}
