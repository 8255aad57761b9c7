//! One training run: same data, schedule and evaluation for every method.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bone_kernels::BoneError;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::adamw::AdamW;
use super::gpu::{GemmArg, Gpu};
use super::layer::Method;
use super::network::Network;
use super::task::{Task, make, uniform};

#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    pub task: Task,
    pub method: Method,
    /// Width D of both layers.
    pub width: usize,
    pub r: usize,
    pub tokens: usize,
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
    /// Train on the GPU (the crate's kernels for Bone, with this GEMM engine; cuBLAS for
    /// LoRA and full FT), or on the CPU (None).
    pub gpu: Option<GemmArg>,
}

pub struct Curve {
    /// (step, held-out loss); step 0 is the untrained adapter (the base network).
    pub points: Vec<(usize, f64)>,
    pub trainable: usize,
    /// Time in the student's forward, backward and optimizer steps (not data or evaluation).
    pub train_time: Duration,
}

impl Curve {
    pub fn final_loss(&self) -> f64 {
        self.points.last().map_or(f64::NAN, |p| p.1)
    }

    /// The held-out loss at the last evaluation at or before `step`.
    pub fn loss_at(&self, step: usize) -> f64 {
        self.points.iter().take_while(|p| p.0 <= step).last().map_or(f64::NAN, |p| p.1)
    }
}

/// Held-out tokens evaluated at each checkpoint.
const EVAL_TOKENS: usize = 512;
/// Evaluations over a run.
const CHECKPOINTS: usize = 30;

/// Learning rate at `step`: linear warm-up over the first 5% of steps, then cosine
/// decay to 10% of the peak.
pub fn learning_rate(peak: f64, step: usize, steps: usize) -> f64 {
    let warmup = (steps / 20).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Trains `config.method` on `config.task`; `on_step` is called after every step.
pub fn run(config: &RunConfig, mut on_step: impl FnMut()) -> Result<Curve, BoneError> {
    // The same seed gives every method the same networks, data and held-out set.
    let mut world = StdRng::seed_from_u64(config.seed);
    let (base, target_weights) = make(config.task, config.width, config.r, &mut world);
    let mut init = StdRng::seed_from_u64(config.seed ^ 0x5eed);
    // The teacher only makes data: f64 on the CPU whatever the student runs on.
    let teacher = Network::new(Method::Full, config.r, &target_weights, &mut init, None)?;
    let gpu = config.gpu.map(|engine| Gpu::new(engine).map(Rc::new)).transpose()?;
    let mut student = Network::new(config.method, config.r, &base, &mut init, gpu.as_ref())?;
    let mut optimizers = student.layers.each_ref().map(|l| AdamW::new(l.params.len(), 0.0));

    let d = config.width;
    let eval_x = uniform(&mut world, EVAL_TOKENS * d, 3f64.sqrt());
    let eval_y = teacher.forward(EVAL_TOKENS, &eval_x)?;
    let every = (config.steps / CHECKPOINTS).max(1);
    let mut points = vec![(0, student.loss(EVAL_TOKENS, &eval_x, &eval_y)?)];
    let mut train_time = Duration::ZERO;
    for step in 0..config.steps {
        let x = uniform(&mut world, config.tokens * d, 3f64.sqrt());
        let y = teacher.forward(config.tokens, &x)?;
        let started = Instant::now();
        let (_, grads) = student.loss_and_grads(config.tokens, &x, &y)?;
        let lr = learning_rate(config.lr, step, config.steps);
        for ((layer, optimizer), grad) in student.layers.iter_mut().zip(&mut optimizers).zip(&grads) {
            optimizer.update(lr, &mut layer.params, grad);
        }
        train_time += started.elapsed();
        if (step + 1) % every == 0 || step + 1 == config.steps {
            points.push((step + 1, student.loss(EVAL_TOKENS, &eval_x, &eval_y)?));
        }
        on_step();
    }
    Ok(Curve { points, trainable: student.trainable(), train_time })
}
