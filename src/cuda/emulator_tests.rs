//! Every variant's GPU launch sequence, on bf16 and f16 activations, run on the CPU
//! emulator and checked against the
//! f64 oracle, on each of the crate's GEMMs (mma.sync, wgmma) and split into the single products a
//! library GEMM (cuBLAS) takes: outputs start as NaN, so an element no launch writes
//! fails the check. Each backward runs again adding to outputs that hold random values.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::call::Call;
use super::emulator::{Emulator, Ty, host_kernels_or_skip};
use super::handle::GemmEngine;
use super::launch::GemmKernels;
use super::params::BoneDropout;
use super::params::BoneLayer;
use super::split::Split;
use super::training::{Accumulate, Pass, region_sizes, run_backward, run_forward};
use crate::dropout::Dropout;
use crate::reference::{backward_with_dropout, forward, forward_with_dropout};
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;
use bone_host_kernels::Landing;

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm).sqrt()
}

/// Values rounded to `ty`, as the device holds them.
pub(super) fn random(rng: &mut StdRng, len: usize, scale: f64, ty: Ty) -> Vec<f64> {
    (0..len)
        .map(|_| {
            let v: f64 = rng.random_range(-scale..scale);
            ty.round(v)
        })
        .collect()
}

pub(super) const ENGINES: [GemmEngine; 4] =
    [GemmEngine::Native, GemmEngine::Wgmma, GemmEngine::WgmmaWarpSpecialized, GemmEngine::Cublas];

/// An emulator running the crate's GEMM kernels of `engine` (mma.sync for the library
/// engine, which launches only the element-wise kernels there).
pub(super) fn emulator_for(engine: GemmEngine) -> Emulator {
    Emulator::new(Landing::Late, GemmKernels::of(engine))
}

/// Runs the launch sequence on the emulator, on the crate's GEMM or split into
/// library-GEMM products.
pub(super) fn run(emulator: &Emulator, engine: GemmEngine, pass: Pass, call: &Call, regions: &[u64]) {
    let split = engine == GemmEngine::Cublas;
    let result = match (split, pass) {
        (false, Pass::Forward) => run_forward(emulator, call, regions),
        (false, Pass::Backward) => run_backward(emulator, call, regions),
        (true, Pass::Forward) => run_forward(&Split(emulator), call, regions),
        (true, Pass::Backward) => run_backward(&Split(emulator), call, regions),
    };
    result.unwrap();
}

/// Fresh random X, W and B (B's entries up to `b_scale`, of type `b_ty`), uploaded, and
/// the call of `shape` over `t` tokens on them.
pub(super) struct LayerInputs {
    pub x: Vec<f64>,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub call: Call,
}

pub(super) fn layer_inputs(
    emulator: &Emulator,
    shape: LayerShape,
    t: usize,
    (x_ty, b_ty, b_scale): (Ty, Ty, f64),
    rng: &mut StdRng,
) -> LayerInputs {
    let (k, n) = (shape.k(), shape.n());
    let x = random(rng, t * k, 1.0, x_ty);
    let w = random(rng, n * k, (3.0 / k as f64).sqrt(), x_ty);
    let b = random(rng, shape.adapter_len(), b_scale, b_ty);
    let addresses = [emulator.upload(x_ty, &x), emulator.upload(x_ty, &w), emulator.upload(b_ty, &b)];
    let layer = BoneLayer::new(&shape, Some(t)).unwrap();
    let call = Call::new(layer, shape, t, (x_ty.suffix(), b_ty.suffix()), addresses).unwrap();
    LayerInputs { x, w, b, call }
}

/// The workspace regions of `pass` on `engine` (the library engine keeps no partial sums),
/// NaN-filled.
pub(super) fn workspace_regions(
    emulator: &Emulator,
    shape: &LayerShape,
    t: usize,
    pass: Pass,
    engine: GemmEngine,
) -> Vec<u64> {
    let sizes = region_sizes(shape, t, pass, engine != GemmEngine::Cublas);
    sizes.iter().map(|&bytes| emulator.alloc(bytes)).collect()
}

pub(super) fn check(
    variant: Variant,
    dims: (usize, usize, usize, usize),
    types: (Ty, Ty),
    options: (bool, bool),
    engine: GemmEngine,
    rng: &mut StdRng,
) {
    let emulator = emulator_for(engine).in_drawn_order(rng);
    check_on(&emulator, variant, dims, types, options, engine, rng);
}

/// `check` on `emulator` (running the GEMM kernels of `engine`).
pub(super) fn check_on(
    emulator: &Emulator,
    variant: Variant,
    (t, n, k, r): (usize, usize, usize, usize),
    (x_ty, b_ty): (Ty, Ty),
    (with_bias, with_dropout): (bool, bool),
    engine: GemmEngine,
    rng: &mut StdRng,
) {
    let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
    let dropout = with_dropout.then(|| Dropout::new(0.25, rng.random()).unwrap());
    let label = format!(
        "{variant} T={t} N={n} K={k} r={r} X={x_ty:?} B={b_ty:?} bias={with_bias} {dropout:?} {engine:?} {:?}",
        emulator.schedule()
    );
    let LayerInputs { x, w, b, call: inputs } =
        layer_inputs(emulator, shape, t, (x_ty, b_ty, 0.5 / (r as f64).sqrt()), rng);
    let bias = random(rng, n, 0.5, x_ty);
    let dy = random(rng, t * n, 1.0, x_ty);
    let mut call = Call {
        bias: if with_bias { emulator.upload(x_ty, &bias) } else { 0 },
        y: emulator.alloc(t * n * 2),
        dropout: BoneDropout::of(dropout),
        ..inputs
    };
    let regions = |pass| workspace_regions(emulator, &shape, t, pass, engine);
    run(emulator, engine, Pass::Forward, &call, &regions(Pass::Forward));
    let y = emulator.download(x_ty, call.y, t * n);
    let bias_ref = with_bias.then_some(bias.as_slice());
    let y_ref = forward_with_dropout(&shape, t, &x, &w, &b, bias_ref, dropout).unwrap();
    let y_base = forward(&shape, t, &x, &w, &vec![0.0; b.len()], bias_ref).unwrap();
    let err = rel_err(&y, &y_ref);
    assert!(err < 1e-2, "{label}: Y relative error {err:.2e}");
    let own: Vec<f64> = y.iter().zip(&y_base).map(|(a, b)| a - b).collect();
    let own_ref: Vec<f64> = y_ref.iter().zip(&y_base).map(|(a, b)| a - b).collect();
    let err = rel_err(&own, &own_ref);
    assert!(err < 2e-2, "{label}: adapter contribution relative error {err:.2e}");

    call.y = emulator.upload(x_ty, &dy);
    call.bias = 0;
    call.dx = emulator.alloc(t * k * 2);
    call.db = emulator.alloc(shape.adapter_len() * 4);
    call.dbias = emulator.alloc(n * 4);
    run(emulator, engine, Pass::Backward, &call, &regions(Pass::Backward));
    let grads = backward_with_dropout(&shape, t, &x, &w, &b, &dy, dropout).unwrap();
    let outputs = [
        ("dX", x_ty, call.dx, &grads.dx),
        ("dB", Ty::F32, call.db, &grads.db),
        ("dbias", Ty::F32, call.dbias, &grads.dbias),
    ];
    for (name, ty, address, want) in outputs {
        let got = emulator.download(ty, address, want.len());
        let err = rel_err(&got, want);
        assert!(err < 1e-2, "{label}: {name} relative error {err:.2e}");
    }

    // The same backward adding to its outputs, which hold other random values of the
    // gradients' size (so that neither term alone passes).
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    let held: Vec<Vec<f64>> =
        outputs.iter().map(|&(_, ty, _, want)| random(rng, want.len(), 2.0 * rms(want), ty)).collect();
    call.accumulate = Accumulate::ALL;
    (call.dx, call.db, call.dbias) =
        (emulator.upload(x_ty, &held[0]), emulator.upload(Ty::F32, &held[1]), emulator.upload(Ty::F32, &held[2]));
    run(emulator, engine, Pass::Backward, &call, &regions(Pass::Backward));
    for (i, (name, ty, address)) in
        [("dX", x_ty, call.dx), ("dB", Ty::F32, call.db), ("dbias", Ty::F32, call.dbias)].into_iter().enumerate()
    {
        let want: Vec<f64> = held[i].iter().zip(outputs[i].3).map(|(h, g)| h + g).collect();
        let err = rel_err(&emulator.download(ty, address, want.len()), &want);
        assert!(err < 1e-2, "{label}: accumulated {name} relative error {err:.2e}");
    }
}

#[test]
fn every_variants_launch_sequence_computes_the_oracles_answer() {
    if !host_kernels_or_skip("every_variants_launch_sequence_computes_the_oracles_answer") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    let mut case = 0;
    for (n, k) in [(256, 96), (96, 256)] {
        for r in [16, 32] {
            for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 16 }] {
                for t in [1, 33] {
                    case += 1;
                    // Each variant meets both activation types, each with another B type.
                    let x_ty = if t == 1 { Ty::Bf16 } else { Ty::F16 };
                    let b_ty = if (case / 2) % 2 == 0 { Ty::F32 } else { Ty::Bf16 };
                    for engine in ENGINES {
                        // The shared block and mini drop their input at T = 33.
                        let dropout = !variant.is_bat() && t == 33;
                        check(variant, (t, n, k, r), (x_ty, b_ty), (case % 3 != 0, dropout), engine, &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn the_smallest_and_largest_blocks_run_every_variant() {
    if !host_kernels_or_skip("the_smallest_and_largest_blocks_run_every_variant") {
        return;
    }
    // r = 8: one lane holds a row's 8 columns of S (five butterfly steps), an r-wide
    // product's K is one 16-byte chunk. r = 256: every lane holds S (no butterfly) and lane
    // 0 writes the bias columns too; W' slabs are whole output blocks of 256 rows. Either
    // way BatCol's dB runs unfused on the crate's GEMMs too (the fused kernel takes r = 16
    // to 128). T = 300 at r = 8: dbias and the token reductions in two chunks. N = 512 and
    // K = 72: four slabs of W' at r = 8; N = K = 256 at r = 256, one block, and K = 264 for
    // the shared block: a padded last chunk.
    let mut rng = StdRng::seed_from_u64(16);
    for (r, n, k, tokens) in [(8, 512, 72, 300), (256, 256, 256, 33)] {
        for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 16 }] {
            let k = if r == 256 && !variant.is_bat() { 264 } else { k };
            for engine in ENGINES {
                for (t, x_ty) in [(1, Ty::Bf16), (tokens, Ty::F16)] {
                    let dropout = !variant.is_bat() && t > 1;
                    check(variant, (t, n, k, r), (x_ty, Ty::F32), (true, dropout), engine, &mut rng);
                }
            }
        }
    }
}

#[test]
fn batcol_takes_several_slabs_here() {
    let shape = LayerShape::new(Variant::BatCol, Dims { k: 96, n: 256, r: 16 }).unwrap();
    let forward = region_sizes(&shape, 1, Pass::Forward, true);
    assert!(forward[2] < 256 * 96 * 2, "the W' slab must be smaller than W so the slab loop runs more than once");
}

#[test]
fn reductions_split_into_chunks_match_the_oracle() {
    if !host_kernels_or_skip("reductions_split_into_chunks_match_the_oracle") {
        return;
    }
    // 513 tokens: two chunks, of 320 and 193, for the dB reductions (see token_chunks), in
    // one launch.
    assert_eq!(super::token_chunks::plan(true, 513, 1), (320, 2));
    let mut rng = StdRng::seed_from_u64(12);
    for variant in [Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 16 }] {
        for engine in ENGINES {
            check(variant, (513, 64, 96, 32), (Ty::Bf16, Ty::F32), (true, !variant.is_bat()), engine, &mut rng);
        }
    }
    // BatRow's X~ a chunk of tokens at a time (256 here, the unit tests' bound at K = 256):
    // 600 tokens in three chunks, dB summed over them.
    for engine in ENGINES {
        check(Variant::BatRow, (600, 64, 256, 32), (Ty::Bf16, Ty::Bf16), (true, false), engine, &mut rng);
    }
    // 640 tokens: two whole chunks of 320 (one strided batch for a library GEMM).
    assert_eq!(super::token_chunks::plan(true, 640, 1), (320, 2));
    for engine in ENGINES {
        check(Variant::Shared, (640, 64, 96, 32), (Ty::Bf16, Ty::F32), (false, false), engine, &mut rng);
    }
    // The main GEMMs at small T, cut along K (their tiles alone would leave SMs idle): the
    // shared block's forward over K = 528 (its appended S Bfull^T in the first chunk only),
    // and its dX over N = 528 below; BatRow's forward and dX~ below too.
    for engine in ENGINES {
        check(Variant::Shared, (33, 96, 528, 16), (Ty::Bf16, Ty::F32), (true, false), engine, &mut rng);
        // With dropout dY W is added onto the dropped tiled term, here through the K cut.
        check(Variant::Shared, (33, 96, 528, 16), (Ty::Bf16, Ty::F32), (false, true), engine, &mut rng);
    }
    // The [T, r] products at small T, split too: the shared block's U over N = 528, BatRow's
    // R over K = 528 and dR over N = 528 (two chunks, of 320 and 208).
    for (variant, n, k) in
        [(Variant::Shared, 528, 96), (Variant::Mini { mini_r: 16 }, 528, 96), (Variant::BatRow, 528, 528)]
    {
        for engine in ENGINES {
            let dropout = matches!(variant, Variant::Mini { .. });
            check(variant, (33, n, k, 16), (Ty::Bf16, Ty::F32), (true, dropout), engine, &mut rng);
        }
    }
    // BatCol reduces dB_o over K: K = 528 in two chunks of 320 and 208, one slab of 128 rows
    // (8 blocks, 16 grid layers).
    assert_eq!(super::token_chunks::plan(true, 528, 128 / 16), (320, 2));
    for engine in ENGINES {
        check(Variant::BatCol, (33, 128, 528, 16), (Ty::F16, Ty::Bf16), (true, false), engine, &mut rng);
        // Two slabs of 512 rows (K = 32 here): each slab's dX, cut along its rows, summed onto
        // dX's f32 accumulator.
        check(Variant::BatCol, (33, 1024, 32, 16), (Ty::Bf16, Ty::F32), (true, false), engine, &mut rng);
        // Four slabs of 128 rows (K = 128) and an accumulator of 128 tokens: T = 300 in three
        // chunks of tokens (128, 128, 44), the slabs formed again for each, the middle one
        // taking them in reverse.
        check(Variant::BatCol, (300, 512, 128, 16), (Ty::Bf16, Ty::F32), (false, false), engine, &mut rng);
    }
}

#[test]
fn long_rows_are_summed_over_their_chunks_by_whole_warps() {
    if !host_kernels_or_skip("long_rows_are_summed_over_their_chunks_by_whole_warps") {
        return;
    }
    // S (the shared block, mini) and BatCol's chunk sums of G (on a library GEMM) take a
    // warp per row, four loads of 256 elements at a time, then a butterfly over the lanes
    // holding the same columns: K = 1000, 1008 and 1152 run the four-load loop and its tail, at
    // r = 16 (four butterfly steps) and r = 128 (one). BatCol at enough tokens that its
    // identity term comes from G's chunk sums, not from S (T (N + K) >= N K). At K = 1000
    // and 1008 one lane's next four loads would end exactly at the row's end (K - 768 is
    // 8 times a lane): the loop must leave those to the tail, not read past the row.
    let mut rng = StdRng::seed_from_u64(14);
    for engine in ENGINES {
        check(Variant::Shared, (5, 64, 1000, 16), (Ty::Bf16, Ty::F32), (true, true), engine, &mut rng);
        check(Variant::Mini { mini_r: 32 }, (3, 128, 1152, 128), (Ty::F16, Ty::F32), (false, false), engine, &mut rng);
        check(Variant::BatCol, (61, 64, 1008, 16), (Ty::Bf16, Ty::Bf16), (false, false), engine, &mut rng);
        check(Variant::BatCol, (116, 128, 1152, 128), (Ty::Bf16, Ty::F32), (true, false), engine, &mut rng);
    }
}

#[test]
fn the_shared_block_takes_k_not_a_multiple_of_r() {
    if !host_kernels_or_skip("the_shared_block_takes_k_not_a_multiple_of_r") {
        return;
    }
    // K = 104 = 3 x 32 + 8: the last chunk of X is zero-padded, as PEFT does. N = 72 is not
    // a whole number of dbias's strips (64 columns): the second is
    // one group of 8 columns wide.
    let mut rng = StdRng::seed_from_u64(13);
    for variant in [Variant::Shared, Variant::Mini { mini_r: 24 }] {
        for engine in ENGINES {
            // And with dropout: the padded last chunk is masked like the others.
            for dropout in [false, true] {
                check(variant, (9, 72, 104, 32), (Ty::F16, Ty::F32), (true, dropout), engine, &mut rng);
            }
            // 300 tokens: dbias in two chunks of tokens, over the ragged strip too.
            check(variant, (300, 72, 104, 32), (Ty::Bf16, Ty::F32), (true, false), engine, &mut rng);
        }
    }
}

#[test]
fn batcol_partial_sums_stay_within_the_documented_bound() {
    // Chunks (or the fused kernel's runs) times output tiles stay within the 256 blocks
    // aimed at: 128 Ki x r bytes (1 Ki x r^2 for the unfused sequence's, no more for r <= 128).
    super::workspace::use_production_bounds();
    for (n, k, r) in [(4096, 4096, 64), (11008, 4096, 64), (4096, 11008, 128), (16384, 16384, 16), (4096, 4096, 8)] {
        let shape = LayerShape::new(Variant::BatCol, Dims { k, n, r }).unwrap();
        let partials = *region_sizes(&shape, 4096, Pass::Backward, true).last().unwrap();
        assert!(partials <= 128 * 1024 * r, "N={n} K={k} r={r}: {partials} bytes of partial sums");
    }
}

#[test]
fn batcol_forward_partial_sums_stay_within_the_documented_bound() {
    // A slab's Y is cut along K only while its tiles do not fill the GPU (T x rows under
    // 128 x 128^2), into at most 256 blocks' worth of chunks: 16 MiB of partial sums.
    super::workspace::use_production_bounds();
    for t in [1, 7, 128, 512, 1000, 4096] {
        for (n, k, r) in [(4096, 4096, 64), (11008, 4096, 64), (4096, 11008, 128), (16384, 16384, 16), (256, 16384, 16)]
        {
            let shape = LayerShape::new(Variant::BatCol, Dims { k, n, r }).unwrap();
            let partials = region_sizes(&shape, t, Pass::Forward, true)[3];
            assert!(partials <= 16 << 20, "T={t} N={n} K={k}: {partials} bytes of Y's partial sums");
        }
    }
}

#[test]
fn split_products_keep_their_partial_sums_within_the_documented_bound() {
    // 128 Ki x r bytes for each chunked [T, r] product (the shared block's U, BatRow's R, dR)
    // and for dB's; at small T a main GEMM's partial sums share one of those regions and
    // take at most 16 MiB (fill_partial_bytes).
    for t in [1, 7, 128, 512, 1000, 4096, 65536] {
        for (n, k, r) in [(4096, 4096, 64), (11008, 4096, 64), (4096, 11008, 128), (16384, 16384, 16)] {
            for variant in [Variant::Shared, Variant::BatRow] {
                let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
                for pass in [Pass::Forward, Pass::Backward] {
                    let regions = region_sizes(&shape, t, pass, true);
                    let partials: &[usize] = match (variant, pass) {
                        (Variant::Shared, Pass::Forward) => &[3],
                        (Variant::Shared, Pass::Backward) => &[6, 7],
                        _ => &[5, 6],
                    };
                    for &i in partials {
                        let bytes = regions[i];
                        let bound = (128 * 1024 * r).max(16 << 20);
                        assert!(bytes <= bound, "{variant} T={t} N={n} K={k} r={r} {pass:?} region {i}: {bytes} bytes");
                    }
                }
            }
        }
    }
}
