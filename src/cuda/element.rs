//! The storage types the kernels take, and the suffix that names their instantiation.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A kernel storage type: `f32`, `half::f16` or `half::bf16`. Accumulation is always f32.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + sealed::Sealed {
    /// The suffix of the kernel names instantiated for this type (`f32`, `f16`, `bf16`).
    const KERNEL_SUFFIX: &'static str;
    /// Widens to f64 (exact), for comparing with the oracle.
    fn to_f64(self) -> f64;
    /// Rounds from f64 to nearest.
    fn from_f64(value: f64) -> Self;
    /// Reads one value from `size_of::<Self>()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// Appends the value's little-endian bytes.
    fn write_le(self, out: &mut Vec<u8>);
}

impl Element for f32 {
    const KERNEL_SUFFIX: &'static str = "f32";
    fn read_le(bytes: &[u8]) -> Self {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&bytes[..4]);
        f32::from_le_bytes(raw)
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self.into()
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Element for f16 {
    const KERNEL_SUFFIX: &'static str = "f16";
    fn read_le(bytes: &[u8]) -> Self {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(&bytes[..2]);
        f16::from_le_bytes(raw)
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self.into()
    }
    fn from_f64(value: f64) -> Self {
        f16::from_f32(value as f32) // through f32, as PyTorch rounds; see adapter::dtype::encode
    }
}

impl Element for bf16 {
    const KERNEL_SUFFIX: &'static str = "bf16";
    fn read_le(bytes: &[u8]) -> Self {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(&bytes[..2]);
        bf16::from_le_bytes(raw)
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self.into()
    }
    fn from_f64(value: f64) -> Self {
        bf16::from_f32(value as f32) // through f32, as PyTorch rounds; see adapter::dtype::encode
    }
}
