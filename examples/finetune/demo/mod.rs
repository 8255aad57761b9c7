//! The fine-tuning demo's model, task and training loop, kept apart from its
//! command line so that `tests/demo_training.rs` can run the same loop.

pub mod adamw;
pub mod gpu;
pub mod layer;
pub mod network;
pub mod task;
pub mod train;
