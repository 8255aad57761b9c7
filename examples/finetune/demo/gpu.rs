//! The examples' layers on the GPU, behind a host-side interface: each call uploads its
//! inputs (bf16) and the current trainable values, runs this crate's kernels (Bone) or
//! cuBLAS (LoRA, full fine-tuning), and brings results back as f64 for the host-side
//! loss and AdamW. Simple rather than fast: the point is who does the arithmetic.

use std::cell::RefCell;

use bone_kernels::cuda::baseline::{Linear, Lora, LoraGrads, LoraTensors, RowMajorBlas};
use bone_kernels::cuda::{
    Accumulate, BoneKernels, Element, GemmEngine, LayerGrads, LayerWeights, Workspace, device_count, kernels_built,
    stream_on_device,
};
use bone_kernels::{BoneError, Dropout, LayerShape};
use cudarc::driver::CudaSlice;
use half::bf16;

pub struct Gpu {
    kernels: BoneKernels,
    blas: RowMajorBlas,
    workspace: RefCell<Workspace>,
    pub name: String,
}

/// A frozen layer's weight and bias on the device.
pub struct Frozen {
    w: CudaSlice<bf16>,
    bias: CudaSlice<bf16>,
}

type Result<T> = std::result::Result<T, BoneError>;

/// What computes the Bone layers' products on the GPU (`--gemm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GemmArg {
    /// The crate's default: cuBLAS where its library loads, else the mma.sync GEMM.
    Default,
    /// The crate's mma.sync GEMM (any supported GPU).
    Native,
    /// The crate's wgmma GEMM (H100, H200).
    Wgmma,
    /// The crate's warp-specialised wgmma GEMM (H100, H200).
    WgmmaWs,
    /// cuBLAS.
    Cublas,
}

impl GemmArg {
    /// The engine asked for, or None for the handle's default.
    fn engine(self) -> Option<GemmEngine> {
        match self {
            GemmArg::Default => None,
            GemmArg::Native => Some(GemmEngine::Native),
            GemmArg::Wgmma => Some(GemmEngine::Wgmma),
            GemmArg::WgmmaWs => Some(GemmEngine::WgmmaWarpSpecialized),
            GemmArg::Cublas => Some(GemmEngine::Cublas),
        }
    }
}

impl Gpu {
    /// True where this build has kernels and the machine a CUDA device.
    pub fn available() -> bool {
        kernels_built() && device_count() > 0
    }

    /// What computes the Bone layers' products.
    pub fn gemm_engine(&self) -> GemmEngine {
        self.kernels.gemm_engine()
    }

    /// The GPU engine, with `gemm` computing the Bone layers' products.
    pub fn new(gemm: GemmArg) -> Result<Self> {
        let stream = stream_on_device(0)?;
        let name = stream.context().name()?;
        let kernels = match gemm.engine() {
            Some(engine) => BoneKernels::with_gemm_engine(stream.clone(), engine)?,
            None => BoneKernels::new(stream.clone())?,
        };
        Ok(Gpu {
            kernels,
            blas: RowMajorBlas::new(stream.clone())?,
            workspace: RefCell::new(Workspace::new(stream)),
            name,
        })
    }

    fn up<T: Element>(&self, values: &[f64]) -> Result<CudaSlice<T>> {
        let host: Vec<T> = values.iter().map(|&v| T::from_f64(v)).collect();
        Ok(self.kernels.stream().clone_htod(&host)?)
    }

    fn zeros<T: Element>(&self, len: usize) -> Result<CudaSlice<T>> {
        Ok(self.kernels.stream().alloc_zeros::<T>(len)?)
    }

    fn down<T: Element>(&self, values: &CudaSlice<T>) -> Result<Vec<f64>> {
        Ok(self.kernels.stream().clone_dtoh(values)?.into_iter().map(Element::to_f64).collect())
    }

    /// `y` `[T, N]` on the host with the frozen bias added (cuBLAS paths add no bias).
    fn plus_bias(&self, y: &CudaSlice<bf16>, frozen: &Frozen) -> Result<Vec<f64>> {
        let bias = self.down(&frozen.bias)?;
        Ok(self.down(y)?.iter().enumerate().map(|(i, v)| v + bias[i % bias.len()]).collect())
    }

    pub fn frozen(&self, w: &[f64], bias: &[f64]) -> Result<Frozen> {
        Ok(Frozen { w: self.up(w)?, bias: self.up(bias)? })
    }

    /// Bone: `Y = X W'^T + bias`, with the adapter's input dropped where `dropout` says.
    pub fn bone_forward(
        &self,
        shape: &LayerShape,
        t: usize,
        x: &[f64],
        frozen: &Frozen,
        (b, dropout): (&[f64], Option<Dropout>),
    ) -> Result<Vec<f64>> {
        let (x, b) = (self.up::<bf16>(x)?, self.up::<f32>(b)?);
        let mut y = self.zeros::<bf16>(t * shape.n())?;
        let weights =
            LayerWeights { w: frozen.w.as_view(), b: b.as_view(), bias: Some(frozen.bias.as_view()), dropout };
        self.kernels.forward(
            shape,
            t,
            &x.as_view(),
            &weights,
            &mut y.as_view_mut(),
            &mut self.workspace.borrow_mut(),
        )?;
        self.down(&y)
    }

    /// Bone: (dX, dB), with the forward's `dropout`.
    pub fn bone_backward(
        &self,
        shape: &LayerShape,
        t: usize,
        (x, dy): (&[f64], &[f64]),
        frozen: &Frozen,
        (b, dropout): (&[f64], Option<Dropout>),
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let (x, b, dy) = (self.up::<bf16>(x)?, self.up::<f32>(b)?, self.up::<bf16>(dy)?);
        let (mut dx, mut db) = (self.zeros::<bf16>(t * shape.k())?, self.zeros::<f32>(shape.adapter_len())?);
        let weights = LayerWeights { w: frozen.w.as_view(), b: b.as_view(), bias: None, dropout };
        let (dx_out, db_out) = (Some(dx.as_view_mut()), db.as_view_mut());
        let mut grads = LayerGrads { dx: dx_out, db: db_out, dbias: None, accumulate: Accumulate::NONE };
        self.kernels.backward(
            shape,
            t,
            &x.as_view(),
            &weights,
            &dy.as_view(),
            &mut grads,
            &mut self.workspace.borrow_mut(),
        )?;
        Ok((self.down(&dx)?, self.down(&db)?))
    }

    /// LoRA (params = A `[q, K]` then B `[N, q]`): `Y = X W^T + X A^T B^T + bias`, and, with
    /// `dy`, (dX, dA then dB).
    pub fn lora(
        &self,
        lora: &Lora,
        t: usize,
        x: &[f64],
        frozen: &Frozen,
        params: &[f64],
        dy: Option<&[f64]>,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let (q, k, n) = (lora.rank, lora.k, lora.n);
        let (a, b) = params.split_at(q * k);
        let (x, a, b) = (self.up::<bf16>(x)?, self.up::<bf16>(a)?, self.up::<bf16>(b)?);
        let (mut h, mut y) = (self.zeros::<bf16>(t * q)?, self.zeros::<bf16>(t * n)?);
        let mut tensors =
            LoraTensors { x: x.as_view(), w: frozen.w.as_view(), a: a.as_view(), b: b.as_view(), h: h.as_view_mut() };
        lora.forward(&self.blas, t, &mut tensors, &mut y.as_view_mut())?;
        let Some(dy) = dy else {
            return Ok((self.plus_bias(&y, frozen)?, Vec::new()));
        };
        let dy = self.up::<bf16>(dy)?;
        let (mut dx, mut da, mut db, mut dh) =
            (self.zeros(t * k)?, self.zeros(q * k)?, self.zeros(n * q)?, self.zeros(t * q)?);
        let mut grads =
            LoraGrads { dx: dx.as_view_mut(), da: da.as_view_mut(), db: db.as_view_mut(), dh: dh.as_view_mut() };
        lora.backward(&self.blas, t, &mut tensors, &dy.as_view(), &mut grads)?;
        let mut param_grads = self.down(&da)?;
        param_grads.extend(self.down(&db)?);
        Ok((self.down(&dx)?, param_grads))
    }

    /// Full fine-tuning (params = W): `Y = X W^T + bias`, and, with `dy`, (dX, dW).
    pub fn full(
        &self,
        linear: &Linear,
        t: usize,
        x: &[f64],
        frozen: &Frozen,
        w: &[f64],
        dy: Option<&[f64]>,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let (x, w) = (self.up::<bf16>(x)?, self.up::<bf16>(w)?);
        let Some(dy) = dy else {
            let mut y = self.zeros::<bf16>(t * linear.n)?;
            linear.forward(&self.blas, t, &x.as_view(), &w.as_view(), &mut y.as_view_mut())?;
            return Ok((self.plus_bias(&y, frozen)?, Vec::new()));
        };
        let dy = self.up::<bf16>(dy)?;
        let (mut dx, mut dw) = (self.zeros::<bf16>(t * linear.k)?, self.zeros::<bf16>(linear.n * linear.k)?);
        linear.input_grad(&self.blas, t, &dy.as_view(), &w.as_view(), &mut dx.as_view_mut())?;
        linear.weight_grad(&self.blas, t, &dy.as_view(), &x.as_view(), &mut dw.as_view_mut())?;
        Ok((self.down(&dx)?, self.down(&dw)?))
    }
}
