//! The two-layer network `y = L2(tanh(L1(x)))`, every layer adapted the same way.

use std::rc::Rc;

use bone_kernels::BoneError;
use rand::rngs::StdRng;

use super::gpu::Gpu;
use super::layer::{Layer, Method};
use super::task::{Weights, uniform};

pub struct Network {
    pub layers: [Layer; 2],
    width: usize,
}

impl Network {
    /// The frozen `base` with `method`'s trainable part; `rng` draws LoRA's A (PEFT's
    /// Kaiming-uniform bound, 1/sqrt(K)); with `gpu`, the layers compute there.
    pub fn new(
        method: Method,
        r: usize,
        base: &Weights,
        rng: &mut StdRng,
        gpu: Option<&Rc<Gpu>>,
    ) -> Result<Self, BoneError> {
        let width = base.b1.len();
        let bound = 1.0 / (width as f64).sqrt();
        let mut lora_a = |len| uniform(rng, len, bound);
        let first = Layer::new(method, r, (base.w1.clone(), base.b1.clone()), &mut lora_a, gpu)?;
        let second = Layer::new(method, r, (base.w2.clone(), base.b2.clone()), &mut lora_a, gpu)?;
        Ok(Network { layers: [first, second], width })
    }

    pub fn trainable(&self) -> usize {
        self.layers.iter().map(|l| l.params.len()).sum()
    }

    /// The outputs for `t` inputs and the hidden activations the backward pass needs.
    fn run(&self, t: usize, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>), BoneError> {
        let hidden: Vec<f64> = self.layers[0].forward(t, x)?.into_iter().map(f64::tanh).collect();
        Ok((self.layers[1].forward(t, &hidden)?, hidden))
    }

    pub fn forward(&self, t: usize, x: &[f64]) -> Result<Vec<f64>, BoneError> {
        Ok(self.run(t, x)?.0)
    }

    /// Mean squared error against `target`.
    pub fn loss(&self, t: usize, x: &[f64], target: &[f64]) -> Result<f64, BoneError> {
        Ok(mse(&self.forward(t, x)?, target))
    }

    /// The loss and each layer's parameter gradient.
    pub fn loss_and_grads(&self, t: usize, x: &[f64], target: &[f64]) -> Result<(f64, [Vec<f64>; 2]), BoneError> {
        let (y, hidden) = self.run(t, x)?;
        let scale = 2.0 / (t * self.width) as f64;
        let dy: Vec<f64> = y.iter().zip(target).map(|(y, target)| (y - target) * scale).collect();
        let (d_hidden, second) = self.layers[1].backward(t, &hidden, &dy)?;
        let d_pre: Vec<f64> = d_hidden.iter().zip(&hidden).map(|(d, h)| d * (1.0 - h * h)).collect();
        let (_, first) = self.layers[0].backward(t, x, &d_pre)?;
        Ok((mse(&y, target), [first, second]))
    }
}

fn mse(y: &[f64], target: &[f64]) -> f64 {
    y.iter().zip(target).map(|(y, t)| (y - t).powi(2)).sum::<f64>() / y.len() as f64
}
