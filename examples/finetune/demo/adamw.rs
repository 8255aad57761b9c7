//! AdamW over one flat parameter vector (decoupled weight decay, bias-corrected moments).

pub struct AdamW {
    weight_decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    step: i32,
}

impl AdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub fn new(len: usize, weight_decay: f64) -> Self {
        AdamW { weight_decay, m: vec![0.0; len], v: vec![0.0; len], step: 0 }
    }

    /// One step at learning rate `lr` (the caller owns the schedule).
    pub fn update(&mut self, lr: f64, params: &mut [f64], grads: &[f64]) {
        self.step += 1;
        let (c1, c2) = (1.0 - Self::BETA1.powi(self.step), 1.0 - Self::BETA2.powi(self.step));
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            *p -= lr * (self.weight_decay * *p + (*m / c1) / ((*v / c2).sqrt() + Self::EPS));
        }
    }
}
