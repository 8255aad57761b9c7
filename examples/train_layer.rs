//! The main job, in miniature: a trainer adapts one frozen linear layer with a Bone
//! adapter through the public API (forward, backward, an AdamW step), then merges the
//! adapter into the weight for deployment and checks the merged layer.
//!
//! Task: a frozen W [N, K] and a "teacher" layer that is W with a hidden adapter of
//! the same variant; the student adapter (zero-initialised, as PEFT does) learns to
//! reproduce the teacher's outputs on random inputs (mean squared error).
//!
//!     cargo run --release --example train_layer -- --variant bat-col
//!     cargo run --release --example train_layer -- --variant shared --dropout 0.1   # PEFT's miss_dropout
//!     cargo run --release --example train_layer -- --size 256 --r 16 --save trained-adapter   # PEFT's format
//!     cargo run --release --example train_layer -- --size 256 --r 16 --resume trained-adapter
//!
//! Where this build has kernels and the machine a GPU, forward, backward and the merge
//! run there (bf16, the crate's kernels); otherwise on the CPU reference (f64). The
//! output says which.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bone_kernels::adapter::{Adapter, AdapterConfig, AdapterLayer, PeftType};
use bone_kernels::cuda::{BoneKernels, device_count, kernels_built, stream_on_device};
use bone_kernels::reference::{backward_with_dropout, forward, forward_with_dropout, merge};
use bone_kernels::{Dims, Dropout, LayerShape, Variant};
use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[path = "finetune/demo/adamw.rs"]
mod adamw;
#[path = "finetune/args.rs"]
mod args;
#[path = "finetune/exit.rs"]
mod exit;
#[allow(dead_code)] // this example uses the Bone half of the demo's GPU engine
#[path = "finetune/demo/gpu.rs"]
mod gpu;
use adamw::AdamW;
use args::{at_least_one, learning_rate};
use gpu::{GemmArg, Gpu};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VariantArg {
    BatCol,
    BatRow,
    Shared,
    Mini,
}

#[derive(Parser, Debug)]
#[command(about = "Train one Bone-adapted linear layer through the public API, then merge it")]
struct Args {
    /// Which adapter the layer carries.
    #[arg(long, value_enum, default_value = "bat-col")]
    variant: VariantArg,
    /// K = N: the layer is size x size (Llama-2-7B's attention projections are 4096).
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Block size r.
    #[arg(long, default_value_t = 64)]
    r: usize,
    /// Tokens per step (batch x sequence).
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 12, value_parser = at_least_one)]
    steps: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = learning_rate)]
    lr: f64,
    /// PEFT's miss_dropout on the adapter's input while training (shared and mini only;
    /// a new mask every step, the same one in its forward and backward).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// On the GPU, what computes the products.
    #[arg(long, value_enum, default_value = "default")]
    gemm: GemmArg,
    /// Save the trained adapter in PEFT's format (MISS, module `layer`) into this new
    /// directory (`bone inspect DIR`). PEFT has no form for BatRow.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Start from the adapter saved in this directory (module `layer`, e.g. by `--save`)
    /// instead of PEFT's zero initialisation.
    #[arg(long)]
    resume: Option<PathBuf>,
}

fn uniform(rng: &mut StdRng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn main() -> std::process::ExitCode {
    exit::report(train())
}

fn train() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let variant = match args.variant {
        VariantArg::BatCol => Variant::BatCol,
        VariantArg::BatRow => Variant::BatRow,
        VariantArg::Shared => Variant::Shared,
        VariantArg::Mini => Variant::Mini { mini_r: args.r },
    };
    if args.save.is_some() && variant == Variant::BatRow {
        return Err("--save: PEFT has no per-input-block Bat variant, so BatRow cannot be saved in its format".into());
    }
    let layer = LayerShape::new(variant, Dims { k: args.size, n: args.size, r: args.r })?;
    let (t, k, n) = (args.tokens, layer.k(), layer.n());
    layer.check_tokens(t)?;
    println!(
        "layer: {variant}, W [N, K] = [{n}, {k}], r = {}, B {:?} ({} trainable parameters), T = {t} tokens/step",
        layer.r(),
        layer.adapter_dims(),
        layer.adapter_len()
    );
    let engine = if Gpu::available() { Some(Gpu::new(args.gemm)?) } else { None };
    match &engine {
        Some(gpu) => {
            println!("forward/backward: GPU ({}), bf16, this crate's kernels ({:?} GEMM)", gpu.name, gpu.gemm_engine())
        }
        None => println!("forward/backward: CPU reference (f64): {}", gpu_absence()),
    }

    let mut rng = StdRng::seed_from_u64(args.seed);
    let w = uniform(&mut rng, n * k, (3.0 / k as f64).sqrt());
    let bias = uniform(&mut rng, n, 0.1);
    let teacher_b = uniform(&mut rng, layer.adapter_len(), 0.5 / layer.r() as f64);
    let mut b = match &args.resume {
        Some(dir) => {
            println!("resuming from the adapter in {}", dir.display());
            Adapter::load(dir)?.block_f32("layer", &layer)?.into_iter().map(f64::from).collect()
        }
        None => vec![0.0; layer.adapter_len()], // PEFT zero-initialises every variant
    };
    let mut optimizer = AdamW::new(b.len(), 0.0);
    let frozen = engine.as_ref().map(|gpu| gpu.frozen(&w, &bias)).transpose()?;
    let run_forward = |x: &[f64], b: &[f64], dropout: Option<Dropout>| match (&engine, &frozen) {
        (Some(gpu), Some(frozen)) => gpu.bone_forward(&layer, t, x, frozen, (b, dropout)),
        _ => forward_with_dropout(&layer, t, x, &w, b, Some(&bias), dropout),
    };
    let run_backward = |x: &[f64], b: &[f64], dy: &[f64], dropout: Option<Dropout>| match (&engine, &frozen) {
        (Some(gpu), Some(frozen)) => gpu.bone_backward(&layer, t, (x, dy), frozen, (b, dropout)),
        _ => backward_with_dropout(&layer, t, x, &w, b, dy, dropout).map(|g| (g.dx, g.db)),
    };
    // A Bat variant with dropout is refused at the first forward (BoneError::DropoutOnBat).
    let dropout_for = |step: usize| (args.dropout > 0.0).then(|| Dropout::new(args.dropout, step as u64)).transpose();
    if let Some(dropout) = dropout_for(0)? {
        println!("training with dropout p = {} on the adapter's input, a new mask (seed) every step", dropout.p());
    }

    let started = Instant::now();
    let mut first_loss = None;
    let mut loss = f64::NAN;
    for step in 0..args.steps {
        let x = uniform(&mut rng, t * k, 1.0);
        let target = run_forward(&x, &teacher_b, None)?;
        // The step's mask: the same in its forward and its backward.
        let dropout = dropout_for(step)?;
        let y = run_forward(&x, &b, dropout)?;
        // loss = mean((Y - target)^2) / 2, so dY = (Y - target) / (T N).
        let scale = 1.0 / (t * n) as f64;
        let dy: Vec<f64> = y.iter().zip(&target).map(|(y, target)| (y - target) * scale).collect();
        loss = y.iter().zip(&target).map(|(y, target)| (y - target).powi(2)).sum::<f64>() * scale / 2.0;
        let (_dx, db) = run_backward(&x, &b, &dy, dropout)?;
        optimizer.update(args.lr, &mut b, &db);
        first_loss.get_or_insert(loss);
        if step % 3 == 0 || step + 1 == args.steps {
            println!("step {step:>4}  loss {loss:.6e}");
        }
    }
    let per_step = started.elapsed().as_secs_f64() / args.steps.max(1) as f64;
    let first_loss = first_loss.unwrap_or(f64::NAN);
    println!("loss {first_loss:.4e} -> {loss:.4e} over {} steps, {:.3} s/step", args.steps, per_step);

    // Deployment: fold the adapter into W (PEFT's merge_and_unload).
    let merged = merge(&layer, &w, &b)?;
    match gpu_merge(&layer, &w, &b)? {
        Some(gpu) => {
            let worst = gpu.iter().zip(&merged).map(|(g, c)| (g - c).abs()).fold(0.0, f64::max);
            println!("merge: on the GPU (f32), max |GPU - CPU| = {worst:.2e}");
        }
        None => println!("merge: CPU reference (no GPU kernels here: {})", gpu_absence()),
    }
    let x = uniform(&mut rng, k, 1.0);
    let adapted = forward(&layer, 1, &x, &w, &b, Some(&bias))?;
    let plain: Vec<f64> = (0..n).map(|o| bias[o] + (0..k).map(|j| x[j] * merged[o * k + j]).sum::<f64>()).collect();
    let worst = adapted.iter().zip(&plain).map(|(a, p)| (a - p).abs()).fold(0.0, f64::max);
    println!("merged linear layer vs adapted layer on a fresh input: max |difference| = {worst:.2e}");
    if let Some(dir) = &args.save {
        save_adapter(dir, &layer, &b, args.dropout)?;
    }
    Ok(())
}

/// Writes B (f32, as a trainer holds it) as a PEFT MiSS adapter and reads it back.
fn save_adapter(dir: &Path, layer: &LayerShape, b: &[f64], dropout: f64) -> Result<(), Box<dyn std::error::Error>> {
    let trained: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    let config = AdapterConfig { dropout, ..AdapterConfig::new(PeftType::Miss, layer.variant(), layer.r()) };
    Adapter::new(config, vec![AdapterLayer::from_f32("layer", layer, &trained)?]).save(dir)?;
    let back = Adapter::load(dir)?;
    let same = back.layers[0].values.iter().zip(&trained).all(|(&read, &written)| read == f64::from(written));
    println!(
        "saved the adapter in PEFT's format to {} ({} parameters, read back {}); `bone inspect` describes it",
        dir.display(),
        back.parameter_count(),
        if same { "bit for bit" } else { "DIFFERENT" }
    );
    if !same {
        return Err("the saved adapter does not read back as written".into());
    }
    Ok(())
}

fn gpu_absence() -> &'static str {
    if !kernels_built() { "built without nvcc" } else { "no CUDA device" }
}

/// The merge on the GPU, if this build has kernels and the machine a device.
fn gpu_merge(layer: &LayerShape, w: &[f64], b: &[f64]) -> Result<Option<Vec<f64>>, bone_kernels::BoneError> {
    if !kernels_built() || device_count() == 0 {
        return Ok(None);
    }
    let kernels = BoneKernels::new(stream_on_device(0)?)?;
    let stream = kernels.stream();
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let w_gpu = stream.clone_htod(&to_f32(w))?;
    let b_gpu = stream.clone_htod(&to_f32(b))?;
    let mut out = stream.alloc_zeros::<f32>(layer.weight_len())?;
    kernels.merge(layer, &w_gpu, &b_gpu, &mut out)?;
    Ok(Some(stream.clone_dtoh(&out)?.into_iter().map(f64::from).collect()))
}
