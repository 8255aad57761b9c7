//! How the forward and backward passes launch work: through [`Launcher`], so that the
//! same launch sequence runs on the GPU ([`BoneKernels`]) and, in the crate's own tests,
//! on the CPU (`cuda::emulator`: the same kernel sources compiled for the host), where the
//! sequence and the kernels are checked against the oracle without a GPU.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::baseline::Half;
use super::handle::{BoneKernels, GemmEngine};
use super::params::{
    BONE_BAT_COL_GRADS_SMEM_BYTES, BONE_BAT_COL_GRADS_WGMMA_SMEM_BYTES, BONE_BAT_COL_GRADS_WS_SMEM_BYTES,
    BONE_BIAS_GRAD_SHARED_BYTES, BONE_GEMM_BM, BONE_GEMM_BN, BONE_GEMM_SMEM_BYTES, BONE_GEMM_THREADS,
    BONE_MERGE_THREADS, BONE_WGMMA_NARROW_BN, BONE_WGMMA_NARROW_SMEM_BYTES, BONE_WGMMA_SMEM_BYTES, BONE_WGMMA_WIDE_BN,
    BONE_WGMMA_WIDE_SMEM_BYTES, BONE_WGMMA_WS_NARROW_SMEM_BYTES, BONE_WGMMA_WS_SMEM_BYTES, BONE_WGMMA_WS_THREADS,
    BONE_WGMMA_WS_WIDE_SMEM_BYTES, BoneDropout, BoneGemm, BoneLayer, BoneSetup,
};
use super::token_chunks::FULL_GPU_BLOCKS;
use crate::error::Result;

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    I32(i32),
    /// A device address.
    Ptr(u64),
    Layer(BoneLayer),
    Setup(BoneSetup),
    Dropout(BoneDropout),
}

pub(crate) trait Launcher {
    /// `C = A1 B1^T + A2 B2^T (+ bias)` with the instantiation `kernel` (kernels/gemm.cu),
    /// over `batches` batches, each cut into [`chunks`] of its reduction (grid.z holds both).
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()>;

    /// Kernel `kernel` over `elements` threads (rounded up to whole blocks of
    /// BONE_MERGE_THREADS): one per element, or what the kernel's comment says (a warp per
    /// row; bone_bias_grad takes a block per strip of 64 columns and chunk of tokens, and
    /// [`BONE_BIAS_GRAD_SHARED_BYTES`] of shared memory). The
    /// caller passes `args` matching the kernel's signature in type and order, with device
    /// addresses that cover everything the kernel reads and writes for that count.
    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()>;

    /// Runs the fused kernel `kernel` (named for its mma.sync version) over `grid`, on this
    /// launcher's GEMM family ([`GemmKernels::fused`]); `None` (nothing launched) where a
    /// library GEMM runs the products, and the caller takes its unfused sequence.
    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>>;

    /// Whether the launch sequence cuts long reductions with few output tiles into chunks
    /// itself (module `token_chunks`): yes on the crate's GEMMs; a library GEMM (cuBLAS)
    /// picks its own split-K, so it gets each product whole and no summing pass follows.
    fn cuts_reductions(&self) -> bool {
        true
    }
}

/// A launcher borrowed (a handle wrapped by another launcher, e.g. `timed::Timed`).
impl<L: Launcher> Launcher for &L {
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        (**self).gemm(kernel, params, batches)
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        (**self).elementwise(kernel, elements, args)
    }

    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>> {
        (**self).fused(kernel, grid, args)
    }

    fn cuts_reductions(&self) -> bool {
        (**self).cuts_reductions()
    }
}

/// What a GEMM instantiation's name (`bone_gemm_<A><B>_<in>_<out>`, k = K-major, t =
/// MN-major, `in` bf16 or f16, `out` that or f32) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmKind {
    pub a_k_major: bool,
    pub b_k_major: bool,
    /// The operands' type (and the output's, unless `out_f32`).
    pub half: Half,
    pub out_f32: bool,
}

pub(crate) fn gemm_kind(kernel: &str) -> GemmKind {
    let spec = kernel.strip_prefix("bone_gemm_").unwrap_or(kernel);
    let layouts = spec.as_bytes();
    GemmKind {
        a_k_major: layouts.first() == Some(&b'k'),
        b_k_major: layouts.get(1) == Some(&b'k'),
        half: if spec.get(2..).is_some_and(|types| types.starts_with("_f16")) { Half::F16 } else { Half::Bf16 },
        out_f32: kernel.ends_with("_f32"),
    }
}

/// How many chunks a GEMM's reduction is cut into (`split_k`, params.h): each a layer of
/// the grid per batch, writing its own partial sums.
pub(crate) fn chunks(params: &BoneGemm) -> usize {
    if params.split_k > 0 { (params.k as usize).div_ceil(params.split_k as usize) } else { 1 }
}

/// One thread per element; `elements` fits the kernels' 32-bit indexing (checked by callers).
pub(crate) fn elementwise_config(kernel: &str, elements: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((elements as u32).div_ceil(BONE_MERGE_THREADS).max(1), 1, 1),
        block_dim: (BONE_MERGE_THREADS, 1, 1),
        shared_mem_bytes: elementwise_shared_bytes(kernel),
    }
}

/// The dynamic shared memory an element-wise kernel takes (params.h): dbias's per-warp sums;
/// the others take none.
fn elementwise_shared_bytes(kernel: &str) -> u32 {
    if kernel.starts_with("bone_bias_grad") { BONE_BIAS_GRAD_SHARED_BYTES } else { 0 }
}

/// Which of the crate's tensor-core GEMM kernels run [`Launcher::gemm`]. Both take the
/// same `BoneGemm` with the same tile and grid; the launch sequences name the mma.sync
/// instantiation (`bone_gemm_<A><B>_<out>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmKernels {
    /// `bone_gemm_*` (kernels/gemm.cuh): mma.sync, sm_80 and later.
    MmaSync,
    /// `bone_wgmma_*`, `bone_wgmma_wide_*` and `bone_wgmma_narrow_*` (kernels/gemm_wgmma.cuh):
    /// wgmma, sm_90a only.
    Wgmma,
    /// `bone_wgmma_ws_*`, `bone_wgmma_ws_wide_*` and `bone_wgmma_ws_narrow_*`
    /// (kernels/gemm_wgmma_ws.cuh): the wgmma GEMM with its loads on a warpgroup of their
    /// own, sm_90a only.
    WgmmaWarpSpecialized,
}

/// Fewest blocks a 128 x 256 grid must have to be chosen over 128 x 128 tiles: about one
/// per SM of an H100/H200. Below it, wide tiles would leave SMs idle (T = 512 times
/// N = 4096 is 64 wide tiles).
const WIDE_TILES_MIN_BLOCKS: u32 = FULL_GPU_BLOCKS as u32;

impl GemmKernels {
    /// The family an engine launches: its own, or mma.sync's on cuBLAS (for the crate's
    /// kernels cuBLAS has no version of).
    pub fn of(engine: GemmEngine) -> Self {
        match engine {
            GemmEngine::Native | GemmEngine::Cublas => GemmKernels::MmaSync,
            GemmEngine::Wgmma => GemmKernels::Wgmma,
            GemmEngine::WgmmaWarpSpecialized => GemmKernels::WgmmaWarpSpecialized,
        }
    }

    /// The kernel of this family that runs the instantiation `kernel` on `params` over
    /// `batches` on a GPU of `sms` SMs, and its launch ([`GemmKernels::with_tile_n`]).
    /// The wgmma families take 128 x 64 tiles where N is at most 64, 128 x 256 where N
    /// exceeds 128 and that still makes WIDE_TILES_MIN_BLOCKS blocks, else 128 x 128.
    pub fn select(self, kernel: &str, params: &BoneGemm, batches: usize, sms: u32) -> (String, LaunchConfig) {
        let (m, n, layers) = (params.m as u32, params.n as u32, (batches * chunks(params)) as u32);
        let wide_fills_gpu =
            m.div_ceil(BONE_GEMM_BM) * n.div_ceil(BONE_WGMMA_WIDE_BN) * layers >= WIDE_TILES_MIN_BLOCKS;
        let tile_n = match self {
            GemmKernels::MmaSync => BONE_GEMM_BN,
            _ if n <= BONE_WGMMA_NARROW_BN => BONE_WGMMA_NARROW_BN,
            _ if n > BONE_GEMM_BN && wide_fills_gpu => BONE_WGMMA_WIDE_BN,
            _ => BONE_GEMM_BN,
        };
        self.with_tile_n(kernel, tile_n, params, batches, sms)
    }

    /// The kernel of this family with `tile_n`-wide tiles (64, 128 or 256 for the wgmma
    /// families; mma.sync has 128 only), and its launch: one grid.z layer per batch and
    /// chunk, and in each one block per output tile (tiles of N along x, of M along y),
    /// or, for the warp-specialised kernels, which are persistent, at most as many blocks
    /// along x as `sms` SMs hold at once (one each, two of the narrow kernel's), which take
    /// the layer's tiles in turn. The block has the kernel's own threads.
    pub fn with_tile_n(
        self,
        kernel: &str,
        tile_n: u32,
        params: &BoneGemm,
        batches: usize,
        sms: u32,
    ) -> (String, LaunchConfig) {
        use GemmKernels::{MmaSync, Wgmma, WgmmaWarpSpecialized};
        let wgmma = |family: &str, threads, bytes| (kernel.replacen("bone_gemm_", family, 1), tile_n, threads, bytes);
        let (name, tile_n, threads, shared_mem_bytes) = match (self, tile_n) {
            (MmaSync, _) => (kernel.to_string(), BONE_GEMM_BN, BONE_GEMM_THREADS, BONE_GEMM_SMEM_BYTES),
            (Wgmma, BONE_WGMMA_NARROW_BN) => {
                wgmma("bone_wgmma_narrow_", BONE_GEMM_THREADS, BONE_WGMMA_NARROW_SMEM_BYTES)
            }
            (WgmmaWarpSpecialized, BONE_WGMMA_NARROW_BN) => {
                wgmma("bone_wgmma_ws_narrow_", BONE_WGMMA_WS_THREADS, BONE_WGMMA_WS_NARROW_SMEM_BYTES)
            }
            (Wgmma, BONE_WGMMA_WIDE_BN) => wgmma("bone_wgmma_wide_", BONE_GEMM_THREADS, BONE_WGMMA_WIDE_SMEM_BYTES),
            (Wgmma, BONE_GEMM_BN) => wgmma("bone_wgmma_", BONE_GEMM_THREADS, BONE_WGMMA_SMEM_BYTES),
            (WgmmaWarpSpecialized, BONE_WGMMA_WIDE_BN) => {
                wgmma("bone_wgmma_ws_wide_", BONE_WGMMA_WS_THREADS, BONE_WGMMA_WS_WIDE_SMEM_BYTES)
            }
            (WgmmaWarpSpecialized, BONE_GEMM_BN) => {
                wgmma("bone_wgmma_ws_", BONE_WGMMA_WS_THREADS, BONE_WGMMA_WS_SMEM_BYTES)
            }
            (_, other) => unreachable!("no {other}-wide wgmma kernel (callers pass 64, 128 or 256)"),
        };
        let (tiles_n, tiles_m) = ((params.n as u32).div_ceil(tile_n), (params.m as u32).div_ceil(BONE_GEMM_BM));
        let layers = (batches * chunks(params)) as u32;
        let grid_dim = if threads == BONE_WGMMA_WS_THREADS {
            let per_sm = if tile_n == BONE_WGMMA_NARROW_BN { 2 } else { 1 };
            ((tiles_n * tiles_m).min(sms.max(1) * per_sm), 1, layers)
        } else {
            (tiles_n, tiles_m, layers)
        };
        (name, LaunchConfig { grid_dim, block_dim: (threads, 1, 1), shared_mem_bytes })
    }
}

impl GemmKernels {
    /// This family's version of the fused kernel `kernel` (`bone_bat_col_grads_*`, its
    /// mma.sync version's name) and its launch over `grid`: the version's threads, and the
    /// main loop's and the tiles' dynamic shared memory.
    pub fn fused(self, kernel: &str, grid: (u32, u32)) -> (String, LaunchConfig) {
        let (name, threads, shared_mem_bytes) = match self {
            GemmKernels::MmaSync => (kernel.to_string(), BONE_GEMM_THREADS, BONE_BAT_COL_GRADS_SMEM_BYTES),
            GemmKernels::Wgmma => {
                (kernel.replacen("_x_", "_wgmma_x_", 1), BONE_GEMM_THREADS, BONE_BAT_COL_GRADS_WGMMA_SMEM_BYTES)
            }
            GemmKernels::WgmmaWarpSpecialized => {
                (kernel.replacen("_x_", "_ws_x_", 1), BONE_WGMMA_WS_THREADS, BONE_BAT_COL_GRADS_WS_SMEM_BYTES)
            }
        };
        (name, LaunchConfig { grid_dim: (grid.0, grid.1, 1), block_dim: (threads, 1, 1), shared_mem_bytes })
    }
}

impl Launcher for BoneKernels {
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        let (name, config) = self.gemm_kernels().select(kernel, params, batches, self.multiprocessors());
        let function = self.function_with_shared(&name, config.shared_mem_bytes)?;
        let mut builder = self.stream().launch_builder(&function);
        builder.arg(params);
        // SAFETY: `params` matches `BoneGemm` in kernels/params.h (bindgen-checked layout);
        // the callers build it from validated shapes: every operand holds the rows and
        // columns its leading dimension, strides and extents name for every batch, pointers
        // are 16-byte aligned and leading dimensions and strides multiples of 8, and the
        // kernel masks every load and store against m, n, k and k2.
        unsafe { builder.launch(config) }?;
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.launch_with_args(kernel, elementwise_config(kernel, elements), args)
    }

    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>> {
        let (name, config) = self.gemm_kernels().fused(kernel, grid);
        Some(self.launch_with_args(&name, config, args))
    }
}

impl BoneKernels {
    /// Launches `kernel` with `args` by value.
    fn launch_with_args(&self, kernel: &str, config: LaunchConfig, args: &[Arg]) -> Result<()> {
        let function = self.function_with_shared(kernel, config.shared_mem_bytes)?;
        let mut builder = self.stream().launch_builder(&function);
        for arg in args {
            match arg {
                Arg::I32(value) => builder.arg(value),
                Arg::Ptr(address) => builder.arg(address),
                Arg::Layer(layer) => builder.arg(layer),
                Arg::Setup(setup) => builder.arg(setup),
                Arg::Dropout(dropout) => builder.arg(dropout),
            };
        }
        // SAFETY: see `Launcher::elementwise` and `Launcher::fused`: the caller's arguments
        // match the kernel in type, order and extent, and every thread bounds-checks the
        // elements it reads and writes.
        unsafe { builder.launch(config) }?;
        Ok(())
    }
}

/// A GEMM description built up field by field (all strides 0, no second product, no
/// addend, no bias).
#[derive(Clone, Copy)]
pub(crate) struct Gemm(pub BoneGemm);

impl Gemm {
    /// `C[m, n] = A[m, k] B[n, k]^T` with the given addresses and leading dimensions.
    pub fn new(a: (u64, usize), b: (u64, usize), c: (u64, usize), [m, n, k]: [usize; 3]) -> Self {
        Gemm(BoneGemm {
            a: a.0 as *const _,
            b: b.0 as *const _,
            a2: std::ptr::null(),
            b2: std::ptr::null(),
            bias: std::ptr::null(),
            addend: std::ptr::null(),
            c: c.0 as *mut _,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            k2: 0,
            lda: a.1 as i32,
            ldb: b.1 as i32,
            lda2: 0,
            ldb2: 0,
            ldc: c.1 as i32,
            accumulate: 0,
            split_k: 0,
            stride_a: 0,
            stride_b: 0,
            stride_a2: 0,
            stride_b2: 0,
            stride_c: 0,
        })
    }

    /// Adds the second product `A2 B2^T` with K extent `k2`.
    pub fn second(mut self, a2: (u64, usize), b2: (u64, usize), k2: usize) -> Self {
        self.0.a2 = a2.0 as *const _;
        self.0.b2 = b2.0 as *const _;
        self.0.lda2 = a2.1 as i32;
        self.0.ldb2 = b2.1 as i32;
        self.0.k2 = k2 as i32;
        self
    }

    /// Per-batch element strides of A, B, A2, B2 and C.
    pub fn strides(mut self, [a, b, a2, b2, c]: [usize; 5]) -> Self {
        self.0.stride_a = a as i64;
        self.0.stride_b = b as i64;
        self.0.stride_a2 = a2 as i64;
        self.0.stride_b2 = b2 as i64;
        self.0.stride_c = c as i64;
        self
    }

    /// Adds `bias[n]` (bf16) to every row.
    pub fn bias(mut self, bias: u64) -> Self {
        self.0.bias = bias as *const _;
        self
    }

    /// Adds `addend` (`[m, n]` of the operands' type, laid out as C: its leading dimension and
    /// batch stride) exactly, in f32, before the one rounding: a product whose mixing matrix
    /// is I + B, as `X + X B^T`, keeps B's diagonal, which I + B in bf16 would lose. Never
    /// with [`Gemm::split_k`] (every chunk would add it).
    pub fn addend(mut self, addend: u64) -> Self {
        self.0.addend = addend as *const _;
        self
    }

    /// Adds to what C (f32) holds.
    pub fn accumulate(mut self, accumulate: bool) -> Self {
        self.0.accumulate = i32::from(accumulate);
        self
    }

    /// Cuts the reduction into chunks of `len` (a multiple of 8), all in the one launch:
    /// chunk c reduces each product over its own K within [c len, (c + 1) len), and chunk c
    /// of batch b writes its partial sums at C + (c batches + b) `layer_stride` elements.
    pub fn split_k(mut self, len: usize, layer_stride: usize) -> Self {
        debug_assert!(self.0.stride_c == 0 || self.0.stride_c == layer_stride as i64, "batches keep their C stride");
        debug_assert!(self.0.addend.is_null(), "each chunk would add the addend");
        self.0.split_k = len as i32;
        self.0.stride_c = layer_stride as i64;
        self
    }

    pub fn launch(&self, launcher: &impl Launcher, kernel: &str, batches: usize) -> Result<()> {
        // The kernels count a split's chunks over the first product's K.
        debug_assert!(self.0.split_k == 0 || self.0.k2 <= self.0.k, "a second product longer than the first, split");
        launcher.gemm(kernel, &self.0, batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel chosen and its grid's x extent (tiles along N).
    fn chosen(m: usize, n: usize, batches: usize) -> (String, u32) {
        let params = Gemm::new((0, 8), (0, 8), (0, 8), [m, n, 64]).0;
        let (name, config) = GemmKernels::Wgmma.select("bone_gemm_kk_bf16_bf16", &params, batches, 132);
        (name, config.grid_dim.0)
    }

    #[test]
    fn the_warp_specialised_grid_is_persistent_within_each_layer() {
        let params = Gemm::new((0, 8), (0, 8), (0, 8), [4096, 4096, 64]).0;
        let ws = |tile_n, batches, sms| {
            GemmKernels::WgmmaWarpSpecialized.with_tile_n("bone_gemm_kk_bf16_bf16", tile_n, &params, batches, sms).1
        };
        // 32 x 16 wide tiles on 132 SMs: 132 blocks take them in turn.
        assert_eq!(ws(256, 1, 132).grid_dim, (132, 1, 1));
        assert_eq!(ws(256, 3, 132).grid_dim, (132, 1, 3));
        // Fewer tiles than SMs: one block each.
        assert_eq!(ws(256, 1, 1000).grid_dim, (512, 1, 1));
        assert_eq!(ws(128, 1, 132).block_dim, (BONE_WGMMA_WS_THREADS, 1, 1));
        // N <= 64: the narrow kernel, two blocks an SM (32 tiles here, 264 on 4 layers).
        let narrow = Gemm::new((0, 8), (0, 8), (0, 8), [4096, 64, 64]).0;
        let (name, config) = GemmKernels::WgmmaWarpSpecialized.select("bone_gemm_kk_bf16_bf16", &narrow, 1, 132);
        assert_eq!((name.as_str(), config.grid_dim), ("bone_wgmma_ws_narrow_kk_bf16_bf16", (32, 1, 1)));
        let tall = Gemm::new((0, 8), (0, 8), (0, 8), [65536, 64, 64]).0;
        assert_eq!(
            GemmKernels::WgmmaWarpSpecialized.select("bone_gemm_kk_bf16_bf16", &tall, 4, 132).1.grid_dim,
            (264, 1, 4)
        );
    }

    #[test]
    fn wgmma_tiles_follow_n_and_the_grid() {
        // The adapter's r-wide products: 64-wide tiles.
        assert_eq!(chosen(4096, 64, 1), ("bone_wgmma_narrow_kk_bf16_bf16".into(), 1));
        // Large products: 256-wide tiles (32 x 16 = 512 blocks).
        assert_eq!(chosen(4096, 4096, 1), ("bone_wgmma_wide_kk_bf16_bf16".into(), 16));
        // T = 512: 256-wide tiles would make 64 blocks; 128-wide make 128.
        assert_eq!(chosen(512, 4096, 1), ("bone_wgmma_kk_bf16_bf16".into(), 32));
        // Batches count toward the grid.
        assert_eq!(chosen(512, 4096, 2), ("bone_wgmma_wide_kk_bf16_bf16".into(), 16));
        assert_eq!(chosen(4096, 96, 1), ("bone_wgmma_kk_bf16_bf16".into(), 1));
    }
}
