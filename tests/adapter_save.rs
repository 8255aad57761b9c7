//! Adapters trained with this crate, saved in PEFT's format. The committed copies in
//! tests/fixtures/adapters/saved_by_bone_* were loaded by PEFT itself
//! (check_saved.py: PeftModel.from_pretrained, then merge_and_unload equal to `bone merge`);
//! this test keeps them byte-identical to what the code writes now.

mod common;

use std::path::Path;

use bone_kernels::adapter::{Adapter, AdapterConfig, AdapterError, AdapterLayer, PeftType, WholeTensor};
use bone_kernels::{Dims, LayerShape, Variant};
use common::fixtures::{adapters_dir, read_tensors, values};
use safetensors::Dtype;

/// A deterministic "trained" adapter on base_bf16's layers 0 and 1.
fn trained(peft_type: PeftType, variant: Variant, r: usize, modules: &[(&str, usize, usize)]) -> Adapter {
    let layers = (0..2)
        .flat_map(|layer| modules.iter().map(move |m| (layer, *m)))
        .map(|(layer, (module, n, k))| {
            let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
            let values =
                (0..shape.adapter_len()).map(|i| f64::from(((i * 37 + layer) % 23) as i32 - 11) * 0.004).collect();
            AdapterLayer {
                module: format!("model.layers.{layer}.{module}"),
                dims: shape.adapter_dims(),
                values,
                dtype: Dtype::F32,
            }
        })
        .collect();
    let config = AdapterConfig {
        base_model_name_or_path: Some("base_bf16".into()),
        ..AdapterConfig::new(peft_type, variant, r)
    };
    Adapter::new(config, layers)
}

/// `adapter` with a trained copy of the base's lm_head ([96, 48] bf16) saved whole.
fn with_lm_head(mut adapter: Adapter) -> Adapter {
    adapter.config.modules_to_save = vec!["lm_head".into()];
    let base = read_tensors(&adapters_dir().join("base_bf16"));
    let trained = |(i, v): (usize, f64)| f64::from(half::bf16::from_f64(v + ((i % 7) as f64 - 3.0) * 1e-3));
    let values = values(&base["lm_head.weight"]).into_iter().enumerate().map(trained).collect();
    adapter.whole.push(WholeTensor { name: "lm_head.weight".into(), dims: vec![96, 48], values, dtype: Dtype::BF16 });
    adapter
}

fn cases() -> [(&'static str, Adapter); 3] {
    [
        (
            "saved_by_bone_bat",
            trained(PeftType::Miss, Variant::BatCol, 8, &[("self_attn.q_proj", 48, 48), ("self_attn.v_proj", 24, 48)]),
        ),
        (
            "saved_by_bone_shared",
            trained(PeftType::Bone, Variant::Shared, 12, &[("mlp.down_proj", 48, 80), ("mlp.up_proj", 80, 48)]),
        ),
        (
            "saved_by_bone_lm_head",
            with_lm_head(trained(PeftType::Miss, Variant::BatCol, 8, &[("self_attn.o_proj", 48, 48)])),
        ),
    ]
}

fn same_files(a: &Path, b: &Path) -> bool {
    ["adapter_config.json", "adapter_model.safetensors"]
        .iter()
        .all(|f| std::fs::read(a.join(f)).ok().is_some_and(|x| std::fs::read(b.join(f)).ok() == Some(x)))
}

#[test]
fn saved_adapters_are_the_ones_peft_loaded_and_read_back() {
    for (name, adapter) in cases() {
        let temp = tempfile::tempdir().unwrap();
        let out = temp.path().join(name);
        adapter.save(&out).unwrap();
        let committed = adapters_dir().join(name);
        if std::env::var("BONE_BLESS").is_ok_and(|v| v == "1") {
            let _ = std::fs::remove_dir_all(&committed);
            adapter.save(&committed).unwrap();
        }
        assert!(same_files(&out, &committed), "{name}: differs from the PEFT-checked copy; see check_saved.py");
        let back = Adapter::load(&out).unwrap();
        assert_eq!(
            (back.config.peft_type, back.config.variant, back.config.r),
            (adapter.config.peft_type, adapter.config.variant, adapter.config.r)
        );
        assert_eq!(back.layers.len(), adapter.layers.len());
        assert_eq!((&back.config.modules_to_save, &back.whole), (&adapter.config.modules_to_save, &adapter.whole));
        for (read, written) in back.layers.iter().zip(&adapter.layers) {
            assert_eq!((&read.module, &read.dims), (&written.module, &written.dims));
            let widened: Vec<f64> = written.values.iter().map(|&v| f64::from(v as f32)).collect();
            assert_eq!(read.values, widened, "{name}: {} saved as f32", read.module);
        }
    }
}

#[test]
fn saving_refuses_batrow_and_existing_directories() {
    let adapter = trained(PeftType::Miss, Variant::BatRow, 8, &[("self_attn.q_proj", 48, 48)]);
    let temp = tempfile::tempdir().unwrap();
    let err = adapter.save(&temp.path().join("row")).unwrap_err();
    assert!(err.to_string().contains("cannot express BatRow: PEFT has no per-input-block Bat variant"), "{err}");
    assert!(!temp.path().join("row").exists());
    let (_, adapter) = cases().into_iter().next().unwrap();
    let err = adapter.save(temp.path()).unwrap_err();
    assert!(matches!(err, AdapterError::OutputExists { .. }), "{err}");
}

#[test]
fn a_trainers_blocks_save_as_built_and_bad_ones_are_refused() {
    // What a trainer holds after training: B as f32 in the layout of `LayerWeights::b`.
    let shape = LayerShape::new(Variant::BatCol, Dims { k: 48, n: 24, r: 8 }).unwrap();
    let trained: Vec<f32> = (0..shape.adapter_len()).map(|i| (i as f32 * 0.37).sin() * 0.01).collect();
    let layer = AdapterLayer::from_f32("model.layers.0.self_attn.k_proj", &shape, &trained).unwrap();
    assert_eq!(layer.dims, [3, 8, 8]);
    let adapter = Adapter::new(AdapterConfig::new(PeftType::Miss, Variant::BatCol, 8), vec![layer]);
    let temp = tempfile::tempdir().unwrap();
    adapter.save(&temp.path().join("ok")).unwrap();
    let back = Adapter::load(&temp.path().join("ok")).unwrap();
    let values: Vec<f32> = back.layers[0].values.iter().map(|&v| v as f32).collect();
    assert_eq!((back.config.variant, back.config.r, values), (Variant::BatCol, 8, trained.clone()));
    assert_eq!(back.config.target_modules, serde_json::json!(["model.layers.0.self_attn.k_proj"]));
    // And back to a trainer, checked against the layer it goes with.
    assert_eq!(back.block_f32("model.layers.0.self_attn.k_proj", &shape).unwrap(), trained);
    let refusals = [
        (
            "model.layers.1.self_attn.k_proj",
            shape,
            "no adapter block \"base_model.model.model.layers.1.self_attn.k_proj.miss_block\"",
        ),
        (
            "model.layers.0.self_attn.k_proj",
            LayerShape::new(Variant::BatRow, Dims { k: 24, n: 48, r: 8 }).unwrap(),
            "`init_weights` says BatCol, the layer is BatRow",
        ),
        (
            "model.layers.0.self_attn.k_proj",
            LayerShape::new(Variant::BatCol, Dims { k: 48, n: 32, r: 8 }).unwrap(),
            "shape [3, 8, 8], expected [N/r, r, r] = [4, 8, 8] for BatCol",
        ),
    ];
    for (module, layer_shape, message) in refusals {
        let err = back.block_f32(module, &layer_shape).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }

    let err = AdapterLayer::from_f32("m", &shape, &trained[1..]).unwrap_err();
    assert!(
        err.to_string().contains("buffer `B` has 191 elements, expected 192 ([N/r, r, r] = [3, 8, 8] for BatCol)"),
        "{err}"
    );
    // Blocks of another r than the config's, or of another variant's layout.
    for config in [
        AdapterConfig::new(PeftType::Miss, Variant::BatCol, 16),
        AdapterConfig::new(PeftType::Miss, Variant::Shared, 8),
    ] {
        let layer = AdapterLayer::from_f32("model.layers.0.self_attn.k_proj", &shape, &trained).unwrap();
        let err = Adapter::new(config, vec![layer]).save(&temp.path().join("bad")).unwrap_err();
        assert!(
            err.to_string().contains("model.layers.0.self_attn.k_proj.miss_block: shape [3, 8, 8], expected"),
            "{err}"
        );
        assert!(!temp.path().join("bad").exists());
    }
    let err = Adapter::new(AdapterConfig::new(PeftType::Miss, Variant::BatCol, 8), Vec::new())
        .save(&temp.path().join("empty"))
        .unwrap_err();
    assert!(matches!(err, AdapterError::EmptyAdapter { .. }), "{err}");
}
