//! The Bat variants' mixed operands, W' = W (I + B) + B (BatCol) and BatRow's X~ and dX,
//! formed in f32 and rounded once (bone-math.md's numerics contract), on every engine, read
//! back from the emulator's workspace: each element must be the nearest value of the
//! activations' type to the exact result on B as the GEMM takes it (rounded to that type),
//! but where f32's own error could tip a near tie. I + B rounded to bf16 (2^-7 apart at 1)
//! before the product would drop B's diagonal; W B plus W added exactly keeps it. B is
//! small here, as early in training (it starts at zero), and of a trained size.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::call::Call;
use super::emulator::{Ty, host_kernels_or_skip};
use super::emulator_tests::{ENGINES, LayerInputs, emulator_for, layer_inputs, random, run, workspace_regions};
use super::handle::GemmEngine;
use super::training::Pass;
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;

/// Asserts that each element of `got` (`[rows, cols]`) is `ty`'s nearest value to its exact
/// value, `exact(row, col)` = (the value, the sum of its terms' sizes), allowing near a tie
/// for an f32 accumulation error of 2^-16 of that size.
pub(super) fn assert_rounded_once(
    label: &str,
    ty: Ty,
    got: &[f64],
    cols: usize,
    exact: impl Fn(usize, usize) -> (f64, f64),
) {
    for (i, &got) in got.iter().enumerate() {
        let (exact, magnitude) = exact(i / cols, i % cols);
        let bound = (ty.round(exact) - exact).abs() + magnitude * f64::powi(2.0, -16);
        assert!(
            (got - exact).abs() <= bound,
            "{label}: element {i} is {got}, the exact value {exact} (bound {bound:e})"
        );
    }
}

/// `sum_a x[row, a0 + a] m(a)` over a < r, and the sum of the terms' sizes.
fn row_times(x: &[f64], ld: usize, row: usize, a0: usize, r: usize, m: impl Fn(usize) -> f64) -> (f64, f64) {
    (0..r).map(|a| x[row * ld + a0 + a] * m(a)).fold((0.0, 0.0), |(sum, size), term| (sum + term, size + term.abs()))
}

/// B (f32) as the GEMM takes it: rounded to the activations' type.
fn taken(b: &[f64], x_ty: Ty) -> Vec<f64> {
    b.iter().map(|&v| x_ty.round(v)).collect()
}

/// Every (activations' type, B's scale, engine): B small as early in training, and trained.
fn cases() -> impl Iterator<Item = (Ty, f64, GemmEngine)> {
    [Ty::Bf16, Ty::F16].into_iter().flat_map(|x_ty| {
        [3e-3, 0.1].into_iter().flat_map(move |b_scale| ENGINES.into_iter().map(move |engine| (x_ty, b_scale, engine)))
    })
}

#[test]
fn batcol_forms_w_prime_in_f32_and_rounds_it_once() {
    if !host_kernels_or_skip("batcol_forms_w_prime_in_f32_and_rounds_it_once") {
        return;
    }
    // One slab holds W' (128 rows of K = 96 in the tests' 32 KiB bound).
    let (t, n, k, r) = (5, 128, 96, 16);
    let shape = LayerShape::new(Variant::BatCol, Dims { k, n, r }).unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    for (x_ty, b_scale, engine) in cases() {
        let emulator = emulator_for(engine);
        let label = format!("BatCol X={x_ty:?} B scale {b_scale:e} {engine:?}");
        let LayerInputs { w, b, call, .. } = layer_inputs(&emulator, shape, t, (x_ty, Ty::F32, b_scale), &mut rng);
        let b_taken = taken(&b, x_ty);
        let call = Call { y: emulator.alloc(t * n * 2), ..call };
        let regions = workspace_regions(&emulator, &shape, t, Pass::Forward, engine);
        run(&emulator, engine, Pass::Forward, &call, &regions);

        // W'[row, col] = W[row, col] + sum_a W[row, i r + a] B_o[a, c] + B_o[row mod r, c].
        let slab = emulator.download(x_ty, regions[2], n * k);
        assert_rounded_once(&format!("{label}: W'"), x_ty, &slab, k, |row, col| {
            let (i, c, block) = (col / r, col % r, &b_taken[row / r * r * r..][..r * r]);
            let (product, size) = row_times(&w, k, row, i * r, r, |a| block[a * r + c]);
            let (w, routed) = (w[row * k + col], block[(row % r) * r + c]);
            (w + product + routed, w.abs() + size + routed.abs())
        });
    }
}

#[test]
fn batrow_adds_x_and_dx_mixed_exactly_and_rounds_once() {
    if !host_kernels_or_skip("batrow_adds_x_and_dx_mixed_exactly_and_rounds_once") {
        return;
    }
    // One chunk of tokens holds X~ and dX~.
    let (t, n, k, r) = (33, 96, 128, 16);
    let shape = LayerShape::new(Variant::BatRow, Dims { k, n, r }).unwrap();
    let mut rng = StdRng::seed_from_u64(22);
    for (x_ty, b_scale, engine) in cases() {
        let emulator = emulator_for(engine);
        let label = format!("BatRow X={x_ty:?} B scale {b_scale:e} {engine:?}");
        let LayerInputs { x, b, call, .. } = layer_inputs(&emulator, shape, t, (x_ty, Ty::F32, b_scale), &mut rng);
        let b_taken = taken(&b, x_ty);
        let dy = random(&mut rng, t * n, 1.0, x_ty);
        let block = |i: usize| &b_taken[i * r * r..][..r * r];

        // X~[t, i r + c] = X[t, i r + c] + sum_a X[t, i r + a] B_i[c, a].
        let forward = workspace_regions(&emulator, &shape, t, Pass::Forward, engine);
        run(&emulator, engine, Pass::Forward, &Call { y: emulator.alloc(t * n * 2), ..call }, &forward);
        let mixed = emulator.download(x_ty, forward[2], t * k);
        assert_rounded_once(&format!("{label}: X~"), x_ty, &mixed, k, |token, col| {
            let (i, c) = (col / r, col % r);
            let (product, size) = row_times(&x, k, token, i * r, r, |a| block(i)[c * r + a]);
            (x[token * k + col] + product, x[token * k + col].abs() + size)
        });

        // dX[t, i r + c] = dX~[t, i r + c] + sum_a (dX~[t, i r + a] + dR[t, a]) B_i[a, c], from
        // the dX~ and dR the backward left in its workspace.
        let backward = workspace_regions(&emulator, &shape, t, Pass::Backward, engine);
        let call = Call { y: emulator.upload(x_ty, &dy), dx: emulator.alloc(t * k * 2), ..call };
        let call = Call { db: emulator.alloc(shape.adapter_len() * 4), dbias: emulator.alloc(n * 4), ..call };
        run(&emulator, engine, Pass::Backward, &call, &backward);
        let dx_mixed = emulator.download(x_ty, backward[2], t * k);
        let d_carry = emulator.download(x_ty, backward[3], t * r);
        let dx = emulator.download(x_ty, call.dx, t * k);
        assert_rounded_once(&format!("{label}: dX"), x_ty, &dx, k, |token, col| {
            let (i, c) = (col / r, col % r);
            let (mixed, mixed_size) = row_times(&dx_mixed, k, token, i * r, r, |a| block(i)[a * r + c]);
            let (carried, carried_size) = row_times(&d_carry, r, token, 0, r, |a| block(i)[a * r + c]);
            let held = dx_mixed[token * k + col];
            (held + mixed + carried, held.abs() + mixed_size + carried_size)
        });
    }
}
