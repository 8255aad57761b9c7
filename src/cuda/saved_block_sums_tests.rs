//! The shared block and mini keep S instead of X between the passes: the forward writes S
//! `[T, r]` for the caller (`Call::saved_s`), each element the sum of X's chunks (after
//! dropout) rounded once, without changing Y; the backward from it, with X absent (its
//! address 0), gives bitwise the backward from X (which `emulator_tests` checks against
//! the oracle), on every engine, with and without bias, dropout and accumulation.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::call::Call;
use super::emulator::{Emulator, Ty, host_kernels_or_skip};
use super::emulator_tests::{ENGINES, LayerInputs, emulator_for, layer_inputs, random, run, workspace_regions};
use super::params::BoneDropout;
use super::rounded_once_tests::assert_rounded_once;
use super::training::{Accumulate, Pass};
use crate::dropout::Dropout;
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;

/// The backward's outputs (dX, dB, dbias), as the emulator holds them.
fn backward_outputs(emulator: &Emulator, call: &Call, x_ty: Ty) -> [Vec<f64>; 3] {
    let (t, k, n) = (call.tokens, call.shape.k(), call.shape.n());
    [
        emulator.download(x_ty, call.dx, t * k),
        emulator.download(Ty::F32, call.db, call.shape.adapter_len()),
        emulator.download(Ty::F32, call.dbias, n),
    ]
}

#[test]
fn the_backward_from_saved_block_sums_is_the_backward_from_x() {
    if !host_kernels_or_skip("the_backward_from_saved_block_sums_is_the_backward_from_x") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(31);
    // K = 104: a zero-padded last chunk; T = 300: dB's reduction in two chunks of tokens.
    let cases = [(33, 96, 104, 16, Ty::Bf16), (300, 64, 128, 32, Ty::F16), (1, 64, 96, 8, Ty::Bf16)];
    for (t, n, k, r, x_ty) in cases {
        for variant in [Variant::Shared, Variant::Mini { mini_r: 16 }] {
            let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
            for engine in ENGINES {
                for (with_bias, with_dropout) in [(true, true), (false, false)] {
                    let label = format!("{variant} T={t} N={n} K={k} r={r} {x_ty:?} {engine:?} bias={with_bias}");
                    let emulator = emulator_for(engine).in_drawn_order(&mut rng);
                    let LayerInputs { x, call: inputs, .. } =
                        layer_inputs(&emulator, shape, t, (x_ty, Ty::F32, 0.1), &mut rng);
                    let dropout = with_dropout.then(|| Dropout::new(0.25, rng.random()).unwrap());
                    let bias = if with_bias { emulator.upload(x_ty, &random(&mut rng, n, 0.5, x_ty)) } else { 0 };
                    let forward = Call { bias, dropout: BoneDropout::of(dropout), ..inputs };
                    let regions = |pass| workspace_regions(&emulator, &shape, t, pass, engine);

                    // The forward, without and with S saved: the same Y, and S rounded once.
                    let plain = Call { y: emulator.alloc(t * n * 2), ..forward };
                    run(&emulator, engine, Pass::Forward, &plain, &regions(Pass::Forward));
                    let saving = Call { y: emulator.alloc(t * n * 2), saved_s: emulator.alloc(t * r * 2), ..forward };
                    run(&emulator, engine, Pass::Forward, &saving, &regions(Pass::Forward));
                    let y = |call: &Call| emulator.download(x_ty, call.y, t * n);
                    assert_eq!(y(&saving), y(&plain), "{label}: Y with S saved");
                    let s = emulator.download(x_ty, saving.saved_s, t * r);
                    assert_rounded_once(&format!("{label}: S"), x_ty, &s, r, |row, j| {
                        let terms = (j..k)
                            .step_by(r)
                            .map(|col| x[row * k + col] * dropout.map_or(1.0, |d| d.factor((row * k + col) as u64)));
                        terms.fold((0.0, 0.0), |(sum, size), term| (sum + term, size + term.abs()))
                    });

                    // The backward from X, then from S with X absent, each overwriting and
                    // then adding to outputs that hold the same random values.
                    let dy = emulator.upload(x_ty, &random(&mut rng, t * n, 1.0, x_ty));
                    let held = [
                        random(&mut rng, t * k, 1.0, x_ty),
                        random(&mut rng, shape.adapter_len(), 1.0, Ty::F32),
                        random(&mut rng, n, 1.0, Ty::F32),
                    ];
                    for accumulate in [Accumulate::NONE, Accumulate::ALL] {
                        let outputs = |input: Call| {
                            let call = Call {
                                y: dy,
                                dx: emulator.upload(x_ty, &held[0]),
                                db: emulator.upload(Ty::F32, &held[1]),
                                dbias: emulator.upload(Ty::F32, &held[2]),
                                accumulate,
                                ..input
                            };
                            run(&emulator, engine, Pass::Backward, &call, &regions(Pass::Backward));
                            backward_outputs(&emulator, &call, x_ty)
                        };
                        let from_x = outputs(Call { bias: 0, ..forward });
                        let from_s = outputs(Call { bias: 0, x: 0, saved_s: saving.saved_s, ..forward });
                        for (name, (a, b)) in ["dX", "dB", "dbias"].iter().zip(from_x.iter().zip(&from_s)) {
                            assert!(a.iter().all(|v| v.is_finite()), "{label} {accumulate:?}: {name} from X unwritten");
                            let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(same, "{label} {accumulate:?}: {name} from S differs from {name} from X");
                        }
                    }
                }
            }
        }
    }
}
