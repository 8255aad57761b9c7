//! PEFT Bone / MiSS adapter files: read and write `adapter_model.safetensors` +
//! `adapter_config.json`, and merge adapters into (or take them back out of) a base
//! checkpoint, tensor by tensor, without touching anything else.
//!
//! ```no_run
//! use bone_kernels::adapter::{Adapter, ApplyOptions, Direction, apply};
//! let adapter = Adapter::load("my-miss-adapter".as_ref())?;
//! let report = apply("llama-base".as_ref(), &[&adapter], "llama-merged".as_ref(), &ApplyOptions::new(Direction::Merge), |_, _| {})?;
//! println!("{} tensors merged", report.changed);
//! # Ok::<(), bone_kernels::adapter::AdapterError>(())
//! ```

mod apply;
mod checkpoint;
mod conditions;
mod config;
mod dtype;
mod error;
mod fast_merge;
mod file;
mod output;
mod plan;
mod rewrite;

pub use apply::{ApplyOptions, Direction, Engine, Report, apply};
pub use checkpoint::Checkpoint;
pub use conditions::WorstBlock;
pub use config::{AdapterConfig, PeftType};
pub use error::AdapterError;
pub use file::{Adapter, AdapterLayer, WholeTensor};
