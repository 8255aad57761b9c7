//! The main job: fine-tune a frozen two-layer network to a related task with every
//! Bone variant, LoRA at a matched parameter count and full fine-tuning, through the
//! crate's public API, and show what each buys (loss table, loss-curve plot).
//!
//!     cargo run --release --example finetune
//!
//! The task is described in `demo/task.rs`; `--help` lists the flags.

mod args;
mod demo;
mod exit;
mod plot;

use std::path::PathBuf;
use std::sync::Mutex;

use args::{at_least_one, learning_rate};
use bone_kernels::Variant;
use bone_kernels::cuda::kernels_built;
use clap::{Parser, ValueEnum};
use demo::gpu::{GemmArg, Gpu};
use demo::layer::Method;
use demo::task::Task;
use demo::train::{Curve, RunConfig, run};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    BatCol,
    BatRow,
    Shared,
    Mini,
    Lora,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TaskArg {
    Remix,
    BlockRemix,
    LowRank,
    BatColForm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    /// The GPU where this build has kernels and the machine a device, else the CPU.
    Auto,
    Cpu,
    Gpu,
}

#[derive(Parser, Debug)]
#[command(about = "Bone vs LoRA vs full fine-tuning on a small task made here")]
struct Args {
    /// Where the layers compute: the CPU (f64; the crate's reference for Bone) or the GPU
    /// (bf16; the crate's kernels for Bone, cuBLAS for LoRA and full FT).
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineArg,
    /// On the GPU, what computes the Bone layers' products.
    #[arg(long, value_enum, default_value = "default")]
    gemm: GemmArg,
    /// What to train (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bat-col,bat-row,shared,mini,lora,full")]
    methods: Vec<MethodArg>,
    /// Which task change to adapt to (comma-separated); see demo/task.rs.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "remix,block-remix,low-rank,bat-col-form")]
    tasks: Vec<TaskArg>,
    /// Width D of both layers (each is D x D).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    width: usize,
    /// Bone block size r; LoRA gets rank r/2 (the same parameter count as BatCol, BatRow and Shared).
    #[arg(long, default_value_t = 16)]
    r: usize,
    /// MiSS mini's mini_r (Mini trains r x mini_r parameters per layer).
    #[arg(long, default_value_t = 32)]
    mini_r: usize,
    /// Tokens per step.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    tokens: usize,
    #[arg(long, default_value_t = 300, value_parser = at_least_one)]
    steps: usize,
    /// Peak learning rates tried for every method; each method keeps its best (by final held-out loss).
    #[arg(long, value_delimiter = ',', default_value = "3e-4,1e-3,3e-3,1e-2,3e-2", value_parser = learning_rate)]
    lr_grid: Vec<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the loss-curve plot goes.
    #[arg(long, default_value = "target/finetune/loss_curves.svg")]
    plot: PathBuf,
}

fn method(arg: MethodArg, args: &Args) -> Method {
    match arg {
        MethodArg::BatCol => Method::Bone(Variant::BatCol),
        MethodArg::BatRow => Method::Bone(Variant::BatRow),
        MethodArg::Shared => Method::Bone(Variant::Shared),
        MethodArg::Mini => Method::Bone(Variant::Mini { mini_r: args.mini_r }),
        MethodArg::Lora => Method::Lora { rank: (args.r / 2).max(1) },
        MethodArg::Full => Method::Full,
    }
}

fn main() -> std::process::ExitCode {
    exit::report(finetune())
}

fn finetune() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let tasks: Vec<Task> = args
        .tasks
        .iter()
        .map(|t| match t {
            TaskArg::Remix => Task::Remix,
            TaskArg::BlockRemix => Task::BlockRemix,
            TaskArg::LowRank => Task::LowRank,
            TaskArg::BatColForm => Task::BatColForm,
        })
        .collect();
    let methods: Vec<Method> = args.methods.iter().map(|m| method(*m, &args)).collect();
    let gpu = match args.engine {
        EngineArg::Auto if Gpu::available() => Some(args.gemm),
        EngineArg::Auto | EngineArg::Cpu => None,
        EngineArg::Gpu if Gpu::available() => Some(args.gemm),
        EngineArg::Gpu => return Err("--engine gpu: this build has no kernels or this machine no CUDA device".into()),
    };
    let configs: Vec<RunConfig> = tasks
        .iter()
        .flat_map(|&task| methods.iter().map(move |&method| (task, method)))
        .flat_map(|(task, method)| {
            let args = &args;
            args.lr_grid.iter().map(move |&lr| RunConfig {
                task,
                method,
                width: args.width,
                r: args.r,
                tokens: args.tokens,
                steps: args.steps,
                lr,
                seed: args.seed,
                gpu,
            })
        })
        .collect();
    println!(
        "network: x -> L1 -> tanh -> L2, both {0} x {0}, frozen; {1} tokens/step, {2} steps, AdamW, lr grid {3:?}",
        args.width, args.tokens, args.steps, args.lr_grid
    );
    if let Some(gemm) = gpu {
        let gpu = Gpu::new(gemm)?;
        println!(
            "engine: GPU ({}), bf16: this crate's kernels for Bone ({:?} GEMM), cuBLAS for LoRA and full FT",
            gpu.name,
            gpu.gemm_engine()
        );
    } else {
        let why = if kernels_built() { "no CUDA device here" } else { "this build has no GPU kernels" };
        println!("engine: CPU, f64: this crate's reference for Bone ({why}; --engine gpu where there is one)");
    }

    let curves = train_all(&configs)?;
    let mut panels = Vec::new();
    for &task in &tasks {
        println!("\ntask: {} (held-out MSE at the best lr; fraction = final / step 0)", task.name());
        println!(
            "{:<22} {:>7} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}",
            "method", "params", "state KB", "lr", "step 0", "25%", "50%", "final", "fraction", "train s"
        );
        let mut lines = Vec::new();
        for &method in &methods {
            let (config, curve) = best_run(&configs, &curves, task, method);
            let at = |fraction: f64| curve.loss_at((config.steps as f64 * fraction) as usize);
            println!(
                "{:<22} {:>7} {:>9.1} {:>7.0e} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>9.3} {:>8.2}",
                method.name(),
                curve.trainable,
                state_kib(curve.trainable),
                config.lr,
                at(0.0),
                at(0.25),
                at(0.5),
                curve.final_loss(),
                curve.final_loss() / at(0.0),
                curve.train_time.as_secs_f64()
            );
            lines.push((format!("{} (lr {:.0e})", method.name(), config.lr), curve));
        }
        panels.push((task.name(), lines));
    }
    if let Some(dir) = args.plot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    plot::write_svg(&args.plot, &panels)?;
    println!("\nloss curves: {}", args.plot.display());
    Ok(())
}

/// Training state a trainer keeps for the trainable values in f32: value, gradient and
/// AdamW's two moments (the frozen weights and activations are the same for every method
/// on the CPU path; the GPU memory contract is the kernels' business).
fn state_kib(trainable: usize) -> f64 {
    (trainable * 4 * size_of::<f32>()) as f64 / 1024.0
}

/// Runs every configuration behind one progress bar: two at a time (one per core) on the
/// CPU, one at a time on the GPU.
fn train_all(configs: &[RunConfig]) -> Result<Vec<Curve>, bone_kernels::BoneError> {
    let total_steps = configs.iter().map(|c| c.steps as u64).sum();
    let bar = ProgressBar::new(total_steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, {elapsed} elapsed, eta {eta}")
            .expect("valid template"),
    );
    let next = Mutex::new(0usize);
    let results: Vec<Mutex<Option<Result<Curve, bone_kernels::BoneError>>>> =
        configs.iter().map(|_| Mutex::new(None)).collect();
    let cores = if configs.iter().any(|c| c.gpu.is_some()) {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let workers = cores.min(configs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().expect("no panics while held");
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(config) = configs.get(index) else { break };
                    let curve = run(config, || bar.inc(1));
                    *results[index].lock().expect("no panics while held") = Some(curve);
                }
            });
        }
    });
    bar.finish_and_clear();
    results
        .into_iter()
        .map(|slot| slot.into_inner().expect("no panics while held").expect("every run finished"))
        .collect()
}

/// The configuration and curve with the lowest final loss for (task, method).
fn best_run<'a>(
    configs: &'a [RunConfig],
    curves: &'a [Curve],
    task: Task,
    method: Method,
) -> (&'a RunConfig, &'a Curve) {
    configs
        .iter()
        .zip(curves)
        .filter(|(c, _)| c.task == task && c.method == method)
        .min_by(|a, b| a.1.final_loss().total_cmp(&b.1.final_loss()))
        .expect("every (task, method) has a run")
}
