//! Row-major GEMMs through cuBLAS (which is column-major).

use std::sync::{Arc, OnceLock};

use cudarc::cublas::{CudaBlas, result, sys};
use cudarc::driver::CudaStream;

use crate::error::{BoneError, Result};

/// A cuBLAS handle on one stream, speaking row-major.
pub struct RowMajorBlas {
    blas: CudaBlas,
    stream: Arc<CudaStream>,
}

/// The 16-bit type of a product's operands (and of its output unless that is f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Half {
    Bf16,
    F16,
}

impl Half {
    /// The kernel-name suffix of this type (`bf16`, `f16`).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Half::Bf16 => "bf16",
            Half::F16 => "f16",
        }
    }

    fn data_type(self) -> sys::cudaDataType_t {
        match self {
            Half::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
            Half::F16 => sys::cudaDataType_t::CUDA_R_16F,
        }
    }
}

/// One row-major 16-bit operand: device address, leading dimension, whether it is used
/// transposed, and its element stride between batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand {
    pub address: u64,
    pub ld: usize,
    pub transposed: bool,
    pub stride: usize,
}

impl Operand {
    pub(crate) fn new(address: u64, ld: usize, transposed: bool) -> Self {
        Operand { address, ld, transposed, stride: 0 }
    }
}

/// A row-major output: address, leading dimension, batch stride (elements), f32 or the
/// operands' 16-bit type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    pub address: u64,
    pub ld: usize,
    pub stride: usize,
    pub f32: bool,
}

/// Whether the cuBLAS library loads here: looked up once per process (a handle's creation,
/// its engine choice and the engine lists all ask).
pub(crate) fn library_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the library by name (libloading), which runs its
    // initialisers as any dynamic load of cuBLAS does; nothing from it is called here.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

impl RowMajorBlas {
    /// A handle on `stream`; [`BoneError::Cublas`] where the cuBLAS library cannot be loaded
    /// (cudarc would panic on its first call instead).
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        if !library_present() {
            return Err(BoneError::Cublas("the cuBLAS library (libcublas) was not found on the library path".into()));
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| BoneError::Cublas(format!("{e:?}")))?;
        // cuBLAS picks its own split-K for long reductions with few output tiles (the
        // launch sequences hand it those whole); its partial sums then stay in f32, not in
        // a 16-bit output's type, which it would otherwise be allowed to use.
        let mode = sys::cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
        // SAFETY: the handle is live (owned by `blas`); setting its math mode touches nothing else.
        unsafe { sys::cublasSetMathMode(*blas.handle(), mode) }
            .result()
            .map_err(|e| BoneError::Cublas(format!("cublasSetMathMode: {e:?}")))?;
        Ok(RowMajorBlas { blas, stream })
    }

    /// The stream every GEMM of this handle is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `C[m, n] = op(A) op(B) + beta C` with bf16 A and B, f32 accumulation, C bf16
    /// (`c_f32 = false`) or f32, all row-major; `op(A)` is `[m, k]`, `op(B)` is `[k, n]`.
    ///
    /// # Safety
    /// As [`RowMajorBlas::gemm_batched`] with one batch.
    #[allow(clippy::too_many_arguments)] // a GEMM's own parameters
    pub(crate) unsafe fn gemm_row_major(
        &self,
        shape: [usize; 3],
        a: Operand,
        b: Operand,
        c: u64,
        ldc: usize,
        beta: f32,
        c_f32: bool,
    ) -> Result<()> {
        let out = Output { address: c, ld: ldc, stride: 0, f32: c_f32 };
        // SAFETY: the caller's contract is this function's.
        unsafe { self.gemm_batched(shape, (a, b, Half::Bf16), out, beta, 1) }
    }

    /// `batches` independent `C = op(A) op(B) + beta C` on `half` operands, each operand
    /// advanced by its stride.
    ///
    /// # Safety
    /// Every address must hold, for every batch, the rows and columns its leading
    /// dimension, stride and the sizes imply, in this handle's stream's context, and C
    /// must not alias A or B.
    pub(crate) unsafe fn gemm_batched(
        &self,
        [m, n, k]: [usize; 3],
        (a, b, half): (Operand, Operand, Half),
        out: Output,
        beta: f32,
        batches: usize,
    ) -> Result<()> {
        let op = |t: bool| if t { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
        let alpha = 1.0f32;
        let c_type = if out.f32 { sys::cudaDataType_t::CUDA_R_32F } else { half.data_type() };
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major
        // buffer read column-major is its transpose: swap the operands, keep their ops.
        // SAFETY: the caller's contract above covers every address; the scalars live on this stack frame.
        unsafe {
            result::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(b.transposed),
                op(a.transposed),
                n as i32,
                m as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                b.address as *const _,
                half.data_type(),
                b.ld as i32,
                b.stride as i64,
                a.address as *const _,
                half.data_type(),
                a.ld as i32,
                a.stride as i64,
                (&beta) as *const f32 as *const _,
                out.address as *mut _,
                c_type,
                out.ld as i32,
                out.stride as i64,
                batches as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| BoneError::Cublas(format!("gemm: {e:?}")))
    }
}
