//! The same launch sequence on a library GEMM (cuBLAS): each `BoneGemm` becomes the
//! single products a library call takes (the appended adapter product as a second call
//! with beta = 1) and, where it has one, a bias-add kernel. The crate's unit tests run
//! this split on the CPU emulator too, so the translation is checked against the oracle.

use super::BoneKernels;
use super::baseline::{Half, Operand, Output, RowMajorBlas};
use super::launch::{Arg, GemmKind, Launcher, chunks, gemm_kind};
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

/// Runs single products and the element-wise kernels.
pub(crate) trait ProductRunner {
    fn product(&self, product: &Product) -> Result<()>;
    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()>;
}

impl<R: ProductRunner> ProductRunner for &R {
    fn product(&self, product: &Product) -> Result<()> {
        (**self).product(product)
    }
    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        (**self).elementwise(kernel, elements, args)
    }
}

/// A [`Launcher`] that splits every GEMM into [`Product`]s for its runner.
pub(crate) struct Split<R>(pub R);

/// The products of one `BoneGemm`: `C (+)= A1 B1^T`, then `C += A2 B2^T` when it has one;
/// for a reduction cut by `split_k`, each chunk into its own partial sums: an unbatched
/// GEMM's whole chunks as one strided batch (the chunks are equally spaced), then its
/// shorter last chunk; a batched GEMM's chunks one by one, each over the batches. A second
/// product shorter than the run it falls in goes chunk by chunk.
pub(crate) fn products(kernel: &str, p: &BoneGemm, batches: usize) -> Vec<Product> {
    let GemmKind { a_k_major, b_k_major, half, out_f32 } = gemm_kind(kernel);
    let (m, n, k, k2) = (p.m as usize, p.n as usize, p.k as usize, p.k2 as usize);
    let len = if p.split_k > 0 { p.split_k as usize } else { k.max(k2) };
    // Runs of chunks that are one product each: (first chunk, chunks).
    let runs: Vec<(usize, usize)> = match (chunks(p), batches) {
        (1, _) => vec![(0, 1)],
        (count, 1) if k / len > 1 => {
            let whole = k / len;
            let mut runs = vec![(0, whole)];
            runs.extend((whole..count).map(|c| (c, 1)));
            runs
        }
        (count, _) => (0..count).map(|c| (c, 1)).collect(),
    };
    // The product over `extent` of K from chunk `first` on, `count` chunks as a strided
    // batch (or the GEMM's own batches). C = A B^T with A [m, k] and B [n, k]: op(A) is A
    // itself when K-major; op(B) = B^T is B's storage transposed when B is K-major
    // ([n][k]), as stored when MN-major ([k][n]). A chunk starting at k0 starts k0 columns
    // (K-major) or k0 rows (MN-major) in, and the next chunk len further.
    let product = |(first, count): (usize, usize), second: bool, extent: usize| {
        let k0 = first * len;
        let operand = |address: *const std::ffi::c_void, ld: i32, stride: i64, k_major: bool, transposed: bool| {
            let per_k = if k_major { 1 } else { ld as usize };
            Operand {
                address: address as u64 + (2 * k0 * per_k) as u64,
                ld: ld as usize,
                transposed,
                stride: if count > 1 { len * per_k } else { stride as usize },
            }
        };
        let element = if out_f32 { 4 } else { 2 };
        let out = Output {
            address: p.c as u64 + (first * batches * p.stride_c as usize * element) as u64,
            ld: p.ldc as usize,
            stride: p.stride_c as usize,
            f32: out_f32,
        };
        let (a, b) = if second {
            (
                operand(p.a2, p.lda2, p.stride_a2, a_k_major, !a_k_major),
                operand(p.b2, p.ldb2, p.stride_b2, b_k_major, b_k_major),
            )
        } else {
            (
                operand(p.a, p.lda, p.stride_a, a_k_major, !a_k_major),
                operand(p.b, p.ldb, p.stride_b, b_k_major, b_k_major),
            )
        };
        let beta = if second || p.accumulate != 0 { 1.0 } else { 0.0 };
        Product { shape: [m, n, extent], a, b, half, out, beta, batches: if count > 1 { count } else { batches } }
    };
    // How much of a product with K extent `total` chunk `c` reduces.
    let within = |total: usize, c: usize| total.min((c + 1) * len).saturating_sub(c * len);
    let mut products = Vec::new();
    for (first, count) in runs {
        products.push(product((first, count), false, within(k, first)));
        if k2 == 0 {
            continue;
        }
        if k2 >= (first + count) * len || (count == 1 && within(k2, first) > 0) {
            products.push(product((first, count), true, within(k2, first)));
        } else {
            let chunks = (first..first + count).filter(|&c| within(k2, c) > 0);
            products.extend(chunks.map(|c| product((c, 1), true, within(k2, c))));
        }
    }
    products
}

impl<R: ProductRunner> Launcher for Split<R> {
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
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
            self.0.elementwise(&bias_kernel, rows * cols, &args)?;
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
}
