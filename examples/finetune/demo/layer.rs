//! One frozen linear layer with its trainable part: a Bone adapter (through the
//! crate's public API), LoRA, or the full weight. The bias stays frozen in all three.
//! On the CPU the arithmetic is f64 (the crate's reference for Bone); on the GPU it is
//! bf16 with f32 accumulation (the crate's kernels for Bone, cuBLAS for the others).

use std::rc::Rc;

use bone_kernels::cuda::baseline::{Linear, Lora};
use bone_kernels::reference;
use bone_kernels::{BoneError, Dims, LayerShape, Variant};
use nalgebra::DMatrix;

use super::gpu::{Frozen, Gpu};

/// What a run trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Bone(Variant),
    /// LoRA of this rank, PEFT layout (A `[q, K]` random, B `[N, q]` zero), scaling 1.
    Lora {
        rank: usize,
    },
    /// Full fine-tuning of W.
    Full,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Bone(variant) => format!("Bone {variant}"),
            Method::Lora { rank } => format!("LoRA q={rank}"),
            Method::Full => "full FT".to_string(),
        }
    }
}

enum Trainable {
    Bone(LayerShape),
    Lora { rank: usize },
    Full,
}

pub struct Layer {
    k: usize,
    n: usize,
    w: Vec<f64>,
    bias: Vec<f64>,
    kind: Trainable,
    /// The GPU and this layer's frozen tensors on it, when the GPU does the work.
    device: Option<(Rc<Gpu>, Frozen)>,
    /// The trainable values: B for Bone, A then B for LoRA, W for full fine-tuning.
    pub params: Vec<f64>,
}

fn rows(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

impl Layer {
    /// Wraps the frozen `w` `[n, k]` and `bias`; `lora_a` gives LoRA's random A; with
    /// `gpu`, the layer's arithmetic runs there.
    pub fn new(
        method: Method,
        r: usize,
        (w, bias): (Vec<f64>, Vec<f64>),
        lora_a: impl FnOnce(usize) -> Vec<f64>,
        gpu: Option<&Rc<Gpu>>,
    ) -> Result<Self, BoneError> {
        let (n, k) = (bias.len(), w.len() / bias.len());
        let (kind, params) = match method {
            Method::Bone(variant) => {
                let shape = LayerShape::new(variant, Dims { k, n, r })?;
                (Trainable::Bone(shape), vec![0.0; shape.adapter_len()])
            }
            Method::Lora { rank } => {
                let mut params = lora_a(rank * k);
                params.resize(rank * (k + n), 0.0);
                (Trainable::Lora { rank }, params)
            }
            Method::Full => (Trainable::Full, w.clone()),
        };
        let device = gpu.map(|gpu| gpu.frozen(&w, &bias).map(|frozen| (gpu.clone(), frozen))).transpose()?;
        Ok(Layer { k, n, w, bias, kind, params, device })
    }

    /// `Y [t, n]` for `x [t, k]`.
    pub fn forward(&self, t: usize, x: &[f64]) -> Result<Vec<f64>, BoneError> {
        if let Some((gpu, frozen)) = &self.device {
            let (k, n) = (self.k, self.n);
            return match &self.kind {
                Trainable::Bone(shape) => gpu.bone_forward(shape, t, x, frozen, (&self.params, None)),
                Trainable::Lora { rank } => {
                    Ok(gpu.lora(&Lora { k, n, rank: *rank }, t, x, frozen, &self.params, None)?.0)
                }
                Trainable::Full => Ok(gpu.full(&Linear { k, n }, t, x, frozen, &self.params, None)?.0),
            };
        }
        match &self.kind {
            Trainable::Bone(shape) => reference::forward(shape, t, x, &self.w, &self.params, Some(&self.bias)),
            Trainable::Lora { rank } => {
                let (xm, w) = (DMatrix::from_row_slice(t, self.k, x), self.weight(&self.w));
                let (a, b) = self.lora(*rank);
                Ok(self.add_bias(rows(&(&xm * w.transpose() + (&xm * a.transpose()) * b.transpose()))))
            }
            Trainable::Full => {
                let xm = DMatrix::from_row_slice(t, self.k, x);
                Ok(self.add_bias(rows(&(xm * self.weight(&self.params).transpose()))))
            }
        }
    }

    /// `(dX, d params)` for the upstream gradient `dy [t, n]`.
    pub fn backward(&self, t: usize, x: &[f64], dy: &[f64]) -> Result<(Vec<f64>, Vec<f64>), BoneError> {
        if let Some((gpu, frozen)) = &self.device {
            let (k, n) = (self.k, self.n);
            return match &self.kind {
                Trainable::Bone(shape) => gpu.bone_backward(shape, t, (x, dy), frozen, (&self.params, None)),
                Trainable::Lora { rank } => gpu.lora(&Lora { k, n, rank: *rank }, t, x, frozen, &self.params, Some(dy)),
                Trainable::Full => gpu.full(&Linear { k, n }, t, x, frozen, &self.params, Some(dy)),
            };
        }
        let (xm, dym) = (DMatrix::from_row_slice(t, self.k, x), DMatrix::from_row_slice(t, self.n, dy));
        match &self.kind {
            Trainable::Bone(shape) => {
                let grads = reference::backward(shape, t, x, &self.w, &self.params, dy)?;
                Ok((grads.dx, grads.db))
            }
            Trainable::Lora { rank } => {
                let (a, b) = self.lora(*rank);
                let dy_b = &dym * &b; // [t, q]
                let dx = &dym * self.weight(&self.w) + &dy_b * &a;
                let mut grads = rows(&(dy_b.transpose() * &xm)); // dA [q, K]
                grads.extend(rows(&(dym.transpose() * (&xm * a.transpose())))); // dB [N, q]
                Ok((rows(&dx), grads))
            }
            Trainable::Full => Ok((rows(&(&dym * self.weight(&self.params))), rows(&(dym.transpose() * xm)))),
        }
    }

    fn weight(&self, values: &[f64]) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.n, self.k, values)
    }

    fn lora(&self, rank: usize) -> (DMatrix<f64>, DMatrix<f64>) {
        let (a, b) = self.params.split_at(rank * self.k);
        (DMatrix::from_row_slice(rank, self.k, a), DMatrix::from_row_slice(self.n, rank, b))
    }

    fn add_bias(&self, mut y: Vec<f64>) -> Vec<f64> {
        for (j, value) in y.iter_mut().enumerate() {
            *value += self.bias[j % self.n];
        }
        y
    }
}
