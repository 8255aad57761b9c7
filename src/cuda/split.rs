//! The same launch sequence on a library GEMM (cuBLAS): each `BoneGemm` becomes the
//! single products a library call takes (the appended adapter product as a second call
//! with beta = 1) and, where it has one, a bias-add kernel. A short two-part product (the
//! r-wide blocks: BatCol's W' slab, BatRow's dX_i) stays on the crate's own GEMM instead:
//! it is memory-bound, and the library's second call would read and write C once more. So
//! does a product with an addend (BatRow's X~): a library call would need C filled with it
//! first.
//! The crate's unit tests run this split on the CPU emulator too, so the translation is
//! checked against the oracle.

use super::BoneKernels;
use super::baseline::{Half, Operand, Output, RowMajorBlas};
use super::launch::{Arg, GemmKind, Launcher, gemm_kind};
use super::params::BoneGemm;
use crate::error::Result;

/// One `C = op(A) op(B) + beta C` on `half` operands, batched, row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    pub shape: [usize; 3],
    pub a: Operand,
    pub b: Operand,
    pub half: Half,
    pub out: Output,
    pub beta: f32,
    pub batches: usize,
}

/// Runs single products, the element-wise kernels, and the crate's own GEMM.
pub(crate) trait ProductRunner {
    fn product(&self, product: &Product) -> Result<()>;
    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()>;
    /// `params` on the crate's own GEMM, as [`Launcher::gemm`].
    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()>;
}

impl<R: ProductRunner> ProductRunner for &R {
    fn product(&self, product: &Product) -> Result<()> {
        (**self).product(product)
    }
    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        (**self).elementwise(kernel, elements, args)
    }
    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        (**self).own_gemm(kernel, params, batches)
    }
}

/// A two-part product reducing over at most this much in all (k + k2: two r-wide blocks)
/// runs on the crate's own GEMM in one pass over C.
const SHORT_TWO_PART_K: i32 = 256;

/// A [`Launcher`] that splits every GEMM into [`Product`]s for its runner.
pub(crate) struct Split<R>(pub R);

/// The products of one `BoneGemm`: `C (+)= A1 B1^T`, then `C += A2 B2^T` when it has one.
/// A library GEMM gets whole reductions (it picks its own split-K: `cuts_reductions`), so
/// `split_k` is never set here.
pub(crate) fn products(kernel: &str, p: &BoneGemm, batches: usize) -> Vec<Product> {
    assert_eq!(p.split_k, 0, "{kernel}: the launch sequences hand a library GEMM whole reductions");
    assert!(p.addend.is_null(), "{kernel}: a product with an addend runs on the crate's own GEMM");
    let GemmKind { a_k_major, b_k_major, half, out_f32 } = gemm_kind(kernel);
    let (m, n) = (p.m as usize, p.n as usize);
    // C = A B^T with A [m, k] and B [n, k]: op(A) is A itself when K-major; op(B) = B^T is
    // B's storage transposed when B is K-major ([n][k]), as stored when MN-major ([k][n]).
    let product = |(a, lda, stride_a), (b, ldb, stride_b), extent: i32, beta: f32| {
        let operand = |address: *const std::ffi::c_void, ld: i32, stride: i64, transposed: bool| Operand {
            address: address as u64,
            ld: ld as usize,
            transposed,
            stride: stride as usize,
        };
        Product {
            shape: [m, n, extent as usize],
            a: operand(a, lda, stride_a, !a_k_major),
            b: operand(b, ldb, stride_b, b_k_major),
            half,
            out: Output { address: p.c as u64, ld: p.ldc as usize, stride: p.stride_c as usize, f32: out_f32 },
            beta,
            batches,
        }
    };
    let mut products = vec![product(
        (p.a, p.lda, p.stride_a),
        (p.b, p.ldb, p.stride_b),
        p.k,
        if p.accumulate != 0 { 1.0 } else { 0.0 },
    )];
    if p.k2 > 0 {
        products.push(product((p.a2, p.lda2, p.stride_a2), (p.b2, p.ldb2, p.stride_b2), p.k2, 1.0));
    }
    products
}

impl<R: ProductRunner> Launcher for Split<R> {
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        let short_two_part = params.k2 > 0 && params.k + params.k2 <= SHORT_TWO_PART_K;
        if short_two_part || !params.addend.is_null() {
            return self.0.own_gemm(kernel, params, batches);
        }
        for product in products(kernel, params, batches) {
            self.0.product(&product)?;
        }
        if !params.bias.is_null() {
            assert_eq!(batches, 1, "the launch sequences add a bias only to unbatched GEMMs");
            let (rows, cols) = (params.m as usize, params.n as usize);
            let args = [
                Arg::I32(params.m),
                Arg::I32(params.n),
                Arg::I32(params.ldc),
                Arg::Ptr(params.bias as u64),
                Arg::Ptr(params.c as u64),
            ];
            let bias_kernel = format!("bone_add_bias_x_{}", gemm_kind(kernel).half.suffix());
            // A thread per 8 adjacent elements.
            self.0.elementwise(&bias_kernel, rows * cols / 8, &args)?;
        }
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.0.elementwise(kernel, elements, args)
    }

    /// A library GEMM runs the products: the unfused sequence.
    fn fused(&self, _: &str, _: (u32, u32), _: &[Arg]) -> Option<Result<()>> {
        None
    }

    /// The library picks its own split-K.
    fn cuts_reductions(&self) -> bool {
        false
    }
}

/// cuBLAS for the products, this crate's kernels for everything else.
pub(crate) struct Cublas<'a> {
    pub kernels: &'a BoneKernels,
    pub blas: &'a RowMajorBlas,
}

impl ProductRunner for Cublas<'_> {
    fn product(&self, p: &Product) -> Result<()> {
        // SAFETY: every product comes from a `BoneGemm` that a launch sequence built from a
        // validated call; the split keeps its addresses, leading dimensions, strides, batch
        // count and sizes, so each operand holds what cuBLAS reads, and C aliases neither.
        unsafe { self.blas.gemm_batched(p.shape, (p.a, p.b, p.half), p.out, p.beta, p.batches) }
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.kernels.elementwise(kernel, elements, args)
    }

    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        self.kernels.gemm(kernel, params, batches)
    }
}
