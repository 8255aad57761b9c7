//! Some products have few output tiles over a long reduced dimension: dB's (over T for the
//! shared block's S^T dY and BatRow's (dX~_i + dR)^T X_i, over K for BatCol's W_o^T G_o),
//! and the [T, r] products at small T (the shared block's U = dY Bfull^T over N, BatRow's
//! R = X stack^T over K and dR over N). One GEMM over all of it would run on few SMs, so
//! it is split into chunks (called tokens here), all in one launch (a grid layer per chunk,
//! `split_k` in params.h), each chunk's partial sum written apart, then summed in a fixed
//! order: more parallelism, and dB stays bitwise reproducible. The split depends only on the shapes,
//! not the GPU. On a library GEMM (cuBLAS) nothing is cut: it gets each product whole and
//! picks its own split-K (`Launcher::cuts_reductions`).

use super::call::Call;
use super::launch::{Arg, Gemm, Launcher};
use super::params::{BONE_GEMM_BM, BONE_GEMM_BN};
use crate::error::Result;

/// Thread blocks worth aiming for (about two per SM on a large GPU).
pub(crate) const TARGET_BLOCKS: usize = 256;
/// Thread blocks that about fill an H100/H200 (132 SMs), one each.
pub(crate) const FULL_GPU_BLOCKS: usize = 128;
/// Fewest tokens worth a chunk of their own.
const MIN_CHUNK: usize = 256;

/// How `tokens` are cut for a reduction with `tiles` output tiles: (tokens per chunk, chunks);
/// one chunk unless `cut` (the launcher cuts reductions itself: `Launcher::cuts_reductions`).
/// Chunks hold a multiple of 64 tokens: every chunk but the last is whole K tiles of both
/// GEMMs (32 and 64 deep), and a chunk of a K-major operand keeps the GEMM's contract
/// (contiguous extents in multiples of 8, 16-byte aligned starts).
pub(crate) fn plan(cut: bool, tokens: usize, tiles: usize) -> (usize, usize) {
    if !cut {
        return (tokens, 1);
    }
    let chunks = (TARGET_BLOCKS / tiles.max(1)).clamp(1, (tokens / MIN_CHUNK).max(1));
    let len = tokens.div_ceil(chunks).next_multiple_of(64);
    (len, tokens.div_ceil(len))
}

/// Output tiles of an `[m, n]` GEMM output.
pub(crate) fn output_tiles(m: usize, n: usize) -> usize {
    m.div_ceil(BONE_GEMM_BM as usize) * n.div_ceil(BONE_GEMM_BN as usize)
}

/// Output tiles of `blocks` r x r outputs (one each up to r = 128, four at r = 256).
pub(crate) fn block_tiles(blocks: usize, r: usize) -> usize {
    blocks * output_tiles(r, r)
}

/// The most `bytes(t)` over the lengths t of `tokens` cut into chunks of `chunk` (the
/// chunks' length and the last one's): a workspace region one chunk at a time reuses.
pub(crate) fn largest_over_chunks(tokens: usize, chunk: usize, bytes: &dyn Fn(usize) -> usize) -> usize {
    [chunk.min(tokens), tokens % chunk].into_iter().filter(|&t| t > 0).map(bytes).max().unwrap_or(0)
}

/// Bytes of f32 partial sums a reduction producing `outputs` elements needs (0 when unsplit).
pub(crate) fn partial_bytes(cut: bool, tokens: usize, tiles: usize, outputs: usize) -> usize {
    match plan(cut, tokens, tiles) {
        (_, 1) => 0,
        (_, chunks) => chunks * outputs * 4,
    }
}

/// The product `product(destination)` returns (its GEMM over all `tokens` with an f32
/// output, the instantiation, the batch count), run over chunks of its tokens in one
/// launch, each chunk writing its `outputs` partial sums; then `bone_sum_chunks` sums them
/// in order into `out`. Unsplit, the product writes `out` directly. Either way the result
/// is added to what `out` holds where `accumulate`.
pub(crate) fn reduce(
    launcher: &impl Launcher,
    (tokens, tiles, outputs): (usize, usize, usize),
    partials: u64,
    (out, accumulate): (u64, bool),
    product: impl FnOnce(u64) -> (Gemm, String, usize),
) -> Result<()> {
    let (len, chunks) = plan(launcher.cuts_reductions(), tokens, tiles);
    if chunks == 1 {
        let (gemm, kernel, batches) = product(out);
        return gemm.accumulate(accumulate).launch(launcher, &kernel, batches);
    }
    let (gemm, kernel, batches) = product(partials);
    gemm.split_k(len, outputs / batches).launch(launcher, &kernel, batches)?;
    sum_chunks(launcher, (chunks, outputs), partials, (out, accumulate))
}

/// `out` (+)= the sum, in chunk order, of the `chunks` f32 partial sums of `outputs`
/// elements each at `partials` (`bone_sum_chunks`): the fixed-order second pass of every
/// reduction cut into chunks, so that it stays bitwise reproducible.
pub(crate) fn sum_chunks(
    launcher: &impl Launcher,
    (chunks, outputs): (usize, usize),
    partials: u64,
    (out, accumulate): (u64, bool),
) -> Result<()> {
    let sizes = [chunks, outputs, usize::from(accumulate)].map(|v| Arg::I32(v as i32));
    launcher.elementwise("bone_sum_chunks", outputs, &[&sizes[..], &[partials, out].map(Arg::Ptr)].concat())
}

/// Bytes of partial sums a [T, r] product over `reduced` elements needs (0 when unsplit):
/// the shared block's U and BatRow's R and dR, whose T / 128 output tiles are few at small T.
pub(crate) fn row_product_partial_bytes(cut: bool, reduced: usize, tokens: usize, r: usize) -> usize {
    partial_bytes(cut, reduced, tokens.div_ceil(BONE_GEMM_BM as usize), tokens * r)
}

/// The [T, r] product `gemm(c, ldc)` over its `reduced` dimension, on `layouts`' GEMM of
/// the call's activation type, written to `out` with leading dimension `ld` (r, or more
/// where bias columns follow): unsplit directly; at small T over chunks of that dimension,
/// each chunk's partial sums in f32 (`[T, r]` apart), then summed in order and rounded once.
pub(crate) fn reduce_row_product(
    launcher: &impl Launcher,
    call: &Call,
    layouts: &str,
    reduced: usize,
    (partials, out, ld): (u64, u64, usize),
    gemm: impl Fn(u64, usize) -> Gemm,
) -> Result<()> {
    let (tokens, r) = (call.tokens, call.shape.r());
    let split = plan(launcher.cuts_reductions(), reduced, tokens.div_ceil(BONE_GEMM_BM as usize));
    launch_split(launcher, call, layouts, ([tokens, r], split), (Destination::new(out, ld), partials), gemm)
}

/// How a GEMM with an `[m, n]` output over a reduction of `k` is cut along K so that its
/// blocks fill the GPU: (length, chunks); one chunk where its tiles already do (or K is
/// short, or the launcher does not `cut`).
pub(crate) fn fill_plan(cut: bool, [m, n, k]: [usize; 3]) -> (usize, usize) {
    let tiles = output_tiles(m, n);
    if tiles < FULL_GPU_BLOCKS { plan(cut, k, tiles) } else { (k, 1) }
}

/// Bytes of f32 partial sums [`launch_filled`] needs for that GEMM (0 when it is not cut):
/// at most 16 MiB (chunks x tiles stay within TARGET_BLOCKS, of 128 x 128 outputs each).
pub(crate) fn fill_partial_bytes(cut: bool, [m, n, k]: [usize; 3]) -> usize {
    match fill_plan(cut, [m, n, k]) {
        (_, 1) => 0,
        (_, chunks) => chunks * m * n * 4,
    }
}

/// Where a main GEMM's output goes: C = `c` with its leading dimension, plus the bias (0:
/// none), added to what C holds where `accumulate`.
#[derive(Clone, Copy)]
pub(crate) struct Destination {
    c: u64,
    ldc: usize,
    bias: u64,
    accumulate: bool,
}

impl Destination {
    pub fn new(c: u64, ldc: usize) -> Self {
        Destination { c, ldc, bias: 0, accumulate: false }
    }

    pub fn bias(self, bias: u64) -> Self {
        Destination { bias, ..self }
    }

    pub fn accumulate(self, accumulate: bool) -> Self {
        Destination { accumulate, ..self }
    }
}

/// The GEMM `product(c, ldc)` (`[m, n]` over `k`, its second product if any no longer than
/// a chunk, in the activations' type on `layouts`' kernel) written to `out`. Where its tiles
/// alone would leave SMs idle (small T) and K is long, it is cut along K in the same
/// launch, its chunks' f32 partial sums written to `partials` (`fill_partial_bytes`), then
/// summed in order with the bias (and what C holds).
pub(crate) fn launch_filled(
    launcher: &impl Launcher,
    call: &Call,
    layouts: &str,
    [m, n, k]: [usize; 3],
    out: Destination,
    partials: u64,
    product: impl Fn(u64, usize) -> Gemm,
) -> Result<()> {
    let split = fill_plan(launcher.cuts_reductions(), [m, n, k]);
    launch_split(launcher, call, layouts, ([m, n], split), (out, partials), product)
}

/// `product(c, ldc)` (`[m, n]`, in the activations' type on `layouts`' kernel) into `out`,
/// its reduction cut as `(len, chunks)` says: whole, or in chunks in one launch, their f32
/// partial sums written to `partials` (`[m, n]` apart), then summed in order with the bias
/// (and what C holds) and rounded once.
fn launch_split(
    launcher: &impl Launcher,
    call: &Call,
    layouts: &str,
    ([m, n], (len, chunks)): ([usize; 2], (usize, usize)),
    (out, partials): (Destination, u64),
    product: impl Fn(u64, usize) -> Gemm,
) -> Result<()> {
    if chunks == 1 {
        let gemm = product(out.c, out.ldc).bias(out.bias).accumulate(out.accumulate);
        return gemm.launch(launcher, &call.gemm(layouts), 1);
    }
    product(partials, n).split_k(len, m * n).launch(launcher, &call.gemm_f32(layouts), 1)?;
    let sizes = [chunks, m, n, out.ldc, usize::from(out.accumulate)].map(|v| Arg::I32(v as i32));
    let args = [&sizes[..], &[partials, out.bias, out.c].map(Arg::Ptr)].concat();
    launcher.elementwise(&call.pass("bone_sum_chunks_bias"), m * n, &args)
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn chunks_cover_the_tokens_and_stay_large() {
        for tokens in [1, 7, 255, 256, 1000, 4096, 65536] {
            for tiles in [1, 32, 64, 300] {
                let (len, chunks) = plan(true, tokens, tiles);
                assert!(len * chunks >= tokens && len * (chunks - 1) < tokens, "T={tokens} tiles={tiles}");
                assert!(chunks == 1 || len >= 256, "T={tokens} tiles={tiles}: chunks of {len}");
                assert!(len.is_multiple_of(64), "T={tokens} tiles={tiles}: chunks of {len}");
            }
        }
        assert_eq!(plan(true, 4096, 32), (512, 8));
        assert_eq!(plan(false, 4096, 32), (4096, 1));
    }
}
