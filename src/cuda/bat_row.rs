//! BatRow on the GPU, in the factored form of bone-math.md, every product on tensor cores:
//!   forward   X~_i = X_i + X_i B_i^T (batched over i), R = X stack^T, Y = X~ W^T + R E^T + bias
//!   backward  dX~ = dY W, dR = dY E, dX_i = dX~_i + dX~_i B_i + dR B_i, dB_i = (dX~_i + dR)^T X_i
//! where E `[N, r]` tiles the identity over the output blocks and stack `[r, K]` holds the
//! blocks side by side. X~ and dX~ `[T, K]` live in the workspace, a chunk of tokens at a
//! time where T x K would exceed MIXED_BYTES (dB then summed over the chunks in order). X
//! and dX~ are added exactly (an addend), not multiplied by I + B_i rounded to bf16.

use super::call::Call;
use super::launch::{Gemm, Launcher};
use super::setup::{Setup, bias_width, room_for_bias};
use super::token_chunks::{self, Destination};
use super::training::Pass;
use super::workspace;
use crate::error::Result;
use crate::shape::LayerShape;

/// The most bytes X~ (or dX~) takes: beyond, the pass runs a chunk of tokens at a time.
const MIXED_BYTES: usize = 128 << 20;

/// Tokens per chunk: as many as X~ holds in MIXED_BYTES (4096 at K = 16384), at most T.
fn chunk_tokens(layer: &LayerShape, tokens: usize) -> usize {
    (workspace::bound(MIXED_BYTES) / (2 * layer.k())).clamp(1, tokens)
}

/// The call cut into chunks of tokens, each a call on its own rows of X, Y (or dY) and dX;
/// every chunk after the first adds to dB (the chunks' sums, in order).
fn chunks_of_tokens(call: &Call) -> impl Iterator<Item = Call> + '_ {
    let (k, n) = (call.shape.k(), call.shape.n());
    let chunk = chunk_tokens(&call.shape, call.tokens);
    (0..call.tokens).step_by(chunk).map(move |t0| {
        let rows = |base: u64, width: usize| if base == 0 { 0 } else { base + (t0 * width * 2) as u64 };
        let mut accumulate = call.accumulate;
        accumulate.db |= t0 > 0;
        Call {
            tokens: chunk.min(call.tokens - t0),
            x: rows(call.x, k),
            y: rows(call.y, n),
            dx: rows(call.dx, k),
            accumulate,
            ..*call
        }
    })
}

/// B_i (`[K/r, r, r]`), the stack `[r, K]` (forward only), X~ or dX~
/// `[chunk, K]`, R or dR `[chunk, r]`, E `[N, r]`, all in the activations' type; backward
/// adds dB's partial sums over token chunks (f32); both add R's or dR's partial sums (f32),
/// a region Y's or dX~'s take too at small T; no partial sums where the launcher does not
/// `cut` reductions.
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass, cut: bool) -> Vec<usize> {
    let (r, n, k) = (layer.r(), layer.n(), layer.k());
    let chunk = chunk_tokens(layer, tokens);
    let largest = |bytes: &dyn Fn(usize) -> usize| token_chunks::largest_over_chunks(tokens, chunk, bytes);
    let stack = if pass == Pass::Forward { r * k * 2 } else { 0 };
    let partials = match pass {
        Pass::Backward => largest(&|t| token_chunks::partial_bytes(cut, t, token_chunks::block_tiles(k / r, r), k * r)),
        Pass::Forward => 0,
    };
    // R (forward, over K) or dR (backward, over N): T / 128 output tiles, cut into chunks at small T.
    let reduced = if pass == Pass::Forward { k } else { n };
    // The carry's partial sums, then (its sum done) the main GEMM's at small T: Y's or dX~'s.
    let carry_partials = largest(&|t| {
        let main = if pass == Pass::Forward { [t, n, k] } else { [t, k, n] };
        token_chunks::row_product_partial_bytes(cut, reduced, t, r).max(token_chunks::fill_partial_bytes(cut, main))
    });
    // R and E with room for the bias columns.
    let width = room_for_bias(r);
    vec![k * r * 2, stack, chunk * k * 2, chunk * width * 2, n * width * 2, partials, carry_partials]
}

/// The GEMM operands made from B, and E; in the forward the stack and, with a bias, the
/// bias columns of E and of R's rows.
fn prepare(launcher: &impl Launcher, call: &Call, regions: &[u64], pass: Pass) -> Result<()> {
    let (k, n, r) = (call.shape.k(), call.shape.n(), call.shape.r());
    let setup = Setup::new(call).bat_blocks(k / r, regions[0]).tiling(n, r, regions[4]);
    let setup = match pass {
        Pass::Forward if call.bias != 0 => {
            let rows = chunk_tokens(&call.shape, call.tokens);
            setup.row_stack(regions[1]).bias_columns(call.bias).ones(rows, regions[3])
        }
        Pass::Forward => setup.row_stack(regions[1]),
        Pass::Backward => setup,
    };
    setup.launch(launcher, call)
}

pub(super) fn forward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(launcher, call, regions, Pass::Forward)?;
    chunks_of_tokens(call).try_for_each(|chunk| forward_chunk(launcher, &chunk, regions))
}

fn forward_chunk(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (blocks, stack, x_mixed, carry, tiling) = (regions[0], regions[1], regions[2], regions[3], regions[4]);
    // X~_i [T, r] = X_i + X_i B_i^T, one batch per input block.
    Gemm::new((call.x, k), (blocks, r), (x_mixed, k), [t, r, r]).strides([r, r * r, 0, 0, r]).addend(call.x).launch(
        launcher,
        &call.gemm("kk"),
        k / r,
    )?;
    // R [T, r] = sum_i X_i B_i^T = X stack^T, over chunks of K, beside its bias columns.
    // The bias rides in R E^T: a column of ones beside R, the bias in E.
    let width = bias_width(r, call.bias);
    token_chunks::reduce_row_product(launcher, call, "kk", k, (regions[6], carry, width), |out, ld| {
        Gemm::new((call.x, k), (stack, k), (out, ld), [t, r, k])
    })?;
    // Y = X~ W^T + R E^T, the bias riding in R E^T.
    token_chunks::launch_filled(launcher, call, "kk", [t, n, k], Destination::new(call.y, n), regions[6], |out, ld| {
        Gemm::new((x_mixed, k), (call.w, k), (out, ld), [t, n, k]).second((carry, width), (tiling, width), width)
    })
}

pub(super) fn backward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(launcher, call, regions, Pass::Backward)?;
    chunks_of_tokens(call).try_for_each(|chunk| backward_chunk(launcher, &chunk, regions))
}

fn backward_chunk(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (blocks, dx_mixed, d_carry, tiling) = (regions[0], regions[2], regions[3], regions[4]);
    let dx_mixed_out = Destination::new(dx_mixed, k);
    token_chunks::launch_filled(launcher, call, "kt", [t, k, n], dx_mixed_out, regions[6], |out, ld| {
        Gemm::new((call.y, n), (call.w, k), (out, ld), [t, k, n])
    })?;
    // dR [T, r] = dY E, over chunks of N (dX~'s partial sums are summed by now).
    token_chunks::reduce_row_product(launcher, call, "kt", n, (regions[6], d_carry, r), |out, ld| {
        Gemm::new((call.y, n), (tiling, r), (out, ld), [t, r, n])
    })?;
    if call.dx != 0 {
        // dX_i = dX~_i + dX~_i B_i + dR B_i, one batch per input block.
        Gemm::new((dx_mixed, k), (blocks, r), (call.dx, k), [t, r, r])
            .second((d_carry, r), (blocks, r), r)
            .strides([r, r * r, 0, r * r, r])
            .addend(dx_mixed)
            .accumulate(call.accumulate.dx)
            .launch(launcher, &call.gemm("kt"), k / r)?;
    }
    // dB_i [r, r] = dX~_i^T X_i + dR^T X_i, one batch per block, over token chunks.
    let tiles = token_chunks::block_tiles(k / r, r);
    token_chunks::reduce(launcher, (t, tiles, k * r), regions[5], (call.db, call.accumulate.db), |out| {
        let gemm = Gemm::new((dx_mixed, k), (call.x, k), (out, r), [r, r, t])
            .second((d_carry, r), (call.x, k), t)
            .strides([r, r, 0, r, r * r]);
        (gemm, call.gemm_f32("tt"), k / r)
    })
}
