//! Little-endian tensor bytes to and from f64, for the dtypes a linear weight has.

use half::{bf16, f16};
use safetensors::Dtype;

/// The values of a BF16, F16, F32 or F64 tensor; `None` for any other dtype.
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    let values = match dtype {
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        _ => return None,
    };
    Some(values)
}

/// `values` rounded to nearest-even in `dtype`, as little-endian bytes; `None` for a
/// dtype [`decode`] does not read either. Half types round through f32, the way
/// PyTorch rounds its f32 results (`half`'s f64 conversion drops the low 32 mantissa
/// bits first, so it is no more exact than this).
pub fn encode(dtype: Dtype, values: &[f64]) -> Option<Vec<u8>> {
    let bytes = match dtype {
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v as f32).to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v as f32).to_le_bytes()).collect(),
        Dtype::F32 => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        Dtype::F64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        _ => return None,
    };
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rounds_to_nearest() {
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32, Dtype::F64] {
            let values = [0.5, -1.25, 3.0, 0.0];
            assert_eq!(decode(dtype, &encode(dtype, &values).unwrap()).unwrap(), values, "{dtype:?}");
        }
        // 1 + 2^-8 is halfway between two bf16 values and rounds to even (1.0); just above rounds up.
        assert_eq!(decode(Dtype::BF16, &encode(Dtype::BF16, &[1.0 + 2f64.powi(-8)]).unwrap()).unwrap(), [1.0]);
        assert_eq!(
            decode(Dtype::BF16, &encode(Dtype::BF16, &[1.0 + 2f64.powi(-8) + 1e-6]).unwrap()).unwrap(),
            [1.0078125]
        );
        assert!(decode(Dtype::I64, &[0; 8]).is_none() && encode(Dtype::I64, &[0.0]).is_none());
    }
}
