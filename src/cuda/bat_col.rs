//! BatCol on the GPU. Nothing factors (bone-math.md), so W' is formed, on tensor cores
//! and a bounded slab of output rows at a time, never whole. Read as a `[K, r]` matrix,
//! output block o of W (rows o r .. o r + r) has row q = a (K / r) + i holding
//! `W_{o,i}[a, :]`, so `W'_o = W_o (I + B_o) + onehot B_o` is one small GEMM per block:
//!   forward   per slab: W'[slab] (batched over its blocks), Y[:, slab] = X W'[slab]^T + bias
//!   backward  per slab: G = dY[:, slab]^T X, dB_o = W_o^T G_o (batched) + onehot^T G_o
//!             (G's rows summed over their r-wide chunks), and, if dX is wanted, W'[slab]
//!             and dX += dY[:, slab] W'[slab] (f32)
//! Forming each W' tile in shared memory inside the main GEMM instead would save the
//! slab's round trip through L2 but redo the transform for every token tile (README,
//! "Design"): worth it only when T is small.

use super::launch::{Arg, Gemm, Launcher};
use super::token_chunks;
use super::training::{Call, Pass};
use crate::error::Result;
use crate::shape::LayerShape;

/// Workspace a BatCol pass may use for its slabs of W' and G (bf16 each). The crate's
/// unit tests (the CPU emulator) use 32 KiB so that small layers take several slabs.
const SLAB_BYTES: usize = if cfg!(test) { 32 << 10 } else { 32 << 20 };

/// Rows of W' per slab, a multiple of 128 (so of r), at least 128, at most N: as many as
/// fit `SLAB_BYTES` with W' alone (2 bytes an element) in the forward, with W' and G (4) in
/// the backward. Fewer, larger slabs keep more SMs busy at small T.
fn slab_rows(layer: &LayerShape, pass: Pass) -> usize {
    let bytes_per_element = if pass == Pass::Forward { 2 } else { 4 };
    (SLAB_BYTES / (bytes_per_element * layer.k()) / 128 * 128).max(128).min(layer.n())
}

/// I + B_o, B_o (`[N/r, r, r]` each), onehot `[K, r]`, a W' slab, all in the activations'
/// type; backward adds a G slab (the same type), dX in f32 `[T, K]` and dB's partial sums
/// over chunks of K.
pub(super) fn regions(layer: &LayerShape, tokens: usize, pass: Pass) -> Vec<usize> {
    let (n, k, r) = (layer.n(), layer.k(), layer.r());
    let slab = slab_rows(layer, pass) * k * 2;
    let mut sizes = vec![n * r * 2, n * r * 2, k * r * 2, slab];
    if pass == Pass::Backward {
        let rows = slab_rows(layer, pass);
        sizes.extend([slab, tokens * k * 4, block_grads_partial_bytes(layer, rows)]);
    }
    sizes
}

fn prepare(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    let (k, n, r) = (call.shape.k(), call.shape.n(), call.shape.r());
    let layer = Arg::Layer(call.layer);
    let blocks = [layer, Arg::I32((n / r) as i32), Arg::Ptr(call.b), Arg::Ptr(regions[0]), Arg::Ptr(regions[1])];
    launcher.elementwise(&call.adapter_pass("bone_bat_blocks"), n * r, &blocks)?;
    launcher.elementwise(&call.pass("bone_block_one_hot"), k * r, &[layer, Arg::Ptr(regions[2])])
}

/// W' rows [row0, row0 + rows) into regions[3], `[rows, K]` in the activations' type.
fn form_slab(launcher: &impl Launcher, call: &Call, regions: &[u64], row0: usize, rows: usize) -> Result<()> {
    let (k, r) = (call.shape.k(), call.shape.r());
    let (identity_plus, plain, onehot, slab) = (regions[0], regions[1], regions[2], regions[3]);
    let first_block = (row0 / r * r * r * 2) as u64;
    Gemm::new((call.w + (row0 * k * 2) as u64, r), (identity_plus + first_block, r), (slab, r), [k, r, r])
        .second((onehot, r), (plain + first_block, r), r)
        .strides([r * k, r * r, 0, r * r, r * k])
        .launch(launcher, &call.gemm("kt"), rows / r)
}

pub(super) fn forward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(launcher, call, regions)?;
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    let slab = slab_rows(&call.shape, Pass::Forward);
    for row0 in (0..n).step_by(slab) {
        let rows = slab.min(n - row0);
        form_slab(launcher, call, regions, row0, rows)?;
        // Y[:, row0 ..] (row0 is a multiple of 128: the offsets stay 16-byte aligned).
        let offset = (row0 * 2) as u64;
        let bias = if call.bias == 0 { 0 } else { call.bias + offset };
        Gemm::new((call.x, k), (regions[3], k), (call.y + offset, n), [t, rows, k]).bias(bias).launch(
            launcher,
            &call.gemm("kk"),
            1,
        )?;
    }
    Ok(())
}

/// dB_o `[r, r]` (f32, into `db`) of the `rows / r` output blocks whose rows of W start at
/// `w_blocks`, from their rows of G `[rows, K]`: sum_q W_o[q, :]^T G_o[q, :] + sum_q
/// onehot[q, :]^T G_o[q, :] over the `[K, r]` views. The first is a batched GEMM whose K
/// rows are cut into chunks (one block per r x r output would leave most SMs idle), summed
/// in order through `partials`; the second sums each row of G over its r-wide chunks (a
/// read of G, not a second GEMM over K).
pub(crate) fn block_grads(
    launcher: &impl Launcher,
    call: &Call,
    (w_blocks, g, rows): (u64, u64, usize),
    partials: u64,
    db: u64,
) -> Result<()> {
    let (k, r) = (call.shape.k(), call.shape.r());
    token_chunks::reduce(launcher, (k, rows / r, rows * r), partials, (db, "bone_sum_chunks"), |out, _| {
        let gemm = Gemm::new((w_blocks, r), (g, r), (out, r), [r, r, k]).strides([r * k, r * k, 0, 0, r * r]);
        (gemm, call.gemm_f32("tt"), rows / r)
    })?;
    let chunk_sums = [Arg::Layer(call.layer), Arg::I32(rows as i32), Arg::Ptr(g), Arg::Ptr(db)];
    launcher.elementwise(&call.pass("bone_chunk_sum_add"), rows * r, &chunk_sums)
}

/// Bytes of partial sums [`block_grads`] needs for `rows` rows of W (0 when unsplit).
pub(crate) fn block_grads_partial_bytes(layer: &LayerShape, rows: usize) -> usize {
    token_chunks::partial_bytes(layer.k(), rows / layer.r(), rows * layer.r())
}

pub(super) fn backward(launcher: &impl Launcher, call: &Call, regions: &[u64]) -> Result<()> {
    prepare(launcher, call, regions)?;
    let (t, k, n, r) = (call.tokens, call.shape.k(), call.shape.n(), call.shape.r());
    let (slab_buffer, g, dx_f32, partials) = (regions[3], regions[4], regions[5], regions[6]);
    let slab = slab_rows(&call.shape, Pass::Backward);
    for row0 in (0..n).step_by(slab) {
        let rows = slab.min(n - row0);
        let dy = call.y + (row0 * 2) as u64;
        // G [rows, K] = dY[:, slab]^T X, reduced over T inside each tile (deterministic).
        Gemm::new((dy, n), (call.x, k), (g, k), [rows, k, t]).launch(launcher, &call.gemm("tt"), 1)?;
        let w_blocks = call.w + (row0 * k * 2) as u64;
        block_grads(launcher, call, (w_blocks, g, rows), partials, call.db + (row0 * r * 4) as u64)?;
        if call.dx != 0 {
            form_slab(launcher, call, regions, row0, rows)?;
            Gemm::new((dy, n), (slab_buffer, k), (dx_f32, k), [t, k, rows]).accumulate(row0 > 0).launch(
                launcher,
                &call.gemm_f32("kt"),
                1,
            )?;
        }
    }
    if call.dx != 0 {
        let convert = [Arg::I32((t * k) as i32), Arg::Ptr(dx_f32), Arg::Ptr(call.dx)];
        launcher.elementwise(&call.pass("bone_from_f32"), t * k, &convert)?;
    }
    Ok(())
}
