//! The demo's training loop (examples/finetune), run briefly: the held-out loss must
//! fall for every Bone variant, LoRA and full fine-tuning; on a GPU, the demo's GPU
//! engine (this crate's kernels for Bone, cuBLAS for LoRA and full fine-tuning, bf16) must
//! also agree with its f64 CPU engine on the untrained network.

#[path = "../examples/finetune/args.rs"]
mod args;
mod common;
#[allow(dead_code)] // the demo's CLI uses parts this test does not
#[path = "../examples/finetune/demo/mod.rs"]
mod demo;

use bone_kernels::Variant;
use demo::gpu::{GemmArg, Gpu};
use demo::layer::Method;
use demo::task::Task;
use demo::train::{Curve, RunConfig, run};

/// Every method: each Bone variant, LoRA of `lora_rank`, full fine-tuning.
fn methods(lora_rank: usize, mini_r: usize) -> [Method; 6] {
    [
        Method::Bone(Variant::BatCol),
        Method::Bone(Variant::BatRow),
        Method::Bone(Variant::Shared),
        Method::Bone(Variant::Mini { mini_r }),
        Method::Lora { rank: lora_rank },
        Method::Full,
    ]
}

/// 40 steps of `method` on a network `width` wide with r x r blocks, on the CPU (`gpu`
/// None) or the GPU.
fn brief_run(method: Method, gpu: Option<GemmArg>, (width, r): (usize, usize)) -> Curve {
    let config = RunConfig { task: Task::LowRank, method, width, r, tokens: 32, steps: 40, lr: 3e-3, seed: 3, gpu };
    let mut steps = 0;
    let curve = run(&config, || steps += 1).unwrap();
    assert_eq!(steps, 40, "{}: on_step per step", method.name());
    curve
}

/// The held-out loss fell by 3% over the run.
fn assert_loss_falls(name: &str, curve: &Curve) {
    let (first, last) = (curve.points[0].1, curve.final_loss());
    assert!(last < 0.97 * first, "{name}: held-out loss {first:.4e} -> {last:.4e} did not fall by 3%");
}

#[test]
fn loss_falls_for_every_method() {
    for method in methods(2, 8) {
        assert_loss_falls(&method.name(), &brief_run(method, None, (32, 4)));
    }
}

#[test]
fn gpu_the_demo_trains_every_method_on_the_gpu() {
    if !Gpu::available() {
        common::skip_notice("gpu_the_demo_trains_every_method_on_the_gpu: no CUDA GPU, or a build without kernels");
        return;
    }
    // r = 16 (the kernels take r = 8 to 256; r = 4 above is the CPU engine's only).
    let size = (64, 16);
    for gemm in [GemmArg::Default, GemmArg::Native] {
        for method in methods(8, 16) {
            let (cpu, gpu) = (brief_run(method, None, size), brief_run(method, Some(gemm), size));
            let name = format!("{} ({gemm:?})", method.name());
            let (cpu_first, gpu_first) = (cpu.points[0].1, gpu.points[0].1);
            // bf16 weights and activations against f64: the same network to well within 2%.
            assert!(
                (gpu_first - cpu_first).abs() <= 0.02 * cpu_first,
                "{name}: untrained held-out loss {gpu_first:.4e} on the GPU, {cpu_first:.4e} on the CPU"
            );
            assert_loss_falls(&name, &gpu);
            println!(
                "{name}: held-out loss {gpu_first:.4e} -> {:.4e} (CPU engine: {cpu_first:.4e} -> {:.4e})",
                gpu.final_loss(),
                cpu.final_loss()
            );
        }
    }
}

#[test]
fn the_examples_refuse_zero_counts_and_learning_rates_that_are_not_positive() {
    // A width of 0 divided by zero, steps 0 printed NaN losses, and a NaN rate trained on.
    assert_eq!(args::at_least_one("3"), Ok(3));
    assert_eq!(args::at_least_one("0"), Err("must be at least 1".into()));
    assert!(args::at_least_one("-1").is_err() && args::at_least_one("x").is_err());
    assert_eq!(args::learning_rate("1e-3"), Ok(1e-3));
    for bad in ["0", "-1e-3", "NaN", "inf"] {
        let message = args::learning_rate(bad).unwrap_err();
        assert!(message.ends_with("is not a finite positive learning rate"), "{bad}: {message}");
    }
}
