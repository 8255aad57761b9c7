//! The `bone` command line: what a script relies on (exit codes, messages, outputs).

mod common;

use std::process::{Command, Output};

use bone_kernels::adapter::{Adapter, PeftType};
use bone_kernels::reference::bat_conditions;
use common::fixtures::{adapters_dir, read_tensors};

fn bone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bone")).args(args).output().expect("run bone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stdout of a `bone` run that must succeed (its stderr in the failure message).
fn bone_ok(args: &[&str]) -> String {
    let output = bone(args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Every tensor of the checkpoint at `restored` within `tolerance` of the base's.
fn assert_restored(base: &std::path::Path, restored: &std::path::Path, tolerance: f64) {
    let (before, after) = (read_tensors(base), read_tensors(restored));
    assert_eq!(before.len(), after.len());
    for (name, tensor) in &before {
        let err = common::rel_err(&common::fixtures::values(&after[name]), &common::fixtures::values(tensor));
        assert!(err < tolerance, "{name}: {err:.2e}");
    }
}

#[test]
fn merge_then_unmerge_round_trips() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let (base, adapter) = (fixtures.join("base_f32_sharded"), fixtures.join("miss_bat"));
    let (merged, restored) = (temp.path().join("merged"), temp.path().join("restored"));
    let args = ["merge", "--base", base.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
    let stdout = bone_ok(&[&args[..], &["--out", merged.to_str().unwrap(), "--engine", "cpu"]].concat());
    assert!(
        stdout.starts_with("merged 14 tensors (0 on the GPU, 14 on the CPU), copied 7 unchanged, 5 shard(s)"),
        "{stdout}"
    );

    let args = ["unmerge", "--merged", merged.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
    bone_ok(&[&args[..], &["--out", restored.to_str().unwrap()]].concat());
    assert_restored(&base, &restored, 1e-5);
}

#[test]
fn two_adapters_merge_in_order_and_unmerge_in_reverse() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let base = fixtures.join("base_bf16");
    let (shared, bat) = (fixtures.join("miss_shared"), fixtures.join("miss_bat_stacked"));
    let adapters = ["--adapter", shared.to_str().unwrap(), "--adapter", bat.to_str().unwrap()];
    let (merged, restored) = (temp.path().join("merged"), temp.path().join("restored"));
    let args = ["merge", "--base", base.to_str().unwrap(), "--out", merged.to_str().unwrap(), "--engine", "cpu"];
    let stdout = bone_ok(&[&args[..], &adapters].concat());
    assert!(
        stdout.starts_with("merged 2 adapters into 14 tensors (0 on the GPU, 14 on the CPU), copied 7"),
        "{stdout}"
    );

    let args = ["unmerge", "--merged", merged.to_str().unwrap(), "--out", restored.to_str().unwrap()];
    let stdout = bone_ok(&[&args[..], &adapters].concat());
    assert!(stdout.starts_with("unmerged 2 adapters from 14 tensors"), "{stdout}");
    // Merging and unmerging both in bf16.
    assert_restored(&base, &restored, 3e-2);
}

#[test]
fn a_module_to_save_is_put_in_place_and_listed() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let adapter = fixtures.join("miss_lm_head");
    let (base, merged) = (fixtures.join("base_bf16"), temp.path().join("merged"));
    let args = ["merge", "--base", base.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
    let stdout = bone_ok(&[&args[..], &["--out", merged.to_str().unwrap(), "--engine", "cpu"]].concat());
    let expected = "merged 4 tensors (0 on the GPU, 4 on the CPU), replaced 1 whole (modules_to_save, trained biases), copied 16 unchanged";
    assert!(stdout.starts_with(expected), "{stdout}");

    let output = bone(&["inspect", adapter.to_str().unwrap(), "--layers"]);
    let stdout = text(&output.stdout);
    for line in [
        "saved whole:    1 tensors (modules_to_save [\"lm_head\"], trained biases); merging puts them in place",
        "  lm_head.weight [96, 48] BF16 (whole)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn convert_rewrites_bone_as_miss_with_the_same_merge() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let (original, converted) = (fixtures.join("bone_bat"), temp.path().join("converted"));
    let stdout = bone_ok(&["convert", "--adapter", original.to_str().unwrap(), "--out", converted.to_str().unwrap()]);
    assert!(stdout.starts_with("converted 6 blocks and 0 whole tensors from BONE to MISS"));
    let (before, after) = (Adapter::load(&original).unwrap(), Adapter::load(&converted).unwrap());
    assert_eq!((before.config.peft_type, after.config.peft_type), (PeftType::Bone, PeftType::Miss));
    assert_eq!(
        (after.config.variant, after.config.r, &after.config.task_type),
        (before.config.variant, 8, &before.config.task_type)
    );
    let blocks = |adapter: &Adapter| {
        adapter.layers.iter().map(|l| (l.module.clone(), l.dims.clone(), l.values.clone())).collect::<Vec<_>>()
    };
    assert_eq!(blocks(&after), blocks(&before), "the same blocks, under miss_block");
    // Both merge to the same bytes.
    let base = fixtures.join("base_bf16");
    let merged = |adapter: &std::path::Path, out: &str| {
        let out = temp.path().join(out);
        let args = [
            "merge",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        bone_ok(&args);
        read_tensors(&out)
    };
    assert_eq!(merged(&original, "from_bone"), merged(&converted, "from_miss"));

    // What BONE cannot express is refused, and nothing is written.
    let out = temp.path().join("as_bone");
    let mini = fixtures.join("miss_mini");
    let output =
        bone(&["convert", "--adapter", mini.to_str().unwrap(), "--out", out.to_str().unwrap(), "--to", "bone"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("`init_weights` cannot express mini as BONE: only MISS has it"),
        "{}",
        text(&output.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn inspect_describes_the_adapter() {
    let adapter = adapters_dir().join("bone_bat");
    let stdout = bone_ok(&["inspect", adapter.to_str().unwrap(), "--layers"]);
    for line in [
        "peft_type:      BONE (tensors `...bone_block`)",
        "variant:        BatCol, r = 8",
        "adapted layers: 6",
        "parameters:     1920",
        "dtype:          F32",
        "base model:     base_bf16",
        "dropout:        0 (miss_dropout; Dropout::new(p, seed) when training)",
        "  model.layers.1.mlp.down_proj [6, 8, 8] F32",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn inspect_gives_the_condition_number_unmerge_checks() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let (base, adapter_dir) = (fixtures.join("base_f32_sharded"), fixtures.join("miss_bat"));
    let adapter = Adapter::load(&adapter_dir).unwrap();
    let worst = adapter.worst_unmerge_block().unwrap().unwrap();
    let conditions = |module: &str| {
        let layer = adapter.layers.iter().find(|layer| layer.module == module).unwrap();
        bat_conditions(adapter.config.r, &layer.values).unwrap()
    };
    let largest = adapter.layers.iter().flat_map(|layer| conditions(&layer.module)).fold(0.0, f64::max);
    assert!(largest > 1.0 && worst.condition == largest && conditions(&worst.module)[worst.block] == largest);
    let output = bone(&["inspect", adapter_dir.to_str().unwrap()]);
    let line =
        format!("unmerge:        cond(I + B) at most {:.3e} ({}, block {});", largest, worst.module, worst.block);
    assert!(text(&output.stdout).contains(&line), "missing {line:?} in:\n{}", text(&output.stdout));
    // bone unmerge refuses the adapter just under that limit and takes it out just over it.
    let merged = temp.path().join("merged");
    let args = ["merge", "--base", base.to_str().unwrap(), "--adapter", adapter_dir.to_str().unwrap()];
    bone_ok(&[&args[..], &["--out", merged.to_str().unwrap()]].concat());
    for (scale, ok) in [(1.0 - 1e-9, false), (1.0 + 1e-9, true)] {
        let (limit, out) = (format!("{:e}", largest * scale), temp.path().join(format!("restored-{ok}")));
        let args = ["unmerge", "--merged", merged.to_str().unwrap(), "--adapter", adapter_dir.to_str().unwrap()];
        let output = bone(&[&args[..], &["--out", out.to_str().unwrap(), "--max-condition", &limit]].concat());
        assert_eq!(output.status.success(), ok, "{limit}: {}", text(&output.stderr));
        assert!(ok || text(&output.stderr).contains("condition number"), "{}", text(&output.stderr));
    }
    // A limit that is not a number refuses, rather than letting every block through.
    let out = temp.path().join("restored-nan");
    let args = ["unmerge", "--merged", merged.to_str().unwrap(), "--adapter", adapter_dir.to_str().unwrap()];
    let output = bone(&[&args[..], &["--out", out.to_str().unwrap(), "--max-condition", "NaN"]].concat());
    let stderr = text(&output.stderr);
    assert!(!output.status.success() && stderr.contains("the condition-number limit for unmerging is NaN"), "{stderr}");
    assert!(!out.exists());
    for (name, line) in [
        ("miss_shared", "unmerge:        exact (B is subtracted)"),
        ("miss_lm_head", "unmerge:        not possible: merging puts 1 tensor(s) in place of the base's"),
    ] {
        let output = bone(&["inspect", fixtures.join(name).to_str().unwrap()]);
        assert!(text(&output.stdout).contains(line), "{name}: missing {line:?} in:\n{}", text(&output.stdout));
    }
}

#[test]
fn failures_exit_1_with_a_message_and_usage_errors_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = adapters_dir();
    let base = fixtures.join("base_bf16");
    let adapter = fixtures.join("miss_shared");
    // The output exists already.
    let args = ["merge", "--base", base.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
    let output = bone(&[&args[..], &["--out", temp.path().to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("bone: error: ") && stderr.contains("already exists"), "{stderr}");
    // A directory that is not an adapter.
    let output = bone(&["inspect", base.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("adapter_config.json: No such file"), "{}", text(&output.stderr));
    // Usage.
    assert_eq!(bone(&["merge", "--base", "x"]).status.code(), Some(2));
    assert_eq!(bone(&["frobnicate"]).status.code(), Some(2));
}
