//! dbias = the column sums of dY, for every variant's backward: one read of dY on CUDA
//! cores (`bone_bias_grad`). Its blocks each take a strip of 64 columns and, where that
//! leaves SMs idle (N / 64 strips are few against T rows), a chunk of the tokens; the
//! chunks' sums are then added in order (`bone_sum_chunks`), so dbias stays bitwise
//! reproducible.

use super::call::Call;
use super::launch::{Arg, Launcher};
use super::params::{BONE_BIAS_GRAD_COLUMNS, BONE_MERGE_THREADS};
use super::token_chunks;
use crate::error::Result;

/// Blocks worth aiming for: about four an SM of an H100/H200, so that each SM has enough
/// 16-byte loads in flight to draw its share of the memory bandwidth.
const TARGET_BLOCKS: usize = 512;
/// Fewest tokens worth a chunk of their own.
const MIN_CHUNK: usize = 128;

/// How `tokens` rows of a dY `n` wide are cut: (tokens per chunk, chunks).
fn plan(n: usize, tokens: usize) -> (usize, usize) {
    let strips = n.div_ceil(BONE_BIAS_GRAD_COLUMNS as usize);
    let chunks = (TARGET_BLOCKS / strips).clamp(1, (tokens / MIN_CHUNK).max(1));
    let len = tokens.div_ceil(chunks).max(1);
    (len, tokens.div_ceil(len).max(1))
}

/// Bytes of the chunks' f32 sums (0 in one chunk): at most TARGET_BLOCKS x 64 x 4 (128 KiB).
pub(super) fn partial_bytes(n: usize, tokens: usize) -> usize {
    match plan(n, tokens) {
        (_, 1) => 0,
        (_, chunks) => chunks * n * 4,
    }
}

/// dbias (+)= the column sums of dY for `call`, with `partials` (of [`partial_bytes`]).
pub(super) fn launch(launcher: &impl Launcher, call: &Call, partials: u64) -> Result<()> {
    let (n, tokens) = (call.shape.n(), call.tokens);
    let (len, chunks) = plan(n, tokens);
    let accumulate = i32::from(call.accumulate.dbias);
    let blocks = n.div_ceil(BONE_BIAS_GRAD_COLUMNS as usize) * chunks;
    let out = if chunks == 1 { call.dbias } else { partials };
    let sizes = [tokens as i32, n as i32, len as i32, if chunks == 1 { accumulate } else { 0 }].map(Arg::I32);
    let args = [&sizes[..], &[call.y, out].map(Arg::Ptr)].concat();
    // One block of BONE_MERGE_THREADS threads per strip and chunk.
    launcher.elementwise(&call.pass("bone_bias_grad"), blocks * BONE_MERGE_THREADS as usize, &args)?;
    if chunks > 1 {
        token_chunks::sum_chunks(launcher, (chunks, n), partials, (call.dbias, call.accumulate.dbias))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tall_dy_is_cut_into_chunks_of_tokens_and_wide_dy_is_not() {
        // Llama's 4096 columns are 64 strips: 8 chunks of 512 tokens at T = 4096.
        assert_eq!(plan(4096, 4096), (512, 8));
        // At T = 512 no chunk is under 128 tokens.
        assert_eq!(plan(4096, 512), (128, 4));
        // 16384 columns are 256 strips: two chunks; small T keeps one.
        assert_eq!(plan(16384, 65536), (32768, 2));
        assert_eq!(plan(4096, 1), (1, 1));
        assert_eq!(plan(4096, 200), (200, 1));
        // Every chunk but the last is whole, and the chunks cover T.
        for (n, tokens) in [(64, 513), (72, 9), (11008, 4096), (8, 100_000)] {
            let (len, chunks) = plan(n, tokens);
            assert!(len * (chunks - 1) < tokens && len * chunks >= tokens, "{n} x {tokens}: {len} x {chunks}");
            assert!(partial_bytes(n, tokens) <= TARGET_BLOCKS * BONE_BIAS_GRAD_COLUMNS as usize * 4);
        }
    }
}
