//! The demo's GPU engine (examples/finetune, `--engine gpu`: this crate's kernels for
//! Bone, cuBLAS for LoRA and full fine-tuning, bf16), run briefly on the GPU beside its
//! f64 CPU engine: for every method the untrained network's held-out loss agrees with
//! the CPU engine's, and training lowers it.

mod common;
#[allow(dead_code)] // the demo's CLI uses parts this test does not
#[path = "../examples/finetune/demo/mod.rs"]
mod demo;

use bone_kernels::Variant;
use demo::gpu::{GemmArg, Gpu};
use demo::layer::Method;
use demo::task::Task;
use demo::train::{RunConfig, run};

#[test]
fn gpu_the_demo_trains_every_method_on_the_gpu() {
    if !Gpu::available() {
        common::skip_notice("gpu_the_demo_trains_every_method_on_the_gpu: no CUDA GPU, or a build without kernels");
        return;
    }
    let methods = [
        Method::Bone(Variant::BatCol),
        Method::Bone(Variant::BatRow),
        Method::Bone(Variant::Shared),
        Method::Bone(Variant::Mini { mini_r: 8 }),
        Method::Lora { rank: 2 },
        Method::Full,
    ];
    for gemm in [GemmArg::Default, GemmArg::Native] {
        for method in methods {
            let config = |gpu| RunConfig {
                task: Task::LowRank,
                method,
                width: 32,
                r: 4,
                tokens: 32,
                steps: 40,
                lr: 3e-3,
                seed: 3,
                gpu,
            };
            let cpu = run(&config(None), || {}).unwrap();
            let gpu = run(&config(Some(gemm)), || {}).unwrap();
            let name = format!("{} ({gemm:?})", method.name());
            let (cpu_first, gpu_first, gpu_last) = (cpu.points[0].1, gpu.points[0].1, gpu.final_loss());
            // bf16 weights and activations against f64: the same network to about 1%.
            assert!(
                (gpu_first - cpu_first).abs() <= 0.02 * cpu_first,
                "{name}: untrained held-out loss {gpu_first:.4e} on the GPU, {cpu_first:.4e} on the CPU"
            );
            assert!(
                gpu_last < 0.97 * gpu_first,
                "{name}: held-out loss {gpu_first:.4e} -> {gpu_last:.4e} did not fall by 3%"
            );
            println!(
                "{name}: held-out loss {gpu_first:.4e} -> {gpu_last:.4e} (CPU engine: {cpu_first:.4e} -> {:.4e})",
                cpu.final_loss()
            );
        }
    }
}
