//! Every variant's launch sequence on layers drawn at random (seeded), against the f64
//! oracle through the same check as `emulator_tests`: T from 1 to 400, N and K any
//! multiple of 8 (of r for the Bat variants) up to 320, r from 8 to 128, mini_r any
//! divisor of N (odd ones too), each engine, both activation and adapter types, bias and
//! dropout drawn. The fixed lists elsewhere aim at known edges; this reaches the
//! combinations nobody listed. `BONE_RANDOM_SHAPES=<cases>[:<seed>]` runs more (e.g.
//! `BONE_RANDOM_SHAPES=400:7 cargo test --release --lib random_layers`).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::emulator::{Ty, host_kernels_or_skip, random_cases};
use super::emulator_tests::{ENGINES, check};
use crate::variant::Variant;

/// Cases run by default, and their seed.
const CASES: usize = 24;
const SEED: u64 = 20261129;

/// A layer the kernels take: (variant, (T, N, K, r)).
fn draw_layer(rng: &mut StdRng) -> (Variant, (usize, usize, usize, usize)) {
    let r = [8, 16, 16, 32, 32, 64, 128][rng.random_range(0..7)];
    let t = if rng.random_bool(0.2) { rng.random_range(1..=8) } else { rng.random_range(1..=400) };
    // A multiple of `step` from `at_least` up to 320.
    let multiple = |rng: &mut StdRng, step: usize, at_least: usize| {
        step * rng.random_range(at_least.div_ceil(step).max(1)..=320 / step)
    };
    match rng.random_range(0..4) {
        0 => (Variant::BatCol, (t, multiple(rng, r, r), multiple(rng, r, r), r)),
        1 => (Variant::BatRow, (t, multiple(rng, r, r), multiple(rng, r, r), r)),
        shared => {
            let (n, k) = (multiple(rng, 8, 8), multiple(rng, 8, r));
            if shared == 2 {
                return (Variant::Shared, (t, n, k, r));
            }
            let divisors: Vec<usize> = (1..=n).filter(|d| n % d == 0).collect();
            let mini_r = divisors[rng.random_range(0..divisors.len())];
            (Variant::Mini { mini_r }, (t, n, k, r))
        }
    }
}

#[test]
fn random_layers_compute_the_oracles_answer() {
    if !host_kernels_or_skip("random_layers_compute_the_oracles_answer") {
        return;
    }
    let (cases, seed) = random_cases("BONE_RANDOM_SHAPES", (CASES, SEED));
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..cases {
        let (variant, dims) = draw_layer(&mut rng);
        let engine = ENGINES[rng.random_range(0..ENGINES.len())];
        let x_ty = if rng.random_bool(0.5) { Ty::Bf16 } else { Ty::F16 };
        let b_ty = if rng.random_bool(0.5) { Ty::F32 } else { Ty::Bf16 };
        let bias = rng.random_bool(0.5);
        let dropout = !variant.is_bat() && rng.random_bool(0.3);
        eprintln!(
            "case {case} (seed {seed}): {variant} {dims:?} {engine:?} X={x_ty:?} B={b_ty:?} bias={bias} dropout={dropout}"
        );
        check(variant, dims, (x_ty, b_ty), (bias, dropout), engine, &mut rng);
    }
}
