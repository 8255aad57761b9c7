//! `bone`: merge, unmerge, convert and inspect PEFT Bone / MiSS adapters.
//!
//! Exit status: 0 on success, 1 when the work failed (the message on stderr names the
//! file and tensor; the output directory is not created), 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bone_kernels::adapter::{Adapter, AdapterError, ApplyOptions, Direction, Engine, PeftType, apply};
use bone_kernels::reference::DEFAULT_MAX_CONDITION;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "bone",
    version,
    about = "Merge, unmerge, convert and inspect PEFT Bone / MiSS adapters (safetensors)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge adapters into a base checkpoint (PEFT's merge_and_unload), into a new directory.
    Merge {
        /// The base model directory (model.safetensors, or shards + model.safetensors.index.json;
        /// diffusers' diffusion_pytorch_model.safetensors the same way).
        #[arg(long)]
        base: PathBuf,
        /// The adapter directory (adapter_model.safetensors + adapter_config.json). Repeat
        /// it to merge several, one after another in the order given.
        #[arg(long, required = true)]
        adapter: Vec<PathBuf>,
        /// The new directory to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineArg,
    },
    /// Take merged adapters back out of a checkpoint, into a new directory.
    Unmerge {
        /// The merged model directory.
        #[arg(long)]
        merged: PathBuf,
        /// The adapter that was merged into it. Repeat it for several, in the order they
        /// were merged: they come out in the reverse order.
        #[arg(long, required = true)]
        adapter: Vec<PathBuf>,
        /// The new directory to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Refuse Bat blocks whose I + B has a larger condition number (it amplifies rounding error).
        #[arg(long, default_value_t = DEFAULT_MAX_CONDITION)]
        max_condition: f64,
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineArg,
    },
    /// Rewrite an adapter as another PEFT type, into a new directory: BONE (PEFT 0.14 to
    /// 0.18; later PEFT no longer loads it) to MISS, the same math under new names.
    Convert {
        /// The adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// The new directory to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "miss")]
        to: PeftTypeArg,
    },
    /// Describe an adapter: type, variant, r, target modules, parameters, dtype.
    Inspect {
        adapter: PathBuf,
        /// List every adapted module with its tensor's shape.
        #[arg(long)]
        layers: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PeftTypeArg {
    /// `peft_type: "MISS"`, tensors `...miss_block` (PEFT >= 0.19).
    Miss,
    /// `peft_type: "BONE"`, tensors `...bone_block` (PEFT 0.14 to 0.18; no mini, no dropout).
    Bone,
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    /// The GPU where this build has kernels and a device is present, else the CPU.
    Auto,
    /// The f64 reference on the CPU, rounded once to the weight's dtype.
    Cpu,
    /// The GPU merge kernel (f32, rounded once; an unmerge is the merge of the adapter
    /// that undoes it); an error where there is none.
    Gpu,
}

impl From<EngineArg> for Engine {
    fn from(engine: EngineArg) -> Self {
        match engine {
            EngineArg::Auto => Engine::Auto,
            EngineArg::Cpu => Engine::Cpu,
            EngineArg::Gpu => Engine::Gpu,
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bone: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), AdapterError> {
    match command {
        Command::Merge { base, adapter, out, engine } => {
            let options = ApplyOptions { direction: Direction::Merge, engine: engine.into() };
            transform("merged", &base, &adapter, &out, options)
        }
        Command::Unmerge { merged, adapter, out, max_condition, engine } => {
            let options = ApplyOptions { direction: Direction::Unmerge { max_condition }, engine: engine.into() };
            transform("unmerged", &merged, &adapter, &out, options)
        }
        Command::Convert { adapter, out, to } => {
            let mut adapter = Adapter::load(&adapter)?;
            let from = adapter.config.peft_type;
            adapter.config.peft_type = match to {
                PeftTypeArg::Miss => PeftType::Miss,
                PeftTypeArg::Bone => PeftType::Bone,
            };
            adapter.save(&out)?;
            let (from, to) = (from.name(), adapter.config.peft_type.name());
            println!(
                "converted {} blocks and {} whole tensors from {from} to {to} -> {}",
                adapter.layers.len(),
                adapter.whole.len(),
                out.display()
            );
            Ok(())
        }
        Command::Inspect { adapter, layers } => inspect(&Adapter::load(&adapter)?, layers),
    }
}

fn transform(
    verb: &str,
    base: &Path,
    adapters: &[PathBuf],
    out: &Path,
    options: ApplyOptions,
) -> Result<(), AdapterError> {
    let adapters = adapters.iter().map(|dir| Adapter::load(dir)).collect::<Result<Vec<_>, _>>()?;
    let adapters: Vec<&Adapter> = adapters.iter().collect();
    let bar = ProgressBar::hidden();
    let report = apply(base, &adapters, out, &options, |done, total| {
        if bar.is_hidden() && bar.length().is_none() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total as u64);
            bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}").expect("valid template"));
        }
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let several = match (adapters.len(), options.direction) {
        (1, _) => String::new(),
        (count, Direction::Merge) => format!("{count} adapters into "),
        (count, Direction::Unmerge { .. }) => format!("{count} adapters from "),
    };
    println!(
        "{verb} {several}{} tensors ({} on the GPU, {} on the CPU), {}copied {} unchanged, {} shard(s) -> {}",
        report.changed - report.replaced,
        report.on_gpu,
        report.changed - report.replaced - report.on_gpu,
        match report.replaced {
            0 => String::new(),
            n => format!("replaced {n} whole (modules_to_save, trained biases), "),
        },
        report.copied,
        report.shards,
        out.display()
    );
    Ok(())
}

/// Whether `bone unmerge` can take the adapter back out of a merged checkpoint, and how
/// much it would amplify the merged weights' rounding error.
fn unmerge_outlook(adapter: &Adapter) -> Result<String, AdapterError> {
    if !adapter.whole.is_empty() {
        let count = adapter.whole.len();
        return Ok(format!("not possible: merging puts {count} tensor(s) in place of the base's"));
    }
    Ok(match adapter.worst_unmerge_block()? {
        None => "exact (B is subtracted)".into(),
        Some(worst) => format!(
            "cond(I + B) at most {:.3e} ({}, block {}); bone unmerge refuses above --max-condition ({:.0e})",
            worst.condition, worst.module, worst.block, DEFAULT_MAX_CONDITION
        ),
    })
}

fn inspect(adapter: &Adapter, list_layers: bool) -> Result<(), AdapterError> {
    let config = &adapter.config;
    let dtypes: std::collections::BTreeSet<String> = adapter.layers.iter().map(|l| format!("{:?}", l.dtype)).collect();
    println!("adapter:        {}", adapter.dir.display());
    println!("peft_type:      {} (tensors `...{}`)", config.peft_type.name(), config.peft_type.block_name());
    println!("variant:        {}, r = {}", config.variant, config.r);
    println!("target_modules: {}", config.target_modules);
    println!("adapted layers: {}", adapter.layers.len());
    println!("parameters:     {}", adapter.parameter_count());
    println!("dtype:          {}", dtypes.into_iter().collect::<Vec<_>>().join(", "));
    println!("bias:           {}", config.bias);
    let count = adapter.whole.len();
    let modules = &config.modules_to_save;
    println!(
        "saved whole:    {count} tensors (modules_to_save {modules:?}, trained biases); merging puts them in place"
    );
    println!("dropout:        {} (miss_dropout; Dropout::new(p, seed) when training)", config.dropout);
    println!("base model:     {}", config.base_model_name_or_path.as_deref().unwrap_or("(not recorded)"));
    println!("unmerge:        {}", unmerge_outlook(adapter)?);
    if list_layers {
        for layer in &adapter.layers {
            println!("  {} {:?} {:?}", layer.module, layer.dims, layer.dtype);
        }
        for tensor in &adapter.whole {
            println!("  {} {:?} {:?} (whole)", tensor.name, tensor.dims, tensor.dtype);
        }
    }
    Ok(())
}
