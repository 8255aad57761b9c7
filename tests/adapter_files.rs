//! Merging real PEFT adapters into real checkpoints: the result matches PEFT's own
//! merge_and_unload within the dtype's rounding (one adapter, or two one after the
//! other), every other byte is the base's, and unmerge gives the base back.

mod common;

use std::path::{Path, PathBuf};

use bone_kernels::adapter::{Adapter, ApplyOptions, Direction, Engine, PeftType, Report, apply};
use bone_kernels::reference::DEFAULT_MAX_CONDITION;
use bone_kernels::{Dims, LayerShape, Variant};
use common::fixtures::{CASES, SAVES_A_MODULE, STACKED, adapters_dir, read_tensors, rounding_tolerance, values};
use common::rel_err;

fn load(names: &[&str]) -> Vec<Adapter> {
    names.iter().map(|name| Adapter::load(&adapters_dir().join(name)).unwrap()).collect()
}

fn apply_all(base: &Path, adapters: &[Adapter], out: &Path, direction: Direction, engine: Engine) -> Report {
    let adapters: Vec<&Adapter> = adapters.iter().collect();
    apply(base, &adapters, out, &ApplyOptions { direction, engine }, |_, _| {}).unwrap()
}

fn merge_with(engine: Engine, adapter_names: &[&str], base_name: &str, out: &Path) -> Report {
    apply_all(&adapters_dir().join(base_name), &load(adapter_names), out, Direction::Merge, engine)
}

/// PEFT's merge of one fixture adapter, or of the stacked pair.
fn peft_merged(adapter_names: &[&str]) -> PathBuf {
    match adapter_names {
        [one] => adapters_dir().join(one).join("peft_merged.safetensors"),
        [first, second] => adapters_dir().join(second).join(format!("peft_merged_after_{first}.safetensors")),
        _ => panic!("no PEFT merge of {adapter_names:?}"),
    }
}

/// Checks a merged checkpoint against PEFT's: changed tensors within rounding, the rest byte-identical.
fn check_against_peft(adapter_names: &[&str], base_name: &str, out: &Path) {
    let adapter_name = adapter_names.join(" + ");
    let base = read_tensors(&adapters_dir().join(base_name));
    let ours = read_tensors(out);
    let peft = read_tensors(&peft_merged(adapter_names));
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
        let report = merge_with(Engine::Cpu, &[adapter_name], base_name, &out);
        assert_eq!(report.on_gpu, 0);
        assert_eq!(report.replaced, usize::from(adapter_name == SAVES_A_MODULE), "{adapter_name}: lm_head replaced");
        check_against_peft(&[adapter_name], base_name, &out);
    }
}

#[test]
fn a_diffusers_checkpoint_merges_as_a_transformers_one() {
    // diffusers names its file diffusion_pytorch_model.safetensors (and its shards' index
    // diffusion_pytorch_model.safetensors.index.json); the tensors are what counts.
    let temp = tempfile::tempdir().unwrap();
    let (single, sharded) = (temp.path().join("single"), temp.path().join("sharded"));
    std::fs::create_dir(&single).unwrap();
    let base = adapters_dir().join("base_bf16");
    std::fs::copy(base.join("model.safetensors"), single.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::create_dir(&sharded).unwrap();
    for entry in std::fs::read_dir(adapters_dir().join("base_f32_sharded")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let name = name.replace("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json");
        std::fs::copy(&path, sharded.join(name)).unwrap();
    }
    for (adapter_name, diffusers, transformers) in
        [("miss_shared", &single, "base_bf16"), ("miss_bat", &sharded, "base_f32_sharded")]
    {
        let (ours, theirs) =
            (temp.path().join(format!("{adapter_name}-d")), temp.path().join(format!("{adapter_name}-t")));
        apply_all(diffusers, &load(&[adapter_name]), &ours, Direction::Merge, Engine::Cpu);
        merge_with(Engine::Cpu, &[adapter_name], transformers, &theirs);
        assert_eq!(read_tensors(&ours), read_tensors(&theirs), "{adapter_name}");
    }
}

#[test]
fn two_adapters_merge_one_after_the_other_as_peft_merges_them() {
    let temp = tempfile::tempdir().unwrap();
    let [first, second] = STACKED;
    let out = temp.path().join("stacked");
    let report = merge_with(Engine::Cpu, &STACKED, "base_bf16", &out);
    // q_proj and down_proj of both layers take both blocks, o_proj the second's, lm_head the first's whole.
    assert_eq!((report.changed, report.replaced), (7, 1));
    check_against_peft(&STACKED, "base_bf16", &out);

    // The same bytes as two merges in a row, each rounded to bf16 in between.
    let (once, twice) = (temp.path().join("once"), temp.path().join("twice"));
    merge_with(Engine::Cpu, &[first], "base_bf16", &once);
    apply_all(&once, &load(&[second]), &twice, Direction::Merge, Engine::Cpu);
    assert_eq!(read_tensors(&out), read_tensors(&twice), "one call = two merges in a row");

    // The order matters (Bat blocks multiply W): the other order puts the shared weights elsewhere.
    let reversed = temp.path().join("reversed");
    merge_with(Engine::Cpu, &[second, first], "base_bf16", &reversed);
    let (ours, theirs) = (read_tensors(&out), read_tensors(&reversed));
    let key = "model.layers.0.self_attn.q_proj.weight";
    let err = rel_err(&values(&theirs[key]), &values(&ours[key]));
    assert!(err > 1e-2, "{key}: the two orders differ by only {err:.2e}");
}

#[test]
fn gpu_merge_of_two_adapters_matches_peft() {
    if common::gpu_or_skip("gpu_merge_of_two_adapters_matches_peft").is_none() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("stacked");
    let report = merge_with(Engine::Gpu, &STACKED, "base_bf16", &out);
    assert_eq!(report.on_gpu, report.changed - report.replaced, "every weight on the GPU");
    check_against_peft(&STACKED, "base_bf16", &out);
}

#[test]
fn gpu_merge_of_adapter_files_matches_peft() {
    if common::gpu_or_skip("gpu_merge_of_adapter_files_matches_peft").is_none() {
        return;
    }
    for (adapter_name, base_name) in CASES {
        let temp = tempfile::tempdir().unwrap();
        let out = temp.path().join("merged");
        let report = merge_with(Engine::Gpu, &[adapter_name], base_name, &out);
        assert_eq!(report.on_gpu, report.changed - report.replaced, "{adapter_name}: every weight on the GPU");
        check_against_peft(&[adapter_name], base_name, &out);
    }
}

const UNMERGE: Direction = Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION };

#[test]
fn unmerge_restores_the_base() {
    unmerge_restores_the_base_on(Engine::Cpu);
}

#[test]
fn gpu_unmerge_restores_the_base() {
    if common::gpu_or_skip("gpu_unmerge_restores_the_base").is_some() {
        unmerge_restores_the_base_on(Engine::Gpu);
    }
}

/// Merges and unmerges each adapter (and a pair) on `engine`; W comes back within rounding.
fn unmerge_restores_the_base_on(engine: Engine) {
    let singles = CASES.into_iter().filter(|(name, _)| *name != SAVES_A_MODULE).map(|(name, base)| (vec![name], base));
    // Two adapters of different variants: unmerged in the reverse order of their merge.
    let stacked = (vec!["miss_shared", "miss_bat_stacked"], "base_bf16");
    for (adapter_names, base_name) in singles.chain([stacked]) {
        let temp = tempfile::tempdir().unwrap();
        let (merged, restored) = (temp.path().join("merged"), temp.path().join("restored"));
        merge_with(engine, &adapter_names, base_name, &merged);
        let adapters = load(&adapter_names);
        let report = apply_all(&merged, &adapters, &restored, UNMERGE, engine);
        let modules: std::collections::BTreeSet<&str> =
            adapters.iter().flat_map(|a| a.layers.iter().map(|l| l.module.as_str())).collect();
        assert_eq!(report.changed, modules.len(), "{adapter_names:?}");
        let on_gpu = if engine == Engine::Gpu { report.changed } else { 0 };
        assert_eq!(report.on_gpu, on_gpu, "{adapter_names:?} on {engine:?}");
        let (base, back) = (read_tensors(&adapters_dir().join(base_name)), read_tensors(&restored));
        for (name, tensor) in &base {
            // Each merge rounded the weight to its dtype; unmerging can amplify that by cond(I + B).
            let err = rel_err(&values(&back[name]), &values(tensor));
            let tolerance = 4.0 * adapter_names.len() as f64 * rounding_tolerance(tensor.0);
            assert!(err < tolerance, "{adapter_names:?}: {name} after merge + unmerge: {err:.2e}");
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
        ("miss_bat_stacked", PeftType::Miss, Variant::BatCol, 8, 6),
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
