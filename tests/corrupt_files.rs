//! No corrupted adapter or base checkpoint makes the adapter tools panic or hang: 400
//! files a run (`BONE_CORRUPT_ROUNDS` for more), each broken at random (a value in a
//! config or in a safetensors header changed to another type or an extreme number, a key
//! removed, the file cut short or a byte changed), are loaded, inspected, saved, merged
//! and unmerged, and each step either works or gives an error.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bone_kernels::adapter::{Adapter, AdapterError, ApplyOptions, Checkpoint, Direction, apply};
use bone_kernels::reference::DEFAULT_MAX_CONDITION;
use common::fixtures::{CASES, adapters_dir};
use common::fresh_rng;
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Value, json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Values that break a field in a different way each: wrong types, signs, sizes.
fn strange_value(rng: &mut StdRng) -> Value {
    let choices = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(3.5),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!("F64"),
        json!("I8"),
        json!([]),
        json!([0]),
        json!([u64::MAX, 2]),
        json!([1, 1, 1, 1, 1]),
        json!({}),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Changes one value somewhere in `value` (or removes one key, or adds one to an array).
fn mutate_json(value: &mut Value, rng: &mut StdRng) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(rng.random_range(0..map.len())).unwrap().clone();
            match rng.random_range(0..4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, strange_value(rng));
                }
                _ => mutate_json(map.get_mut(&key).unwrap(), rng),
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let at = rng.random_range(0..items.len());
            match rng.random_range(0..4) {
                0 => {
                    items.remove(at);
                }
                1 => items.push(strange_value(rng)),
                2 => items[at] = strange_value(rng),
                _ => mutate_json(&mut items[at], rng),
            }
        }
        Value::Number(number) if rng.random_range(0..2) == 0 => {
            let near = number.as_u64().unwrap_or(0);
            *value = json!(near.wrapping_add(rng.random_range(0..3)).wrapping_sub(1));
        }
        _ => *value = strange_value(rng),
    }
}

/// A safetensors file's header: its JSON, and where the data after it starts.
fn split_safetensors(bytes: &[u8]) -> (Value, usize) {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + length]).unwrap(), 8 + length)
}

/// Breaks `path` (a JSON config or a safetensors file) in one random way.
fn corrupt(path: &Path, rng: &mut StdRng) {
    let mut bytes = std::fs::read(path).unwrap();
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    match rng.random_range(0..5) {
        0 => bytes.truncate(rng.random_range(0..bytes.len())),
        1 => {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        _ if is_safetensors => {
            let (mut header, data_start) = split_safetensors(&bytes);
            mutate_json(&mut header, rng);
            let text = serde_json::to_vec(&header).unwrap();
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend(text);
            out.extend(&bytes[data_start..]);
            bytes = out;
        }
        _ => {
            let mut config: Value = serde_json::from_slice(&bytes).unwrap();
            mutate_json(&mut config, rng);
            bytes = serde_json::to_vec(&config).unwrap();
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Every file of the adapter and the base that the tools read.
fn readable_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json" || e == "safetensors"))
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with("peft_merged"))
        .collect();
    files.sort();
    files
}

#[test]
fn corrupted_adapters_and_checkpoints_give_errors_never_panics() {
    let mut rng = fresh_rng("corrupted_adapters_and_checkpoints_give_errors_never_panics");
    let fixtures = adapters_dir();
    let (mut went_through, mut refused) = (0, 0);
    for round in 0..rounds() {
        let (adapter_name, base_name) = CASES[round % CASES.len()];
        let temp = tempfile::tempdir().unwrap();
        let (base, adapter) = (temp.path().join("base"), temp.path().join("adapter"));
        copy_dir(&fixtures.join(base_name), &base);
        copy_dir(&fixtures.join(adapter_name), &adapter);
        let files = readable_files(&[base.clone(), adapter.clone()]);
        let broken = files[rng.random_range(0..files.len())].clone();
        corrupt(&broken, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = Checkpoint::open(&base);
            let loaded = Adapter::load(&adapter)?;
            // What loads has blocks of the config's shape: it can say how well it unmerges
            // (`bone inspect`), and what it saves (`bone convert`) loads again.
            loaded.worst_unmerge_block().expect("a loaded adapter's blocks were checked");
            let saved = temp.path().join("saved");
            loaded.save(&saved)?;
            let again = Adapter::load(&saved).expect("a saved adapter loads again");
            let dims = |adapter: &Adapter| adapter.layers.iter().map(|l| l.dims.clone()).collect::<Vec<_>>();
            assert_eq!(dims(&again), dims(&loaded));
            for direction in [Direction::Merge, Direction::Unmerge { max_condition: DEFAULT_MAX_CONDITION }] {
                let out = temp.path().join(format!("out_{}", matches!(direction, Direction::Merge)));
                apply(&base, &[&loaded], &out, &ApplyOptions::new(direction), |_, _| {})?;
            }
            Ok::<_, AdapterError>(())
        }));
        match outcome {
            Ok(Ok(())) => went_through += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("panicked on {} broken ({adapter_name} on {base_name})", broken.display()),
        }
    }
    println!("{went_through} broken files went through, {refused} were refused");
    assert!(refused > rounds() / 4, "many corruptions must be noticed ({refused})");
}

fn rounds() -> usize {
    std::env::var("BONE_CORRUPT_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400)
}
