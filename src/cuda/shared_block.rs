//! The shared block (PEFT's default) and MiSS mini on the GPU:
//!   forward   Y = X W^T + S Bfull + bias, S = sum_i X_i            (one GEMM, S Bfull appended along K,
//!                                                                   the bias in it: a column of ones in S)
//!   backward  dBfull = S^T dY, dX = dY W + tile_K(dY Bfull^T)     (two GEMMs + a short one)
//! With dropout (PEFT's miss_dropout) S sums the dropped X_i, and dX's tiled term is dropped
//! with the same mask: written first by an element-wise pass, then dY W is added onto it.
//! The backward reads nothing of X but S: where the caller keeps S (`Call::saved_s`: the
//! forward writes it there too), the backward takes it from there and X is not needed.

use super::call::Call;
use super::launch::{Arg, Gemm, Launcher};
use super::setup::{Setup, bias_width, room_for_bias};
use super::token_chunks::{self, Destination};
use super::training::Pass;
use crate::error::Result;
use crate::shape::LayerShape;
use crate::variant::Variant;

/// Output tiles of dBfull = S^T dY (`[r, N]`).
fn db_tiles(layer: &LayerShape) -> usize {
    token_chunks::output_tiles(layer.r(), layer.n())
}

/// S `[T, r]` bf16, Bfull `[r, N]` bf16, Bfull^T `[N, r]` bf16 (S and Bfull^T with room
/// for the bias columns); forward adds Y's partial
/// sums at small T; backward adds U = dY Bfull^T `[T, r]` bf16, the tiling matrix `[r, K]`
/// bf16, for mini dBfull `[r, N]` f32, partial sums (dBfull's over token chunks, then dX's
/// at small T) and U's; none of the partial sums where the launcher does not `cut` reductions.
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass, cut: bool) -> Vec<usize> {
    let (r, n, k) = (layer.r(), layer.n(), layer.k());
    let width = room_for_bias(r);
    let mut sizes = vec![tokens * width * 2, r * n * 2, n * width * 2];
    match pass {
        Pass::Forward => sizes.push(token_chunks::fill_partial_bytes(cut, [tokens, n, k])),
        Pass::Backward => {
            let mini = matches!(layer.variant(), Variant::Mini { .. });
            let partials = token_chunks::partial_bytes(cut, tokens, db_tiles(layer), r * n)
                .max(token_chunks::fill_partial_bytes(cut, [tokens, k, n]));
            let u_partials = token_chunks::row_product_partial_bytes(cut, n, tokens, r);
            let mini_db = if mini { r * n * 4 } else { 0 };
            sizes.extend([tokens * r * 2, r * k * 2, mini_db, partials, u_partials]);
        }
    }
    sizes
}

/// The two layouts of Bfull, into regions 1 and 2.
fn setup(call: &Call, regions: &[u64]) -> Setup {
    Setup::new(call).shared_blocks(regions[1], regions[2])
}

pub(super) fn forward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    // The bias rides in S Bfull (a column of ones in S, the bias in Bfull^T): no epilogue
    // of its own, and on a library GEMM no pass over Y for it.
    let setup = setup(call, regions).block_sums(regions[0]).saved_block_sums(call.saved_s);
    setup.bias_columns(call.bias).launch(launcher, call)?;
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let width = bias_width(r, call.bias);
    token_chunks::launch_filled(launcher, call, "kk", [t, n, k], Destination::new(call.y, n), regions[3], |out, ld| {
        Gemm::new((call.x, k), (call.w, k), (out, ld), [t, n, k]).second(
            (regions[0], width),
            (regions[2], width),
            width,
        )
    })
}

pub(super) fn backward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    // S from X into region 0, unless the caller kept the forward's; with dX (and no
    // dropout), the tiling matrix E [r, K] too (region 4).
    let (setup, s) = match call.saved_s {
        0 => (setup(call, regions).block_sums(regions[0]), regions[0]),
        saved => (setup(call, regions), saved),
    };
    let setup = if call.dx != 0 && !call.dropout.is_active() { setup.tiling(r, k, regions[4]) } else { setup };
    setup.launch(launcher, call)?;
    // dBfull [r, N] = S^T dY: both operands are read along T, split into token chunks.
    let mini = matches!(call.shape.variant(), Variant::Mini { .. });
    let db_full = if mini { regions[5] } else { call.db };
    let out = (db_full, call.accumulate.db && !mini);
    token_chunks::reduce(launcher, (t, db_tiles(&call.shape), r * n), regions[6], out, |out| {
        (Gemm::new((s, r), (call.y, n), (out, n), [r, n, t]), call.gemm_f32("tt"), 1)
    })?;
    if mini {
        let accumulate = Arg::I32(i32::from(call.accumulate.db));
        let fold = [Arg::Layer(call.layer), accumulate, Arg::Ptr(db_full), Arg::Ptr(call.db)];
        launcher.elementwise("bone_mini_fold", r * call.layer.mini_r as usize, &fold)?;
    }
    if call.dx != 0 {
        // U [T, r] = dY Bfull^T, then dX = dY W + U E with E [r, K] tiling U along K.
        let (u, tiling) = (regions[3], regions[4]);
        // U has T / 128 output tiles over all of N: at small T it is cut into chunks of N.
        token_chunks::reduce_row_product(launcher, call, "kk", n, (regions[7], u, r), |out, ld| {
            Gemm::new((call.y, n), (regions[1], n), (out, ld), [t, r, n])
        })?;
        // dB's partial sums are summed by now: their region takes dX's at small T. With
        // dropout the tiled term is dropped element by element, written first, and dY W
        // is added onto it; without, it is the GEMM's appended product U E.
        let dx = Destination::new(call.dx, k).accumulate(call.accumulate.dx);
        let dx = if call.dropout.is_active() {
            let args = [
                Arg::Layer(call.layer),
                Arg::I32(t as i32),
                Arg::Dropout(call.dropout),
                Arg::I32(i32::from(call.accumulate.dx)),
                Arg::Ptr(u),
                Arg::Ptr(call.dx),
            ];
            // A thread per 8 adjacent elements of dX.
            launcher.elementwise(&call.pass("bone_dropped_tiles"), t * k / 8, &args)?;
            dx.accumulate(true)
        } else {
            dx
        };
        token_chunks::launch_filled(launcher, call, "kt", [t, k, n], dx, regions[6], |out, ld| {
            let product = Gemm::new((call.y, n), (call.w, k), (out, ld), [t, k, n]);
            if call.dropout.is_active() { product } else { product.second((u, r), (tiling, k), r) }
        })?;
    }
    Ok(())
}
