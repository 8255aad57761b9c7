//! The task: a frozen two-layer network "pretrained" on task A, adapted to a related
//! task B. Both are made here from a seed; nothing is downloaded.
//!
//! The base network is task A's teacher itself (as if pretraining had converged):
//! `f(x) = W2 tanh(W1 x + b1) + b2`, all layers D x D. Task B's teacher changes both
//! weights by the same relative amount (Frobenius norm 0.3 ||W||) in one of two ways:
//! - `Remix`: `W' = W (I + E)`, E dense: a full-rank re-mixing of each layer's input
//!   features, a multiplicative change that neither method's structure matches;
//! - `BlockRemix`: the same with E block-diagonal in r x r blocks: input features are
//!   re-mixed only within each r-wide group, the change Bone's `W (I + B)` is built around;
//! - `LowRank`: `W' = W + U V^T` of rank 4, the additive change LoRA is built around;
//! - `BatColForm`: `W'_{o,i} = W_{o,i} (I + E_o) + E_o`, exactly what a BatCol adapter
//!   can express (and a rank-r/2 LoRA cannot): Bone's home ground.

use rand::RngExt;
use rand::rngs::StdRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Remix,
    BlockRemix,
    LowRank,
    BatColForm,
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Task::Remix => "remix (W(I+E), E dense)",
            Task::BlockRemix => "block remix (W(I+E), E r x r block-diagonal)",
            Task::LowRank => "low-rank (W+UV^T, rank 4)",
            Task::BatColForm => "BatCol form (W(I+E_o)+E_o)",
        }
    }
}

/// Weights of the two-layer network, row-major `[D, D]` and `[D]`.
#[derive(Clone)]
pub struct Weights {
    pub w1: Vec<f64>,
    pub b1: Vec<f64>,
    pub w2: Vec<f64>,
    pub b2: Vec<f64>,
}

/// Relative size of task B's change to each weight.
const CHANGE: f64 = 0.3;

pub fn uniform(rng: &mut StdRng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The base (task A) and target (task B) networks for width `d`; `r` is the block of `BlockRemix`.
pub fn make(task: Task, d: usize, r: usize, rng: &mut StdRng) -> (Weights, Weights) {
    // Unit-variance pre-activations for unit-variance inputs.
    let scale = (3.0 / d as f64).sqrt();
    let base = Weights {
        w1: uniform(rng, d * d, scale),
        b1: uniform(rng, d, 0.1),
        w2: uniform(rng, d * d, scale),
        b2: uniform(rng, d, 0.1),
    };
    let target =
        Weights { w1: changed(task, d, r, &base.w1, rng), w2: changed(task, d, r, &base.w2, rng), ..base.clone() };
    (base, target)
}

fn changed(task: Task, d: usize, r: usize, w: &[f64], rng: &mut StdRng) -> Vec<f64> {
    let delta: Vec<f64> = match task {
        Task::Remix | Task::BlockRemix => {
            let mut e = uniform(rng, d * d, 1.0);
            if task == Task::BlockRemix {
                for (idx, value) in e.iter_mut().enumerate() {
                    if idx / d / r != idx % d / r {
                        *value = 0.0;
                    }
                }
            }
            (0..d * d).map(|idx| (0..d).map(|j| w[idx / d * d + j] * e[j * d + idx % d]).sum()).collect()
        }
        Task::LowRank => {
            let (u, v) = (uniform(rng, d * 4, 1.0), uniform(rng, 4 * d, 1.0));
            (0..d * d).map(|idx| (0..4).map(|j| u[idx / d * 4 + j] * v[j * d + idx % d]).sum()).collect()
        }
        Task::BatColForm => {
            // E_o is [r, r] for each output block o; dW[n, k] = sum_j W[n, k0 + j] E_o[j, c] + E_o[n mod r, c].
            let e = uniform(rng, d * r, 1.0);
            (0..d * d)
                .map(|idx| {
                    let (n, k) = (idx / d, idx % d);
                    let (block, c, k0) = (&e[n / r * r * r..][..r * r], k % r, k - k % r);
                    (0..r).map(|j| w[n * d + k0 + j] * block[j * r + c]).sum::<f64>() + block[n % r * r + c]
                })
                .collect()
        }
    };
    let factor = CHANGE * norm(w) / norm(&delta);
    w.iter().zip(&delta).map(|(w, d)| w + factor * d).collect()
}
