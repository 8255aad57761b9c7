//! Validated layer shapes. Nothing runs, on the CPU or the GPU, before the shape
//! and every buffer length have been checked here.

use crate::error::{BoneError, Dim, Result};
use crate::variant::Variant;

/// The sizes of one adapted linear layer, named as in `bone-math.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// K: `in_features` (columns of W, `nn.Linear.weight` is `[N, K]`).
    pub k: usize,
    /// N: `out_features` (rows of W).
    pub n: usize,
    /// r: the block size (PEFT's `r`).
    pub r: usize,
}

/// Largest element count a kernel addresses with 32-bit indices.
pub const KERNEL_INDEX_LIMIT: usize = i32::MAX as usize;

/// A validated (variant, K, N, r): every size divides as the variant needs and
/// every tensor's element count fits in `usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    variant: Variant,
    k: usize,
    n: usize,
    r: usize,
}

fn product(what: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(BoneError::Overflow { what, a, b })
}

fn nonzero(dim: Dim, value: usize) -> Result<()> {
    if value == 0 {
        return Err(BoneError::ZeroDim { dim });
    }
    Ok(())
}

impl LayerShape {
    /// Validates the layer's sizes for `variant`.
    pub fn new(variant: Variant, dims: Dims) -> Result<Self> {
        let Dims { k, n, r } = dims;
        nonzero(Dim::In, k)?;
        nonzero(Dim::Out, n)?;
        nonzero(Dim::Block, r)?;
        match variant {
            Variant::BatCol | Variant::BatRow => {
                for (dim, value) in [(Dim::Out, n), (Dim::In, k)] {
                    if value % r != 0 {
                        let variant = variant.name();
                        return Err(BoneError::NotDivisible { dim, value, r, variant });
                    }
                }
            }
            Variant::Shared | Variant::Mini { .. } => {
                if r > k {
                    return Err(BoneError::BlockTooLarge { r, k });
                }
            }
        }
        if let Variant::Mini { mini_r } = variant {
            nonzero(Dim::MiniR, mini_r)?;
            if n % mini_r != 0 {
                return Err(BoneError::MiniNotDivisible { n, mini_r });
            }
        }
        let shape = LayerShape { variant, k, n, r };
        // B never has more elements than W (r <= K, r <= N, mini_r <= N), so one check covers both.
        product("W [N, K]", n, k)?;
        Ok(shape)
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }
    /// K: `in_features`.
    pub fn k(&self) -> usize {
        self.k
    }
    /// N: `out_features`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// r: the block size.
    pub fn r(&self) -> usize {
        self.r
    }

    /// Number of r-wide chunks of X (the last one zero-padded when r does not divide K).
    pub fn k_chunks(&self) -> usize {
        self.k.div_ceil(self.r)
    }

    /// The shape of the trainable tensor B, exactly as PEFT stores it.
    pub fn adapter_dims(&self) -> Vec<usize> {
        let (k, n, r) = (self.k, self.n, self.r);
        match self.variant {
            Variant::BatCol => vec![n / r, r, r],
            Variant::BatRow => vec![k / r, r, r],
            Variant::Shared => vec![r, n],
            Variant::Mini { mini_r } => vec![r, mini_r],
        }
    }

    /// Elements of B (the trainable parameter count of the layer).
    pub fn adapter_len(&self) -> usize {
        self.adapter_dims().iter().product()
    }

    /// Elements of W (`[N, K]`); cannot overflow, checked in [`LayerShape::new`].
    pub fn weight_len(&self) -> usize {
        self.n * self.k
    }

    /// Checks a token count against this layer: T >= 1 and `[T, K]`, `[T, N]` fit in usize.
    pub fn check_tokens(&self, t: usize) -> Result<()> {
        nonzero(Dim::Tokens, t)?;
        product("X [T, K]", t, self.k)?;
        product("Y [T, N]", t, self.n)?;
        Ok(())
    }

    /// Checks that every tensor of a `t`-token call fits the kernels' 32-bit indexing.
    pub fn check_kernel_indexing(&self, t: Option<usize>) -> Result<()> {
        let mut tensors = vec![("W [N, K]", self.weight_len()), ("B", self.adapter_len())];
        if let Some(t) = t {
            self.check_tokens(t)?;
            tensors.push(("X [T, K]", t * self.k));
            tensors.push(("Y [T, N]", t * self.n));
        }
        for (what, count) in tensors {
            if count > KERNEL_INDEX_LIMIT {
                return Err(BoneError::TooLargeForKernels { what, count, limit: KERNEL_INDEX_LIMIT });
            }
        }
        Ok(())
    }

    /// The layout text used in length errors, e.g. `"[N/r, r, r] = [64, 64, 64]"`.
    pub fn adapter_layout(&self) -> String {
        format!("{} = {:?} for {}", self.variant.adapter_layout(), self.adapter_dims(), self.variant)
    }
}

/// Checks one buffer's length; `layout` explains where `expected` comes from.
pub fn check_len(buffer: &'static str, actual: usize, expected: usize, layout: impl FnOnce() -> String) -> Result<()> {
    if actual != expected {
        return Err(BoneError::LengthMismatch { buffer, expected, actual, layout: layout() });
    }
    Ok(())
}
