//! The trainer-facing GPU entry points: forward and backward of one adapted layer.
//!
//! Types: X, W, Y, dY, dX and the bias share one 16-bit type, bf16 or f16
//! ([`ActivationElement`]); B is f32 (PEFT's default) or bf16; dB and dbias are f32;
//! every product accumulates in f32.
//!
//! Kept between the passes: X (the backward's input), or for the shared block and mini
//! only their block sums S `[T, r]` ([`BoneKernels::forward_saving_block_sums`],
//! [`BoneKernels::backward_from_block_sums`]).
//!
//! Memory contract: nothing proportional to N x K or T x N is allocated beyond the
//! caller's outputs. Scratch memory comes from the caller's [`Workspace`]; its size is
//! [`BoneKernels::workspace_bytes`]:
//! - the shared block: O((T + N + K) r);
//! - BatRow: X~ (or dX~) for a chunk of tokens, at most 128 MiB, plus O((T + N + K) r);
//! - BatCol: a 32 MiB slab of W' or G plus O((N + K) r), and in the backward, where W'
//!   takes more than one slab, dX's f32 accumulator for a chunk of tokens, at most 256 MiB
//!   (docs/design.md);
//! - every backward: dbias's partial sums over chunks of tokens, at most 128 KiB, and dB's
//!   partial sums over chunks of the reduced dimension, at most
//!   128 Ki x r bytes (8 MiB at r = 64); the shared block's U and BatRow's R and dR (split
//!   the same way at small T) at most 128 Ki x r bytes more;
//! - at small T, where a main GEMM is cut along K to fill the GPU, its partial sums: at
//!   most 16 MiB (in one of those regions where they are larger).
//!
//! On the cuBLAS engine those partial sums are cuBLAS's own (it picks its split-K) and the
//! workspace holds none. dB is deterministic: every reduction of the crate's runs in a
//! fixed order (no atomics), and cuBLAS, which runs without atomics here, documents
//! bitwise-identical results run to run on the same GPU model, so repeated runs are
//! bitwise identical.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceSlice};
use half::{bf16, f16};

use super::call::{Call, aligned};
use super::element::Element;
use super::handle::BoneKernels;
use super::launch::Launcher;
use super::params::{BoneDropout, BoneLayer};
use super::split::{Cublas, Split};
use super::timed::Timed;
use super::workspace::{Workspace, total_bytes};
use super::{bat_col, bat_row, bias_grad, shared_block};
use crate::dropout::Dropout;
use crate::error::{BoneError, Result};
use crate::shape::LayerShape;
use crate::variant::Variant;

mod sealed {
    pub trait Adapter {}
    impl Adapter for f32 {}
    impl Adapter for half::bf16 {}
    pub trait Activation {}
    impl Activation for half::bf16 {}
    impl Activation for half::f16 {}
}

/// A storage type for the adapter B the kernels read: `f32` or `half::bf16`.
pub trait AdapterElement: Element + sealed::Adapter {}
impl AdapterElement for f32 {}
impl AdapterElement for bf16 {}

/// The storage type of a layer's activations, frozen weight and bias (X, W, Y, dY, dX,
/// bias): `half::bf16` or `half::f16`, one per call.
pub trait ActivationElement: Element + sealed::Activation {}
impl ActivationElement for bf16 {}
impl ActivationElement for f16 {}

/// One layer's device weights: W `[N, K]`, B as PEFT stores it, optional bias `[N]`; W and
/// the bias in the activations' type `TX` (bf16 unless said); and the step's dropout.
pub struct LayerWeights<'a, TB, TX = bf16> {
    /// The frozen weight, `nn.Linear.weight`, `[N, K]`, 16-byte aligned.
    pub w: CudaView<'a, TX>,
    /// The trainable block, PEFT's layout ([`LayerShape::adapter_dims`]), f32 or bf16.
    pub b: CudaView<'a, TB>,
    /// The frozen bias `[N]`, if the layer has one (used by the forward only).
    pub bias: Option<CudaView<'a, TX>>,
    /// PEFT's `miss_dropout` on the adapter's input (shared block and mini only): the mask
    /// is recomputed from the seed, so pass the forward and the backward of a step the same
    /// [`Dropout`], and each layer and step its own seed; `None` in evaluation.
    pub dropout: Option<Dropout>,
}

/// Where the backward pass writes: dX `[T, K]` (optional, in the activations' type `TX`),
/// dB (B's shape), dbias `[N]` (optional), each overwritten or added to ([`Accumulate`]).
pub struct LayerGrads<'a, TX = bf16> {
    /// dX `[T, K]`, when the layer's input needs a gradient; 16-byte aligned.
    pub dx: Option<CudaViewMut<'a, TX>>,
    /// dB in B's shape, f32; 16-byte aligned.
    pub db: CudaViewMut<'a, f32>,
    /// dbias `[N]` f32 (the column sums of dY), when the bias is trained.
    pub dbias: Option<CudaViewMut<'a, f32>>,
    /// Which of them the backward adds to instead of overwriting.
    pub accumulate: Accumulate,
}

/// Which of the backward's outputs it adds its gradient to, instead of overwriting them:
/// dB and dbias summed over micro-batches (as PyTorch accumulates `.grad`), dX summed over
/// the layers that read one input (Llama's q, k and v projections read the same X), with no
/// buffer or pass of the caller's own. Each is added to what the output holds in f32 and
/// rounded once to the output's type; dB stays bitwise reproducible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accumulate {
    /// dX += this layer's dX.
    pub dx: bool,
    /// dB += this batch's dB.
    pub db: bool,
    /// dbias += this batch's dbias.
    pub dbias: bool,
}

impl Accumulate {
    /// Overwrite every output (the default).
    pub const NONE: Accumulate = Accumulate { dx: false, db: false, dbias: false };
    /// Add to every output.
    pub const ALL: Accumulate = Accumulate { dx: true, db: true, dbias: true };
}

/// Which pass a workspace is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// [`BoneKernels::forward`].
    Forward,
    /// [`BoneKernels::backward`].
    Backward,
}

/// Block sizes the kernels are built and tested for.
const SUPPORTED_R: [usize; 6] = [8, 16, 32, 64, 128, 256];

fn check_supported(layer: &LayerShape, tokens: usize) -> Result<BoneLayer> {
    let params = BoneLayer::new(layer, Some(tokens))?;
    let unsupported = |why: String| Err(BoneError::UnsupportedByKernels(why));
    if !SUPPORTED_R.contains(&layer.r()) {
        return unsupported(format!("r = {}; the kernels take r in {SUPPORTED_R:?}", layer.r()));
    }
    if !layer.k().is_multiple_of(8) || !layer.n().is_multiple_of(8) {
        return unsupported(format!(
            "K = {}, N = {}; the kernels need both to be multiples of 8",
            layer.k(),
            layer.n()
        ));
    }
    Ok(params)
}

impl BoneKernels {
    /// Scratch bytes one `pass` over `tokens` tokens of `layer` needs; for a shape or
    /// token count the kernels do not take, the error the pass itself would give.
    pub fn workspace_bytes(&self, layer: &LayerShape, tokens: usize, pass: Pass) -> Result<usize> {
        check_supported(layer, tokens)?;
        Ok(total_bytes(&region_sizes(layer, tokens, pass, self.blas().is_none())))
    }

    /// `Y = X W'^T + bias` without forming W' in device memory beyond the workspace.
    /// Shapes and every buffer are checked before anything is launched; X, W and Y must
    /// start 16-byte aligned (every cudarc allocation does), else [`BoneError::Misaligned`].
    pub fn forward<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        x: &CudaView<TX>,
        weights: &LayerWeights<TB, TX>,
        y: &mut CudaViewMut<TX>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        self.forward_saving(layer, tokens, x, weights, y, None, workspace)
    }

    /// [`BoneKernels::forward`] for the shared block and mini, also writing their block sums
    /// `S = sum_i X_i` (after dropout) to `block_sums` `[T, r]`, for
    /// [`BoneKernels::backward_from_block_sums`]: their backward reads nothing else of X, so
    /// a trainer keeps T x r elements between the passes instead of X's T x K (PEFT's
    /// autograd keeps only S too). It costs one more store of S. BatCol and BatRow need X
    /// itself: [`BoneError::BlockSumsOnBat`].
    #[allow(clippy::too_many_arguments)] // forward's arguments and the one output it adds
    pub fn forward_saving_block_sums<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        x: &CudaView<TX>,
        weights: &LayerWeights<TB, TX>,
        y: &mut CudaViewMut<TX>,
        block_sums: &mut CudaViewMut<TX>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        self.forward_saving(layer, tokens, x, weights, y, Some(block_sums), workspace)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_saving<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        x: &CudaView<TX>,
        weights: &LayerWeights<TB, TX>,
        y: &mut CudaViewMut<TX>,
        block_sums: Option<&mut CudaViewMut<TX>>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let params = self.check_common(layer, tokens, weights, workspace)?;
        SavedInput::X(x).check(self, layer, tokens)?;
        let output_layout = || format!("[T, N] = [{tokens}, {}]", layer.n());
        self.check_buffer("Y", y, tokens * layer.n(), output_layout)?;
        if let Some(s) = &block_sums {
            check_block_sums(self, layer, tokens, *s)?;
        }
        let stream = self.stream().clone();
        let (x_ptr, _x) = x.device_ptr(&stream);
        let (w_ptr, _w) = weights.w.device_ptr(&stream);
        let (b_ptr, _b) = weights.b.device_ptr(&stream);
        let bias = weights.bias.as_ref().map(|bias| bias.device_ptr(&stream));
        let (y_ptr, _y) = y.device_ptr_mut(&stream);
        let saved = block_sums.map(|s| s.device_ptr_mut(&stream));
        let inputs = Call::new(params, *layer, tokens, (TX::KERNEL_SUFFIX, TB::KERNEL_SUFFIX), [x_ptr, w_ptr, b_ptr])?;
        let call = Call {
            bias: bias.as_ref().map_or(0, |b| b.0),
            y: aligned("Y", y_ptr)?,
            dropout: BoneDropout::of(weights.dropout),
            saved_s: saved.as_ref().map_or(Ok(0), |s| aligned("S", s.0))?,
            ..inputs
        };
        let regions = workspace.regions(&region_sizes(layer, tokens, Pass::Forward, self.blas().is_none()))?;
        self.run(Pass::Forward, &call, &regions)
    }

    /// dX (if asked), dB and dbias (if asked) for the upstream gradient `dy` `[T, N]`,
    /// written or added to as `grads.accumulate` says. dB is deterministic: bitwise
    /// identical run to run. X, W, dY, dX and dB must start
    /// 16-byte aligned (every cudarc allocation does), else [`BoneError::Misaligned`].
    #[allow(clippy::too_many_arguments)] // the backward's own inputs and outputs, each named
    pub fn backward<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        x: &CudaView<TX>,
        weights: &LayerWeights<TB, TX>,
        dy: &CudaView<TX>,
        grads: &mut LayerGrads<TX>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        self.backward_reading(layer, tokens, SavedInput::X(x), weights, dy, grads, workspace)
    }

    /// [`BoneKernels::backward`] of the shared block or mini from the block sums S `[T, r]`
    /// that [`BoneKernels::forward_saving_block_sums`] wrote, instead of X: the same
    /// launches but S's, and bitwise the same results (on the cuBLAS engine where S starts
    /// 256-byte aligned, as every cudarc allocation and workspace region does: cuBLAS may
    /// pick its kernel by alignment). Pass the forward's [`Dropout`] as always (S holds the
    /// dropped sums; dX's tiled term is dropped with the same mask).
    #[allow(clippy::too_many_arguments)] // the backward's own inputs and outputs, each named
    pub fn backward_from_block_sums<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        block_sums: &CudaView<TX>,
        weights: &LayerWeights<TB, TX>,
        dy: &CudaView<TX>,
        grads: &mut LayerGrads<TX>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        self.backward_reading(layer, tokens, SavedInput::BlockSums(block_sums), weights, dy, grads, workspace)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_reading<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        input: SavedInput<'_, '_, TX>,
        weights: &LayerWeights<TB, TX>,
        dy: &CudaView<TX>,
        grads: &mut LayerGrads<TX>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let params = self.check_common(layer, tokens, weights, workspace)?;
        input.check(self, layer, tokens)?;
        self.check_buffer("dY", dy, tokens * layer.n(), || format!("[T, N] = [{tokens}, {}]", layer.n()))?;
        self.check_buffer("dB", &grads.db, layer.adapter_len(), || layer.adapter_layout())?;
        if let Some(dx) = &grads.dx {
            self.check_buffer("dX", dx, tokens * layer.k(), || format!("[T, K] = [{tokens}, {}]", layer.k()))?;
        }
        if let Some(dbias) = &grads.dbias {
            self.check_buffer("dbias", dbias, layer.n(), || format!("[N] = [{}]", layer.n()))?;
        }
        let stream = self.stream().clone();
        let (w_ptr, _w) = weights.w.device_ptr(&stream);
        let (b_ptr, _b) = weights.b.device_ptr(&stream);
        let (dy_ptr, _dy) = dy.device_ptr(&stream);
        let (db_ptr, _db) = grads.db.device_ptr_mut(&stream);
        let dx = grads.dx.as_mut().map(|dx| dx.device_ptr_mut(&stream));
        let dbias = grads.dbias.as_mut().map(|dbias| dbias.device_ptr_mut(&stream));
        // X goes where the call's X does, S where its kept block sums do.
        let (x_ptr, saved_s, _input) = match input {
            SavedInput::X(x) => {
                let (ptr, guard) = x.device_ptr(&stream);
                (ptr, 0, guard)
            }
            SavedInput::BlockSums(s) => {
                let (ptr, guard) = s.device_ptr(&stream);
                (0, aligned("S", ptr)?, guard)
            }
        };
        let inputs = Call::new(params, *layer, tokens, (TX::KERNEL_SUFFIX, TB::KERNEL_SUFFIX), [x_ptr, w_ptr, b_ptr])?;
        let call = Call {
            y: aligned("dY", dy_ptr)?,
            dx: dx.as_ref().map_or(Ok(0), |d| aligned("dX", d.0))?,
            db: aligned("dB", db_ptr)?,
            dbias: dbias.as_ref().map_or(0, |d| d.0),
            accumulate: grads.accumulate,
            dropout: BoneDropout::of(weights.dropout),
            saved_s,
            ..inputs
        };
        let regions = workspace.regions(&region_sizes(layer, tokens, Pass::Backward, self.blas().is_none()))?;
        self.run(Pass::Backward, &call, &regions)
    }

    /// The launches of `pass` for a validated call, on this handle's engine (cuBLAS through
    /// `Split`, or the crate's GEMMs), each marked where the handle is timed.
    fn run(&self, pass: Pass, call: &Call, regions: &[u64]) -> Result<()> {
        let Some(timer) = self.launch_timer() else {
            return match self.blas() {
                None => run_pass(self, pass, call, regions),
                Some(blas) => run_pass(&Split(Cublas { kernels: self, blas }), pass, call, regions),
            };
        };
        // The benches' breakdown: every launch marked on the stream, named for the engine.
        let (clock, engine, launches) = (self.stream(), self.own_gemm_engine().label(), timer.launches());
        match self.blas() {
            None => run_pass(&Timed { inner: self, clock, engine, launches }, pass, call, regions),
            Some(blas) => {
                let inner = Cublas { kernels: self, blas };
                run_pass(&Split(Timed { inner, clock, engine, launches }), pass, call, regions)
            }
        }
    }

    /// Checks shared by both passes: supported shape, X, W, B, bias, workspace stream.
    fn check_common<TX: ActivationElement, TB: AdapterElement>(
        &self,
        layer: &LayerShape,
        tokens: usize,
        weights: &LayerWeights<TB, TX>,
        workspace: &Workspace,
    ) -> Result<BoneLayer> {
        let params = check_supported(layer, tokens)?;
        if let Some(dropout) = weights.dropout {
            dropout.check_variant(layer.variant())?;
        }
        self.check_buffer("W", &weights.w, layer.weight_len(), || format!("[N, K] = [{}, {}]", layer.n(), layer.k()))?;
        self.check_buffer("B", &weights.b, layer.adapter_len(), || layer.adapter_layout())?;
        if let Some(bias) = &weights.bias {
            self.check_buffer("bias", bias, layer.n(), || format!("[N] = [{}]", layer.n()))?;
        }
        if !workspace.is_on(self.stream()) {
            return Err(BoneError::WorkspaceStream);
        }
        Ok(params)
    }
}

/// What a backward reads of the forward's input: X, or the block sums S the forward saved.
enum SavedInput<'v, 'a, TX> {
    X(&'v CudaView<'a, TX>),
    BlockSums(&'v CudaView<'a, TX>),
}

impl<TX> SavedInput<'_, '_, TX> {
    /// Its length (and, for S, that the variant keeps S), before any launch.
    fn check(&self, kernels: &BoneKernels, layer: &LayerShape, tokens: usize) -> Result<()> {
        match self {
            SavedInput::X(x) => {
                kernels.check_buffer("X", *x, tokens * layer.k(), || format!("[T, K] = [{tokens}, {}]", layer.k()))
            }
            SavedInput::BlockSums(s) => check_block_sums(kernels, layer, tokens, *s),
        }
    }
}

/// The block sums S `[T, r]` of the shared block or mini: the variant keeps them, the
/// buffer holds them.
fn check_block_sums<TX>(
    kernels: &BoneKernels,
    layer: &LayerShape,
    tokens: usize,
    block_sums: &impl DeviceSlice<TX>,
) -> Result<()> {
    if layer.variant().is_bat() {
        return Err(BoneError::BlockSumsOnBat { variant: layer.variant().name() });
    }
    kernels.check_buffer("S", block_sums, tokens * layer.r(), || format!("[T, r] = [{tokens}, {}]", layer.r()))
}

/// The forward's launches for a validated call, with its workspace regions.
pub(super) fn run_forward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    match call.shape.variant() {
        Variant::Shared | Variant::Mini { .. } => shared_block::forward(launcher, call, regions),
        Variant::BatRow => bat_row::forward(launcher, call, regions),
        Variant::BatCol => bat_col::forward(launcher, call, regions),
    }
}

/// The launches of `pass` for a validated call, with its workspace regions.
fn run_pass(launcher: &impl Launcher, pass: Pass, call: &Call, regions: &[u64]) -> Result<()> {
    match pass {
        Pass::Forward => run_forward(launcher, call, regions),
        Pass::Backward => run_backward(launcher, call, regions),
    }
}

/// The backward's launches for a validated call, with its workspace regions.
pub(super) fn run_backward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    match call.shape.variant() {
        Variant::Shared | Variant::Mini { .. } => shared_block::backward(launcher, call, regions)?,
        Variant::BatRow => bat_row::backward(launcher, call, regions)?,
        Variant::BatCol => bat_col::backward(launcher, call, regions)?,
    }
    if call.dbias != 0 {
        // The last region is dbias's (region_sizes).
        bias_grad::launch(launcher, call, regions.last().copied().unwrap_or(0))?;
    }
    Ok(())
}

/// The workspace regions of one pass, in bytes, in the order the variant's code uses them;
/// the backward's last one holds dbias's partial sums.
pub(super) fn region_sizes(layer: &LayerShape, tokens: usize, pass: Pass, cut: bool) -> Vec<usize> {
    let mut sizes = match layer.variant() {
        Variant::Shared | Variant::Mini { .. } => shared_block::regions(layer, tokens, pass, cut),
        Variant::BatRow => bat_row::regions(layer, tokens, pass, cut),
        Variant::BatCol => bat_col::regions(layer, tokens, pass, cut),
    };
    if pass == Pass::Backward {
        sizes.push(bias_grad::partial_bytes(layer.n(), tokens));
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Dims;

    fn shape(variant: Variant, k: usize, n: usize, r: usize) -> LayerShape {
        LayerShape::new(variant, Dims { k, n, r }).unwrap()
    }

    #[test]
    fn only_the_block_sizes_and_dimensions_the_kernels_take_pass() {
        for r in SUPPORTED_R {
            check_supported(&shape(Variant::BatCol, 256, 256, r), 7).unwrap();
        }
        for r in [4, 24, 512] {
            let err = check_supported(&shape(Variant::Shared, 512, 512, r), 7).unwrap_err();
            assert!(
                matches!(&err, BoneError::UnsupportedByKernels(why) if why.starts_with(&format!("r = {r};"))),
                "{err}"
            );
        }
        // The shared block takes K = 100 (not a multiple of r), but the GEMMs need multiples of 8.
        let err = check_supported(&shape(Variant::Shared, 100, 96, 32), 7).unwrap_err();
        assert!(matches!(&err, BoneError::UnsupportedByKernels(why) if why.contains("K = 100")), "{err}");
        // Element counts must fit the kernels' 32-bit indexing: T x K here.
        let err = check_supported(&shape(Variant::Shared, 16384, 64, 64), 1 << 17).unwrap_err();
        assert!(matches!(err, BoneError::TooLargeForKernels { .. }), "{err}");
    }

    #[test]
    fn the_issue_sizes_are_accepted_with_bounded_workspace() {
        // T up to 65536, N and K up to 16384, every r the kernels take (#3).
        super::super::workspace::use_production_bounds();
        let variants = [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 64 }];
        for variant in variants {
            for r in SUPPORTED_R {
                let layer = shape(variant, 16384, 16384, r);
                check_supported(&layer, 65536).unwrap();
                for pass in [Pass::Forward, Pass::Backward] {
                    let bytes = total_bytes(&region_sizes(&layer, 65536, pass, true));
                    // BatCol: a W' slab (32 MiB) and dX's accumulator (4096 tokens, 256 MiB at
                    // K = 16384); BatRow: X~ for a chunk of tokens (128 MiB); the shared block:
                    // S and U (T x r); then dB's partial sums (128 Ki x r bytes), dbias's
                    // (128 KiB) and B's operands (4 (N + K) r bytes at most): nothing N x K,
                    // T x N or T x K.
                    let bound = (288 << 20) + 128 * 1024 * r + (128 << 10) + 4 * (16384 + 16384) * r;
                    assert!(bytes <= bound, "{variant} r={r} {pass:?}: {bytes} bytes, bound {bound}");
                }
            }
        }
    }

    #[test]
    fn every_call_the_kernels_take_has_a_workspace_size() {
        // workspace_bytes checks as the passes do, then sizes: nothing it lets through may
        // overflow or divide by zero in the sizing (T = 0 and T = 2^64 - 1 panicked there
        // when the sizing ran unchecked).
        super::super::workspace::use_production_bounds();
        let variants = [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 256 }];
        let token_counts = [0, 1, 7, 4096, 65536, 1 << 20, (1 << 31) - 1, 1 << 31, usize::MAX];
        let mut sized = 0;
        for (variant, r, (k, n)) in variants
            .into_iter()
            .flat_map(|v| SUPPORTED_R.map(|r| (v, r)))
            .flat_map(|(v, r)| [(256, 256), (4096, 11008), (16384, 16384)].map(|dims| (v, r, dims)))
        {
            let layer = shape(variant, k, n, r);
            for t in token_counts {
                match check_supported(&layer, t) {
                    Ok(_) => {
                        for (pass, cut) in
                            [Pass::Forward, Pass::Backward].into_iter().flat_map(|p| [(p, false), (p, true)])
                        {
                            assert!(total_bytes(&region_sizes(&layer, t, pass, cut)) > 0);
                            sized += 1;
                        }
                    }
                    Err(_) => {
                        let too_large = t.saturating_mul(k.max(n)) > i32::MAX as usize;
                        assert!(t == 0 || too_large, "{variant} r={r} {k}x{n} T={t} refused");
                    }
                }
            }
        }
        assert!(sized > 1000, "{sized}");
    }

    #[test]
    fn a_library_gemm_needs_no_partial_sums_in_the_workspace() {
        // cuBLAS picks its own split-K, so the workspace on that engine is the crate-GEMM
        // one less every partial-sum region, at any T. (Sizes as a real run has them.)
        super::super::workspace::use_production_bounds();
        for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 64 }] {
            let layer = shape(variant, 4096, 4096, 64);
            for (t, pass) in [(512, Pass::Forward), (512, Pass::Backward), (4096, Pass::Backward)] {
                let (ours, library) = (region_sizes(&layer, t, pass, true), region_sizes(&layer, t, pass, false));
                let (ours_total, library_total) = (total_bytes(&ours), total_bytes(&library));
                println!(
                    "{variant} T={t} {pass:?}: workspace {ours_total} B on the crate's GEMMs, {library_total} B on cuBLAS"
                );
                // Regions differ only where the crate's GEMMs keep partial sums (every
                // backward keeps some, dB's at least), and in BatCol's S, which only its
                // unfused dB reads (below 2048 tokens here: on cuBLAS, not beside the fused kernel).
                let differ = |(i, (l, o)): (usize, (&usize, &usize))| {
                    l == o || *l == 0 || (variant == Variant::BatCol && i == 5 && *l == t * 64 * 2 && *o == 0)
                };
                assert!(library.iter().zip(&ours).enumerate().all(differ), "{variant} T={t} {pass:?}");
                assert!(library_total < ours_total || pass == Pass::Forward, "{variant} T={t} {pass:?}");
            }
        }
    }

    #[test]
    fn gemm_operands_must_be_16_byte_aligned() {
        let layer = shape(Variant::Shared, 64, 64, 32);
        let params = check_supported(&layer, 4).unwrap();
        assert!(Call::new(params, layer, 4, ("bf16", "f32"), [256, 512, 8]).is_ok(), "B is not a GEMM operand");
        for (name, addresses) in [("X", [8, 512, 0]), ("W", [256, 520, 0])] {
            let err = Call::new(params, layer, 4, ("bf16", "f32"), addresses).err().expect("misaligned");
            assert!(matches!(err, BoneError::Misaligned { buffer } if buffer == name), "{err}");
        }
    }
}
