//! Every failure of the adapter tools is a clear error naming the file (and tensor),
//! and leaves nothing behind: no output directory, no staging directory, inputs as they were.

mod common;

use std::path::{Path, PathBuf};

use bone_kernels::adapter::{Adapter, AdapterError, ApplyOptions, Direction, apply};
use bone_kernels::reference::DEFAULT_MAX_CONDITION;
use common::fixtures::adapters_dir;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// A scratch folder with copies of base_bf16 and miss_bat (BatCol r = 8, f32) to break.
struct Scratch {
    _temp: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        copy_dir(&adapters_dir().join("base_bf16"), &root.join("base"));
        copy_dir(&adapters_dir().join("miss_bat"), &root.join("adapter"));
        Scratch { _temp: temp, root }
    }
    fn base(&self) -> PathBuf {
        self.root.join("base")
    }
    fn adapter(&self) -> PathBuf {
        self.root.join("adapter")
    }
    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Rewrites the adapter's tensors: (key, dtype, shape, bytes).
    fn write_adapter_tensors(&self, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views = tensors
            .iter()
            .map(|(key, dtype, shape, bytes)| (*key, TensorView::new(*dtype, shape.clone(), bytes).unwrap()));
        let path = self.adapter().join("adapter_model.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
    }

    /// Edits adapter_config.json as text.
    fn edit_config(&self, from: &str, to: &str) {
        edit(&self.adapter().join("adapter_config.json"), from, to);
    }

    /// Edits the base model's config.json as text.
    fn edit_base_config(&self, from: &str, to: &str) {
        edit(&self.base().join("config.json"), from, to);
    }

    /// Runs a merge (or unmerge) and returns its error, after checking nothing was written.
    fn fail(&self, direction: Direction) -> AdapterError {
        let before = self.listing();
        let error = Adapter::load(&self.adapter())
            .and_then(|adapter| apply(&self.base(), &[&adapter], &self.out(), &ApplyOptions::new(direction), |_, _| {}))
            .expect_err("must fail");
        assert_eq!(self.listing(), before, "nothing written, no staging left, inputs untouched: {error}");
        error
    }

    /// Every file under the scratch root with its length and modification time.
    fn listing(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut files = Vec::new();
        for dir in [self.root.clone(), self.base(), self.adapter()] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                files.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
        files.sort();
        files
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn f32_bytes(count: usize) -> Vec<u8> {
    (0..count).flat_map(|i| (0.01 * (i % 7) as f32).to_le_bytes()).collect()
}

const Q0: &str = "base_model.model.model.layers.0.self_attn.q_proj.miss_block";

#[test]
fn a_truncated_base_shard_is_named() {
    let scratch = Scratch::new();
    let shard = scratch.base().join("model.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("base/model.safetensors: not a valid safetensors file"), "{message}");
}

#[test]
fn a_truncated_adapter_file_is_named() {
    let scratch = Scratch::new();
    let file = scratch.adapter().join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..20]).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("adapter/adapter_model.safetensors: not a valid safetensors file"), "{message}");
}

#[test]
fn bad_json_and_bad_config_values_are_named() {
    let scratch = Scratch::new();
    scratch.edit_config("\"r\": 8,", "\"r\": 8,,");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("adapter/adapter_config.json: invalid JSON"), "{message}");

    let scratch = Scratch::new();
    scratch.edit_config("\"r\": 8,", "\"r\": 0,");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.ends_with("adapter_config.json: `r` must be a positive integer"), "{message}");

    let scratch = Scratch::new();
    scratch.edit_config("\"init_weights\": \"bat\"", "\"init_weights\": \"olora\"");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("`init_weights` is \"olora\"; expected true, false, \"bat\" or \"mini\""), "{message}");

    let scratch = Scratch::new();
    scratch.edit_config("\"miss_dropout\": 0.0", "\"miss_dropout\": 1.5");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.ends_with("`miss_dropout` is 1.5; expected a probability in [0, 1)"), "{message}");

    // PEFT refuses a bias setting it does not know when it loads the adapter.
    for bias in ["\"x\"", "\"\"", "3"] {
        let scratch = Scratch::new();
        scratch.edit_config("\"bias\": \"none\"", &format!("\"bias\": {bias}"));
        let message = scratch.fail(Direction::Merge).to_string();
        let expected = format!("`bias` is {bias}; PEFT takes \"none\", \"all\" or \"<method>_only\"");
        assert!(message.ends_with(&expected), "{message}");
    }
}

#[test]
fn an_unknown_peft_type_is_refused() {
    let scratch = Scratch::new();
    scratch.edit_config("\"peft_type\": \"MISS\"", "\"peft_type\": \"LORA\"");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains("unknown peft_type \"LORA\"; this tool reads \"MISS\" and \"BONE\" adapters"),
        "{message}"
    );
}

#[test]
fn an_adapter_key_without_a_base_tensor_is_named() {
    let scratch = Scratch::new();
    let key = "base_model.model.model.layers.7.self_attn.q_proj.miss_block";
    scratch.write_adapter_tensors(&[(key, Dtype::F32, vec![6, 8, 8], f32_bytes(384))]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains("no tensor \"model.layers.7.self_attn.q_proj.weight\" in the base checkpoint"),
        "{message}"
    );
    assert!(message.contains(key), "{message}");
}

#[test]
fn an_lm_head_tied_to_the_embeddings_is_refused_as_such() {
    let scratch = Scratch::new();
    // The base as a tied model stores it: no lm_head.weight, tie_word_embeddings true.
    let shard = scratch.base().join("model.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, TensorView)> =
        file.tensors().into_iter().filter(|(name, _)| name != "lm_head.weight").collect();
    safetensors::serialize_to_file(kept, None, &shard).unwrap();
    let adapter = adapters_dir().join("miss_lm_head");
    std::fs::remove_dir_all(scratch.adapter()).unwrap();
    copy_dir(&adapter, &scratch.adapter());
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("no tensor \"lm_head.weight\" in the base checkpoint"), "untied: {message}");
    scratch.edit_base_config("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains(
            "base: the model ties lm_head.weight to its input embeddings (tie_word_embeddings in config.json)"
        ) && message.contains("(base_model.model.lm_head.weight)"),
        "{message}"
    );
}

#[test]
fn an_extra_key_in_the_adapter_is_named() {
    let scratch = Scratch::new();
    let extra = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    scratch.write_adapter_tensors(&[
        (Q0, Dtype::F32, vec![6, 8, 8], f32_bytes(384)),
        (extra, Dtype::F32, vec![4, 48], f32_bytes(192)),
    ]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains(&format!("unexpected tensor {extra:?}; a MISS adapter holds")), "{message}");
}

#[test]
fn an_adapter_shape_that_disagrees_with_the_base_is_named() {
    let scratch = Scratch::new();
    scratch.write_adapter_tensors(&[(Q0, Dtype::F32, vec![5, 8, 8], f32_bytes(320))]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains(&format!("{Q0}: shape [5, 8, 8], expected [N/r, r, r] = [6, 8, 8] for BatCol")),
        "{message}"
    );
}

#[test]
fn an_adapter_block_that_disagrees_with_its_own_config_is_refused_on_load() {
    // Found by tests/corrupt_files.rs: r = 2^64 - 1 in the config used to pass `load`,
    // and `bone inspect` then ran for ever on the blocks.
    for r in ["7", "16", "18446744073709551615"] {
        let scratch = Scratch::new();
        scratch.edit_config("\"r\": 8,", &format!("\"r\": {r},"));
        let message = Adapter::load(&scratch.adapter()).unwrap_err().to_string();
        let expected = format!(": shape [6, 8, 8], expected [N/r, r, r] with r = {r} (BatCol in the config)");
        assert!(message.contains(&expected), "{message}");
        assert!(message.contains("adapter_model.safetensors: base_model.model.model.layers."), "{message}");
    }
    let scratch = Scratch::new();
    scratch.edit_config("\"init_weights\": \"bat\"", "\"init_weights\": true");
    let message = Adapter::load(&scratch.adapter()).unwrap_err().to_string();
    assert!(message.contains("expected [r, N] with r = 8 (Shared in the config)"), "{message}");
}

#[test]
fn an_adapter_holding_nan_is_refused() {
    let scratch = Scratch::new();
    let mut bytes = f32_bytes(384);
    bytes[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    scratch.write_adapter_tensors(&[(Q0, Dtype::F32, vec![6, 8, 8], bytes)]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains(&format!("{Q0} holds NaN or infinity")), "{message}");
}

#[test]
fn an_integer_adapter_tensor_is_a_dtype_error() {
    let scratch = Scratch::new();
    scratch.write_adapter_tensors(&[(Q0, Dtype::I32, vec![6, 8, 8], f32_bytes(384))]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains(&format!("{Q0}: dtype I32 is not one this tool merges")), "{message}");
}

#[test]
fn an_existing_output_and_a_missing_checkpoint_are_refused() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.out()).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.ends_with("out already exists; the output must be a new directory (nothing was written)"),
        "{message}"
    );

    let scratch = Scratch::new();
    std::fs::remove_file(scratch.base().join("model.safetensors")).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.ends_with(
            "base: no checkpoint there: neither model.safetensors[.index.json] (transformers) \
             nor diffusion_pytorch_model.safetensors[.index.json] (diffusers)"
        ),
        "{message}"
    );
}

#[test]
fn a_pickled_checkpoint_or_adapter_is_named_as_one() {
    let pickled = "is a PyTorch pickle; this tool reads safetensors only";
    let scratch = Scratch::new();
    std::fs::remove_file(scratch.base().join("model.safetensors")).unwrap();
    std::fs::write(scratch.base().join("pytorch_model.bin"), b"pickle").unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains(&format!("base/pytorch_model.bin {pickled}")), "{message}");

    let scratch = Scratch::new();
    let adapter = scratch.adapter();
    std::fs::rename(adapter.join("adapter_model.safetensors"), adapter.join("adapter_model.bin")).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains(&format!("adapter/adapter_model.bin {pickled}")), "{message}");
}

#[test]
fn an_output_inside_an_input_is_refused() {
    let scratch = Scratch::new();
    let before = scratch.listing();
    let adapter = Adapter::load(&scratch.adapter()).unwrap();
    let out = scratch.base().join("merged");
    let err = apply(&scratch.base(), &[&adapter], &out, &ApplyOptions::new(Direction::Merge), |_, _| {}).unwrap_err();
    assert!(matches!(err, AdapterError::OutputInsideInput { .. }), "{err}");
    assert!(err.to_string().contains("is inside the input"), "{err}");
    assert_eq!(scratch.listing(), before, "nothing written");
}

#[test]
fn an_index_that_points_outside_its_directory_is_refused() {
    let scratch = Scratch::new();
    std::fs::remove_dir_all(scratch.base()).unwrap();
    copy_dir(&adapters_dir().join("base_f32_sharded"), &scratch.base());
    let index = scratch.base().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replacen("\"model-00001-of-00005.safetensors\"", "\"../model-00001-of-00005.safetensors\"", 1),
    )
    .unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("which is not a file name in this directory"), "{message}");
}

#[test]
fn an_index_that_names_a_missing_shard_is_named() {
    let scratch = Scratch::new();
    std::fs::remove_dir_all(scratch.base()).unwrap();
    copy_dir(&adapters_dir().join("base_f32_sharded"), &scratch.base());
    std::fs::remove_file(scratch.base().join("model-00003-of-00005.safetensors")).unwrap();
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("base/model-00003-of-00005.safetensors: No such file"), "{message}");
}

#[test]
fn unmerge_refuses_a_singular_block() {
    let scratch = Scratch::new();
    // Block 0 of q_proj is -I, so I + B is zero.
    let mut values = vec![0.01f32; 384];
    values[..64].fill(0.0);
    for j in 0..8 {
        values[j * 8 + j] = -1.0;
    }
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    scratch.write_adapter_tensors(&[(Q0, Dtype::F32, vec![6, 8, 8], bytes)]);
    let message = scratch.fail(Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION }).to_string();
    assert!(
        message.contains(
            "adapter_model.safetensors: base_model.model.model.layers.0.self_attn.q_proj.miss_block \
             (base model.layers.0.self_attn.q_proj.weight): I + B of adapter block 0 is singular"
        ),
        "{message}"
    );
}

#[test]
fn unmerge_refuses_an_adapter_that_trained_biases() {
    let scratch = Scratch::new();
    scratch.edit_config("\"bias\": \"none\"", "\"bias\": \"all\"");
    let bias = "base_model.model.model.layers.0.self_attn.q_proj.bias";
    scratch.write_adapter_tensors(&[
        (Q0, Dtype::F32, vec![6, 8, 8], f32_bytes(384)),
        (bias, Dtype::F32, vec![48], f32_bytes(48)),
    ]);
    let message = scratch.fail(Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION }).to_string();
    assert!(message.contains("the adapter replaces base tensors whole (trained biases, bias = \"all\")"), "{message}");
    // Merging it needs the base to have that bias; the tiny Llama has none.
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("no tensor \"model.layers.0.self_attn.q_proj.bias\" in the base checkpoint"), "{message}");
}

#[test]
fn a_module_to_save_is_checked_against_the_base_and_cannot_be_unmerged() {
    let head = "base_model.model.lm_head.weight";
    let scratch = Scratch::new();
    scratch.edit_config("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]");
    scratch.write_adapter_tensors(&[
        (Q0, Dtype::F32, vec![6, 8, 8], f32_bytes(384)),
        (head, Dtype::F32, vec![96, 40], f32_bytes(3840)),
    ]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains(&format!("{head}: shape [96, 40], expected [96, 48] like the base's lm_head.weight")),
        "{message}"
    );
    let message = scratch.fail(Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION }).to_string();
    assert!(
        message.contains("the adapter replaces base tensors whole (modules_to_save = [\"lm_head\"]); a merged checkpoint no longer holds the base's"),
        "{message}"
    );

    // A module both adapted and saved whole.
    let scratch = Scratch::new();
    scratch.edit_config("\"modules_to_save\": null", "\"modules_to_save\": [\"q_proj\"]");
    let q_weight = "base_model.model.model.layers.0.self_attn.q_proj.weight";
    scratch.write_adapter_tensors(&[
        (Q0, Dtype::F32, vec![6, 8, 8], f32_bytes(384)),
        (q_weight, Dtype::F32, vec![48, 48], f32_bytes(2304)),
    ]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains("the base's model.layers.0.self_attn.q_proj.weight is both adapted and replaced whole"),
        "{message}"
    );

    // A whole tensor of a module that is not listed is not taken for one.
    let scratch = Scratch::new();
    scratch.write_adapter_tensors(&[
        (Q0, Dtype::F32, vec![6, 8, 8], f32_bytes(384)),
        (head, Dtype::F32, vec![96, 48], f32_bytes(4608)),
    ]);
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains(&format!(
            "unexpected tensor {head:?}; a MISS adapter holds `base_model.model.<module>.miss_block` tensors"
        )),
        "{message}"
    );

    let scratch = Scratch::new();
    scratch.edit_config("\"modules_to_save\": null", "\"modules_to_save\": \"lm_head\"");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(message.contains("`modules_to_save` is \"lm_head\"; expected null or a list of module names"), "{message}");
    // An empty name would match every module (PEFT matches by suffix).
    let scratch = Scratch::new();
    scratch.edit_config("\"modules_to_save\": null", "\"modules_to_save\": [\"\"]");
    let message = scratch.fail(Direction::Merge).to_string();
    assert!(
        message.contains("`modules_to_save` is [\"\"]; expected null or a list of module names (none empty)"),
        "{message}"
    );
}

#[test]
fn several_adapters_may_not_change_a_replaced_tensor_again_and_none_is_refused() {
    let scratch = Scratch::new();
    let load = |name: &str| Adapter::load(&adapters_dir().join(name)).unwrap();
    let (lm_head, bat) = (load("miss_lm_head"), load("miss_bat_stacked"));
    let options = ApplyOptions::new(Direction::Merge);
    let fail = |adapters: &[&Adapter]| {
        let before = scratch.listing();
        let err = apply(&scratch.base(), adapters, &scratch.out(), &options, |_, _| {}).expect_err("must fail");
        assert_eq!(scratch.listing(), before, "nothing written: {err}");
        err
    };
    let message = fail(&[&lm_head, &lm_head]).to_string();
    assert!(
        message.contains(
            "miss_lm_head/adapter_model.safetensors: the base's lm_head.weight was replaced whole by the adapter"
        ) && message.contains("miss_lm_head before this one changes it; a tensor replaced whole"),
        "{message}"
    );
    assert!(matches!(fail(&[]), AdapterError::NoAdapters));
    // Blocks, then another adapter's whole lm_head, which nothing else changes: accepted,
    // so the refusal above is about the second change of a replaced tensor.
    let out = scratch.root.join("ok");
    apply(&scratch.base(), &[&bat, &lm_head], &out, &options, |_, _| {}).unwrap();
}
