//! BatCol on the GPU. Nothing factors (bone-math.md), so W' is formed, on tensor cores
//! and a bounded slab of output rows at a time, never whole. Read as a `[K, r]` matrix,
//! output block o of W (rows o r .. o r + r) has row q = a (K / r) + i holding
//! `W_{o,i}[a, :]`, so `W'_o = W_o B_o + onehot B_o + W_o` is one small GEMM per block (W_o
//! added in its epilogue, exactly: `I + B_o` in bf16 would lose B's diagonal):
//! ```text
//!   forward   per slab: W'[slab] (batched over its blocks), Y[:, slab] = X W'[slab]^T + bias
//!             (cut along K and summed in order where the slab alone would not fill the GPU)
//!   backward  dB_o = sum_i (W_{o,i} + I)^T G_{o,i}: on this crate's GEMMs (mma.sync or
//!             wgmma) by one fused kernel (kernels/bat_col_grads.cu) that holds G = dY^T X a
//!             128 x 128 tile at a time in shared memory, so G never reaches device memory;
//!             on the cuBLAS engine per slab G = dY[:, slab]^T X, then W_o^T G_o (batched)
//!             + sum_i G_{o,i}: from G (its rows summed over their r-wide chunks), or at
//!             small T as dY_o^T S, S = sum_i X_i (a read of X and dY, not of G). Then, if dX is
//!             wanted, per slab W'[slab] and dX (+)= dY[:, slab] W'[slab]: written once in
//!             the activations' type where W' fits one slab, else summed over the slabs in
//!             f32 a bounded chunk of tokens at a time (the slabs formed again per chunk)
//! ```
//! G and W' take turns in the one slab buffer, so each slab is as tall as the forward's.
//! Forming each W' tile in shared memory inside the main GEMM instead would save the
//! slab's round trip through L2 but redo the transform for every token tile
//! (docs/design.md): worth it only when T is small.

use super::call::Call;
use super::launch::{Arg, Gemm, Launcher};
use super::params::{BONE_GEMM_BM, BONE_GEMM_BN};
use super::setup::Setup;
use super::token_chunks::{self, Destination};
use super::training::Pass;
use super::workspace;
use crate::error::Result;
use crate::shape::LayerShape;

/// Workspace a BatCol pass may use for its slab of W' or G (bf16 either).
const SLAB_BYTES: usize = 32 << 20;

fn slab_bytes() -> usize {
    workspace::bound(SLAB_BYTES)
}

/// Rows of W' (or G) per slab, a multiple of 128 and of r (both powers of two), at least
/// that, at most N: as many as fit the slab bound (2 bytes an element). Fewer, larger slabs
/// keep more SMs busy at small T, and where one slab holds all of W' the backward writes dX
/// once.
fn slab_rows(layer: &LayerShape) -> usize {
    let unit = layer.r().max(128);
    (slab_bytes() / (2 * layer.k()) / unit * unit).max(unit).min(layer.n())
}

/// Fewest tokens in a chunk of dX: each further chunk forms W' again, one read of W and a
/// write of W' for 2 T N K flops of product, which at the H200's 790 TFLOP/s and 4.3 TB/s
/// is about 370 / T of the product's time: under 10% from 4096 tokens.
const DX_CHUNK_MIN_TOKENS: usize = 4096;

/// Tokens of dX summed at a time in f32 over W''s slabs, where it takes several: as many as
/// twice a slab's bytes hold, and at least DX_CHUNK_MIN_TOKENS (so at most 256 MiB, at
/// K = 16384), at most T. Each further chunk of tokens forms the slabs again, so that the
/// accumulator stays bounded at any T.
fn dx_chunk_tokens(layer: &LayerShape, tokens: usize) -> usize {
    (2 * slab_bytes() / (4 * layer.k())).max(workspace::bound(DX_CHUNK_MIN_TOKENS)).clamp(1, tokens)
}

/// B_o (`[N/r, r, r]`), onehot `[K, r]`, a W' (or G) slab, all in the activations' type;
/// forward adds Y's partial sums where a slab's product is cut along K; backward adds,
/// where W' takes more than one slab, dX's f32 accumulator for a chunk of tokens
/// (`dx_chunk_tokens`), partial sums (dB's over chunks of K or of T, then dX's at small
/// T), and S `[T, r]` where the unfused dB takes its identity term from it; no partial sums
/// where the launcher does not `cut` reductions (a library GEMM, which also takes the
/// unfused dB).
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass, cut: bool) -> Vec<usize> {
    let (n, k, r) = (layer.n(), layer.k(), layer.r());
    let rows = slab_rows(layer);
    let mut sizes = vec![n * r * 2, k * r * 2, rows * k * 2];
    match pass {
        Pass::Forward => {
            let slab_partials = |row0| token_chunks::fill_partial_bytes(cut, [tokens, rows.min(n - row0), k]);
            sizes.push((0..n).step_by(rows).map(slab_partials).max().unwrap_or(0));
        }
        Pass::Backward => {
            let chunk = dx_chunk_tokens(layer, tokens);
            let dx_f32 = if rows < n { chunk * k * 4 } else { 0 };
            // Partial sums, first dB's (the fused kernel's or the unfused sequence's), then
            // dX's at small T: all tokens' with W' in one slab, else a chunk's (or the last,
            // shorter chunk's) for each slab.
            let dx_partials = token_chunks::largest_over_chunks(tokens, chunk, &|m| {
                token_chunks::fill_partial_bytes(cut, [m, k, rows])
            })
            .max(token_chunks::fill_partial_bytes(cut, [tokens, k, rows]));
            // The fused kernel runs only where the launcher cuts reductions (the crate's GEMMs).
            let fused = if cut { fused_partial_bytes(layer) } else { 0 };
            // dB's over the slabs, the full ones and the last (its rows may be cut into more chunks).
            let from_sums = identity_from_block_sums(layer, tokens, cut);
            let per_slab = token_chunks::largest_over_chunks(n, rows, &|rows| {
                let identity = if from_sums { identity_partial_bytes(cut, layer, tokens, rows) } else { 0 };
                block_grads_partial_bytes(cut, layer, rows).max(identity)
            });
            let db_partials = per_slab.max(fused);
            let block_sums = if from_sums { tokens * r * 2 } else { 0 };
            sizes.extend([dx_f32, db_partials.max(dx_partials), block_sums]);
        }
    }
    sizes
}

/// B's blocks and onehot, and S into `block_sums` where given.
fn prepare(launcher: &impl Launcher, call: &Call, regions: &[u64], block_sums: Option<u64>) -> Result<()> {
    let (n, r) = (call.shape.n(), call.shape.r());
    let setup = Setup::new(call).bat_blocks(n / r, regions[0]).one_hot(regions[1]);
    match block_sums {
        Some(s) => setup.block_sums(s),
        None => setup,
    }
    .launch(launcher, call)
}

/// W' rows [row0, row0 + rows) into `regions[2]`, `[rows, K]` in the activations' type:
/// W_o + W_o B_o + onehot B_o, W_o added exactly (an addend), rounded once.
fn form_slab(launcher: &impl Launcher, call: &Call, regions: &[u64], row0: usize, rows: usize) -> Result<()> {
    let (k, r) = (call.shape.k(), call.shape.r());
    let (blocks, onehot, slab) = (regions[0], regions[1], regions[2]);
    let first_block = (row0 / r * r * r * 2) as u64;
    let w_slab = call.w + (row0 * k * 2) as u64;
    Gemm::new((w_slab, r), (blocks + first_block, r), (slab, r), [k, r, r])
        .second((onehot, r), (blocks + first_block, r), r)
        .strides([r * k, r * r, 0, r * r, r * k])
        .addend(w_slab)
        .launch(launcher, &call.gemm("kt"), rows / r)
}

pub(super) fn forward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(launcher, call, regions, None)?;
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    let (slab_buffer, y_partials) = (regions[2], regions[3]);
    let slab = slab_rows(&call.shape);
    for row0 in (0..n).step_by(slab) {
        let rows = slab.min(n - row0);
        form_slab(launcher, call, regions, row0, rows)?;
        // Y[:, row0 ..] (row0 is a multiple of 128: the offsets stay 16-byte aligned), cut
        // along K at small T, where a slab's tiles would not fill the GPU.
        let (y, bias) = (call.y + (row0 * 2) as u64, if call.bias == 0 { 0 } else { call.bias + (row0 * 2) as u64 });
        let y = Destination::new(y, n).bias(bias);
        token_chunks::launch_filled(launcher, call, "kk", [t, rows, k], y, y_partials, |out, ld| {
            Gemm::new((call.x, k), (slab_buffer, k), (out, ld), [t, rows, k])
        })?;
    }
    Ok(())
}

/// Block sizes the fused dB kernel is built for (kernels/bat_col_grads.cu): each warp holds
/// 16 rows of dB's slice and a block 128 rows of N, so whole r x r blocks from 16 to 128.
const FUSED_GRADS_R: [usize; 4] = [16, 32, 64, 128];

/// How the fused dB kernel cuts K's 128-wide tiles into runs, one block each per 128 rows
/// of N: (tiles per run, runs), about TARGET_BLOCKS blocks in all; `None` for an r it is
/// not built for (the unfused sequence runs instead).
fn fused_runs(layer: &LayerShape) -> Option<(usize, usize)> {
    if !FUSED_GRADS_R.contains(&layer.r()) {
        return None;
    }
    let (row_tiles, k_tiles) = (layer.n().div_ceil(BONE_GEMM_BM as usize), layer.k().div_ceil(BONE_GEMM_BN as usize));
    let per_run = k_tiles.div_ceil((token_chunks::TARGET_BLOCKS / row_tiles).clamp(1, k_tiles));
    Some((per_run, k_tiles.div_ceil(per_run)))
}

/// dB by the fused kernel (kernels/bat_col_grads.cu: G = dY^T X a tile at a time in shared
/// memory, never in device memory), each run of K tiles into its partial sums, then summed
/// in order; `None` where a library GEMM runs the products, or r is one the fused kernel
/// does not take (the unfused sequence, with G through the slab).
fn fused_grads(launcher: &impl Launcher, call: &Call, partials: u64) -> Option<Result<()>> {
    let (n, r) = (call.shape.n(), call.shape.r());
    let (per_run, runs) = fused_runs(&call.shape)?;
    let out = if runs == 1 { call.db } else { partials };
    let kernel = format!("{}_r{r}", call.pass("bone_bat_col_grads"));
    // One run writes dB itself, adding to it where the call accumulates; several write
    // partial sums, and their sum adds.
    let accumulate = usize::from(call.accumulate.db);
    let sizes =
        [call.tokens, n, call.shape.k(), per_run, if runs == 1 { accumulate } else { 0 }].map(|v| Arg::I32(v as i32));
    let args = [&sizes[..], &[call.y, call.x, call.w, out].map(Arg::Ptr)].concat();
    let grid = (n.div_ceil(BONE_GEMM_BM as usize) as u32, runs as u32);
    let fused = launcher.fused(&kernel, grid, &args)?;
    Some(fused.and_then(|()| {
        if runs == 1 {
            return Ok(());
        }
        token_chunks::sum_chunks(launcher, (runs, n * r), partials, (call.db, call.accumulate.db))
    }))
}

/// Bytes of partial sums the fused dB kernel needs (0 with one run, or where it does not run).
fn fused_partial_bytes(layer: &LayerShape) -> usize {
    match fused_runs(layer) {
        Some((_, runs)) if runs > 1 => runs * layer.n() * layer.r() * 4,
        _ => 0,
    }
}

/// dB_o `[r, r]` (f32, into `db`) of the `rows / r` output blocks whose rows of W start at
/// `w_blocks`, from their rows of G `[rows, K]`: sum_q W_o[q, :]^T G_o[q, :] + sum_q
/// onehot[q, :]^T G_o[q, :] over the `[K, r]` views. The first is [`block_products`]; the
/// second sums each row of G over its r-wide chunks (a read of G, not a second GEMM over K).
pub(crate) fn block_grads(
    launcher: &impl Launcher,
    call: &Call,
    (w_blocks, g, rows): (u64, u64, usize),
    partials: u64,
    db: u64,
) -> Result<()> {
    block_products(launcher, call, (w_blocks, g, rows), partials, db)?;
    let chunk_sums = [Arg::Layer(call.layer), Arg::I32(rows as i32), Arg::Ptr(g), Arg::Ptr(db)];
    // A warp per row of dB_o.
    launcher.elementwise(&call.pass("bone_chunk_sum_add"), rows * 32, &chunk_sums)
}

/// sum_q W_o[q, :]^T G_o[q, :] over the `[K, r]` views into `db` (written, or added where
/// the call accumulates): a batched GEMM whose K rows are cut into chunks (one block per
/// r x r output would leave most SMs idle), summed in order through `partials`.
fn block_products(
    launcher: &impl Launcher,
    call: &Call,
    (w_blocks, g, rows): (u64, u64, usize),
    partials: u64,
    db: u64,
) -> Result<()> {
    let (k, r) = (call.shape.k(), call.shape.r());
    let tiles = token_chunks::block_tiles(rows / r, r);
    token_chunks::reduce(launcher, (k, tiles, rows * r), partials, (db, call.accumulate.db), |out| {
        let gemm = Gemm::new((w_blocks, r), (g, r), (out, r), [r, r, k]).strides([r * k, r * k, 0, 0, r * r]);
        (gemm, call.gemm_f32("tt"), rows / r)
    })
}

/// Whether the unfused dB takes its identity term sum_i G_{o,i} = dY_o^T S from the block
/// sums S = sum_i X_i (computed by the setup launch) instead of from G: that reads X and
/// dY, T (K + N) elements, where G's chunk sums read G, N K of them; so below
/// N K / (N + K) tokens (2048 at 4096 x 4096, 2987 at 4096 x 11008).
fn identity_from_block_sums(layer: &LayerShape, tokens: usize, cut: bool) -> bool {
    let unfused = !cut || fused_runs(layer).is_none();
    unfused && tokens * (layer.k() + layer.n()) < layer.n() * layer.k()
}

/// Bytes of partial sums the identity term from S needs for a slab of `rows` rows.
fn identity_partial_bytes(cut: bool, layer: &LayerShape, tokens: usize, rows: usize) -> usize {
    token_chunks::partial_bytes(cut, tokens, token_chunks::output_tiles(rows, layer.r()), rows * layer.r())
}

/// Adds dY[:, row0 .. row0 + rows]^T S `[rows, r]` (f32) onto dB's rows at `db`: the
/// identity term of those output blocks, reduced over T (in token chunks at small T).
fn add_identity_from_block_sums(
    launcher: &impl Launcher,
    call: &Call,
    (row0, rows): (usize, usize),
    (s, partials): (u64, u64),
    db: u64,
) -> Result<()> {
    let (t, n, r) = (call.tokens, call.shape.n(), call.shape.r());
    let dy = call.y + (row0 * 2) as u64;
    let tiles = token_chunks::output_tiles(rows, r);
    token_chunks::reduce(launcher, (t, tiles, rows * r), partials, (db, true), |out| {
        (Gemm::new((dy, n), (s, r), (out, r), [rows, r, t]), call.gemm_f32("tt"), 1)
    })
}

/// Bytes of partial sums [`block_grads`] needs for `rows` rows of W (0 when unsplit).
pub(crate) fn block_grads_partial_bytes(cut: bool, layer: &LayerShape, rows: usize) -> usize {
    let r = layer.r();
    token_chunks::partial_bytes(cut, layer.k(), token_chunks::block_tiles(rows / r, r), rows * r)
}

pub(super) fn backward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (slab_buffer, partials, block_sums) = (regions[2], regions[4], regions[5]);
    let from_sums = identity_from_block_sums(&call.shape, t, launcher.cuts_reductions());
    prepare(launcher, call, regions, from_sums.then_some(block_sums))?;
    let slab = slab_rows(&call.shape);
    if fused_grads(launcher, call, partials).transpose()?.is_none() {
        for row0 in (0..n).step_by(slab) {
            let rows = slab.min(n - row0);
            // G [rows, K] = dY[:, slab]^T X, reduced over T inside each tile (deterministic).
            let (dy, g) = (call.y + (row0 * 2) as u64, slab_buffer);
            Gemm::new((dy, n), (call.x, k), (g, k), [rows, k, t]).launch(launcher, &call.gemm("tt"), 1)?;
            let (w_blocks, db) = (call.w + (row0 * k * 2) as u64, call.db + (row0 * r * 4) as u64);
            if from_sums {
                block_products(launcher, call, (w_blocks, g, rows), partials, db)?;
                add_identity_from_block_sums(launcher, call, (row0, rows), (block_sums, partials), db)?;
            } else {
                block_grads(launcher, call, (w_blocks, g, rows), partials, db)?;
            }
        }
    }
    if call.dx == 0 {
        return Ok(());
    }
    if slab == n {
        form_slab(launcher, call, regions, 0, n)?;
        let dx = Destination::new(call.dx, k).accumulate(call.accumulate.dx);
        return token_chunks::launch_filled(launcher, call, "kt", [t, k, n], dx, partials, |out, ld| {
            Gemm::new((call.y, n), (slab_buffer, k), (out, ld), [t, k, n])
        });
    }
    dx_over_slabs(launcher, call, regions, slab)
}

/// dX where W' takes several slabs of `slab` rows: a chunk of tokens at a time, summed over
/// the slabs in f32, then rounded into dX. Every other chunk takes the slabs in reverse,
/// starting with the one the buffer holds.
fn dx_over_slabs(launcher: &impl Launcher, call: &Call, regions: &[u64], slab: usize) -> Result<()> {
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    let (slab_buffer, dx_f32, partials) = (regions[2], regions[3], regions[4]);
    let chunk = dx_chunk_tokens(&call.shape, t);
    let mut formed = None;
    for (c, t0) in (0..t).step_by(chunk).enumerate() {
        let tc = chunk.min(t - t0);
        let mut slabs: Vec<usize> = (0..n).step_by(slab).collect();
        if c % 2 == 1 {
            slabs.reverse();
        }
        for (i, &row0) in slabs.iter().enumerate() {
            let rows = slab.min(n - row0);
            if formed != Some(row0) {
                form_slab(launcher, call, regions, row0, rows)?;
                formed = Some(row0);
            }
            let dy = call.y + ((t0 * n + row0) * 2) as u64;
            let product = |out| Gemm::new((dy, n), (slab_buffer, k), (out, k), [tc, k, rows]);
            // At small T, cut along the slab's rows like launch_filled, and summed onto dX (f32).
            match token_chunks::fill_plan(launcher.cuts_reductions(), [tc, k, rows]) {
                (_, 1) => product(dx_f32).accumulate(i > 0).launch(launcher, &call.gemm_f32("kt"), 1)?,
                (len, chunks) => {
                    product(partials).split_k(len, tc * k).launch(launcher, &call.gemm_f32("kt"), 1)?;
                    token_chunks::sum_chunks(launcher, (chunks, tc * k), partials, (dx_f32, i > 0))?;
                }
            }
        }
        let sizes = [tc * k, usize::from(call.accumulate.dx)].map(|v| Arg::I32(v as i32));
        let convert = [&sizes[..], &[dx_f32, call.dx + (t0 * k * 2) as u64].map(Arg::Ptr)].concat();
        launcher.elementwise(&call.pass("bone_from_f32"), tc * k, &convert)?;
    }
    Ok(())
}
