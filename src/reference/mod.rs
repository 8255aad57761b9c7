//! The CPU reference ("oracle"), in f64. Every GPU result is checked against it.
//!
//! Plain and obviously right beats fast here: each function follows one formula of
//! `bone-math.md` literally, with dense `nalgebra` matrices. Inputs are row-major
//! slices laid out as in PyTorch: X `[T, K]`, W `[N, K]` (`nn.Linear.weight`),
//! Y and dY `[T, N]`, B as PEFT stores it (see [`crate::LayerShape::adapter_dims`]).
//!
//! The forward pass is written in each variant's own factored form and the merge
//! from the materialised `W'`, so "forward equals a plain linear layer with the
//! merged weight" is a real check, not a tautology.

mod backward;
mod blocks;
mod forward;
mod weights;

pub use backward::{Gradients, backward, backward_with_dropout};
pub use forward::{forward, forward_with_dropout};
pub use weights::{DEFAULT_MAX_CONDITION, bat_conditions, delta_weight, merge, unmerge, unmerge_adapter};
