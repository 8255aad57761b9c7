//! Launch plumbing shared by the forward and backward passes: one thread per element
//! for the small passes, 128 x 128 tiles for the GEMM.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::handle::BoneKernels;
use super::params::{BONE_GEMM_BM, BONE_GEMM_BN, BONE_GEMM_THREADS, BONE_MERGE_THREADS, BoneGemm};
use crate::error::Result;

/// Launches kernel `$name` with one thread per element over `$elements` elements.
///
/// Every call site passes arguments whose types and order match the kernel's
/// signature in kernels/*.cu, and device addresses that cover everything the kernel
/// reads or writes for that element count (validated before the first launch of a pass).
macro_rules! launch_elementwise {
    ($kernels:expr, $name:expr, $elements:expr, $($arg:expr),+ $(,)?) => {{
        let function = $kernels.function($name)?;
        let config = $crate::cuda::launch::elementwise_config($elements);
        let mut builder = $kernels.stream().launch_builder(&function);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, $arg); )+
        // SAFETY: see the macro's contract above: argument types, order and extents
        // match the kernel, whose every thread bounds-checks its element index.
        unsafe { builder.launch(config) }?;
    }};
}
pub(crate) use launch_elementwise;

/// One thread per element; `elements` fits the kernels' 32-bit indexing (checked by callers).
pub(crate) fn elementwise_config(elements: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((elements as u32).div_ceil(BONE_MERGE_THREADS).max(1), 1, 1),
        block_dim: (BONE_MERGE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl BoneKernels {
    /// `C = A1 B1^T + A2 B2^T (+ bias)` with the instantiation `kernel` (see kernels/gemm.cu).
    pub(crate) fn gemm(&self, kernel: &str, params: &BoneGemm) -> Result<()> {
        let function = self.function(kernel)?;
        let config = LaunchConfig {
            grid_dim: ((params.n as u32).div_ceil(BONE_GEMM_BN), (params.m as u32).div_ceil(BONE_GEMM_BM), 1),
            block_dim: (BONE_GEMM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut builder = self.stream().launch_builder(&function);
        builder.arg(params);
        // SAFETY: `params` matches `BoneGemm` in kernels/params.h (bindgen-checked layout);
        // the callers in this module build it from validated shapes: every operand holds
        // the rows and columns its leading dimension and extents name, pointers are 16-byte
        // aligned and leading dimensions multiples of 8, and the kernel masks every load
        // and store against m, n, k and k2.
        unsafe { builder.launch(config) }?;
        Ok(())
    }
}

/// A GEMM with only the first product, no bias, no accumulation; fill in the rest.
pub(crate) fn gemm_params(a: u64, lda: usize, b: u64, ldb: usize, c: u64, ldc: usize, mnk: [usize; 3]) -> BoneGemm {
    let [m, n, k] = mnk;
    BoneGemm {
        a: a as *const _,
        b: b as *const _,
        a2: std::ptr::null(),
        b2: std::ptr::null(),
        bias: std::ptr::null(),
        c: c as *mut _,
        m: m as i32,
        n: n as i32,
        k: k as i32,
        k2: 0,
        lda: lda as i32,
        ldb: ldb as i32,
        lda2: 0,
        ldb2: 0,
        ldc: ldc as i32,
        accumulate: 0,
    }
}

/// Adds the second product `A2 B2^T` (K extent `k2`) to a GEMM.
pub(crate) fn with_second(mut params: BoneGemm, a2: u64, lda2: usize, b2: u64, ldb2: usize, k2: usize) -> BoneGemm {
    params.a2 = a2 as *const _;
    params.b2 = b2 as *const _;
    params.lda2 = lda2 as i32;
    params.ldb2 = ldb2 as i32;
    params.k2 = k2 as i32;
    params
}
