//! The crate's one error type. Every message names the offending dimension,
//! buffer or block and its value, so a user can fix the call without reading code.

use std::fmt;

/// A dimension of the problem, named as in the docs (`bone-math.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// T: tokens (batch x sequence, flattened).
    Tokens,
    /// K: `in_features`.
    In,
    /// N: `out_features`.
    Out,
    /// r: the block size (PEFT's `r`).
    Block,
    /// MiSS `mini_r`.
    MiniR,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dim::Tokens => "T (tokens)",
            Dim::In => "K (in_features)",
            Dim::Out => "N (out_features)",
            Dim::Block => "r (block size)",
            Dim::MiniR => "mini_r",
        })
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum BoneError {
    #[error("{dim} must be at least 1, got 0")]
    ZeroDim { dim: Dim },

    #[error("{dim} = {value} is not a multiple of r = {r}; {variant} cuts W into r x r blocks")]
    NotDivisible { dim: Dim, value: usize, r: usize, variant: &'static str },

    #[error(
        "N (out_features) = {n} is not a multiple of mini_r = {mini_r}; MiSS mini repeats its [r, mini_r] block along N"
    )]
    MiniNotDivisible { n: usize, mini_r: usize },

    #[error("r (block size) = {r} exceeds K (in_features) = {k}; the shared block needs r <= K (as PEFT)")]
    BlockTooLarge { r: usize, k: usize },

    #[error("{what} = {a} x {b} elements overflows usize")]
    Overflow { what: &'static str, a: usize, b: usize },

    #[error(
        "{what} has {count} elements, more than the {limit} that the kernels' 32-bit indexing allows; split the call along T"
    )]
    TooLargeForKernels { what: &'static str, count: usize, limit: usize },

    #[error("buffer `{buffer}` has {actual} elements, expected {expected} ({layout})")]
    LengthMismatch { buffer: &'static str, expected: usize, actual: usize, layout: String },

    #[error("adapter block {block} holds NaN or infinity; the merge cannot be undone")]
    NonFiniteAdapter { block: usize },

    #[error("I + B of adapter block {block} is singular; the merge cannot be undone")]
    Singular { block: usize },

    #[error(
        "I + B of adapter block {block} has condition number {condition:.3e}, above the limit {limit:.1e}; unmerging would amplify rounding error by that much"
    )]
    IllConditioned { block: usize, condition: f64, limit: f64 },

    #[error(
        "the condition-number limit for unmerging is {limit}; it must be a number of at least 1 (every condition number is; infinity accepts every invertible block)"
    )]
    InvalidConditionLimit { limit: f64 },

    #[error(
        "bone-kernels was built without its CUDA kernels (no nvcc was found at build time). \
         Install CUDA 13.0 nvcc (e.g. `scripts/install-nvcc`, then `eval \"$(scripts/install-nvcc --print-env)\"`) \
         and rebuild; build.rs looks at $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin and PATH"
    )]
    KernelsNotBuilt,

    #[error("dropout probability p = {p} is outside [0, 1)")]
    InvalidDropout { p: f64 },

    #[error("dropout applies to the shared block and mini (PEFT's miss_dropout); PEFT gives {variant} none")]
    DropoutOnBat { variant: &'static str },

    #[error(
        "{variant}'s backward reads X itself; only the shared block and mini can keep their block sums S [T, r] instead"
    )]
    BlockSumsOnBat { variant: &'static str },

    #[error("the GPU kernels do not support this yet: {0}")]
    UnsupportedByKernels(String),

    #[error(
        "device buffer `{buffer}` starts at an address that is not 16-byte aligned; pass a view that starts at a multiple of 8 elements"
    )]
    Misaligned { buffer: &'static str },

    #[error(
        "the workspace orders its memory on another stream than the handle's; create it with Workspace::new(kernels.stream().clone())"
    )]
    WorkspaceStream,

    #[error("cuBLAS: {0}")]
    Cublas(String),

    #[error("no usable CUDA device: {0}")]
    NoDevice(String),

    #[error("buffer `{buffer}` lives in a different CUDA context than the handle's stream")]
    WrongContext { buffer: &'static str },

    // The CUresult name, not DriverError's Display: that asks libcuda, which may be absent.
    #[error("CUDA driver error: {:?}", .0.0)]
    Driver(#[from] cudarc::driver::DriverError),
}

/// Shorthand used across the crate.
pub type Result<T, E = BoneError> = std::result::Result<T, E>;
