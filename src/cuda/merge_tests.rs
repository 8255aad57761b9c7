//! The merge kernels (kernels/merge.cu), every W and B storage type, run from their own
//! source on the CPU (`bone-host-kernels`) against the f64 oracle, into NaN-filled output:
//! the merged weight, and the adapter's own part W' - W checked separately.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::emulator::{Emulator, Ty, host_kernels_or_skip};
use super::merge::launch_merge;
use crate::reference::{DEFAULT_MAX_CONDITION, delta_weight, merge, unmerge_adapter};
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    (diff / want.iter().map(|w| w * w).sum::<f64>()).sqrt()
}

/// Random values already rounded to `ty`, so the oracle sees what the kernel reads.
fn random(emulator: &Emulator, rng: &mut StdRng, len: usize, scale: f64, ty: Ty) -> (u64, Vec<f64>) {
    let values: Vec<f64> = (0..len).map(|_| rng.random_range(-scale..scale)).collect();
    let address = emulator.upload(ty, &values);
    (address, emulator.download(ty, address, len))
}

#[test]
fn every_merge_kernel_matches_the_oracle() {
    if !host_kernels_or_skip("every_merge_kernel_matches_the_oracle") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(31);
    let shapes = [
        (Variant::BatCol, Dims { k: 96, n: 64, r: 32 }),
        (Variant::BatRow, Dims { k: 48, n: 80, r: 16 }),
        (Variant::Shared, Dims { k: 100, n: 96, r: 32 }),
        (Variant::Mini { mini_r: 16 }, Dims { k: 100, n: 96, r: 32 }),
    ];
    for (variant, dims) in shapes {
        let shape = LayerShape::new(variant, dims).unwrap();
        for (w_ty, tolerance) in [(Ty::F32, 1e-6), (Ty::F16, 2e-3), (Ty::Bf16, 1e-2)] {
            for b_ty in [Ty::F32, Ty::F16, Ty::Bf16] {
                let label = format!("{variant} {dims:?} W {w_ty:?} B {b_ty:?}");
                let emulator = Emulator::default();
                let (w, w_values) = random(&emulator, &mut rng, shape.weight_len(), 1.0, w_ty);
                let (b, b_values) = random(&emulator, &mut rng, shape.adapter_len(), 0.2, b_ty);
                let out = emulator.alloc(shape.weight_len() * 4);
                launch_merge(&emulator, &shape, (w_ty.suffix(), b_ty.suffix()), [w, b, out]).unwrap();
                let merged = emulator.download(w_ty, out, shape.weight_len());
                let err = rel_err(&merged, &merge(&shape, &w_values, &b_values).unwrap());
                assert!(err < tolerance, "{label}: merged weight relative error {err:.2e}");
                let own: Vec<f64> = merged.iter().zip(&w_values).map(|(m, w)| m - w).collect();
                let err = rel_err(&own, &delta_weight(&shape, &w_values, &b_values).unwrap());
                assert!(err < 4.0 * tolerance, "{label}: adapter contribution relative error {err:.2e}");
            }
        }
    }
}

#[test]
fn the_merge_kernel_unmerges_with_the_undoing_adapter() {
    if !host_kernels_or_skip("the_merge_kernel_unmerges_with_the_undoing_adapter") {
        return;
    }
    // What `bone unmerge --engine gpu` runs: the merge kernel on W' with C, the adapter that
    // undoes B (computed in f64, given as f32), gives W back within f32 arithmetic.
    let mut rng = StdRng::seed_from_u64(37);
    for (variant, dims) in [
        (Variant::BatCol, Dims { k: 96, n: 64, r: 32 }),
        (Variant::BatRow, Dims { k: 48, n: 80, r: 16 }),
        (Variant::Mini { mini_r: 16 }, Dims { k: 100, n: 96, r: 32 }),
    ] {
        let shape = LayerShape::new(variant, dims).unwrap();
        let emulator = Emulator::default();
        let w: Vec<f64> = (0..shape.weight_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f64> = (0..shape.adapter_len()).map(|_| rng.random_range(-0.2..0.2)).collect();
        let merged = emulator.upload(Ty::F32, &merge(&shape, &w, &b).unwrap());
        let undo = emulator.upload(Ty::F32, &unmerge_adapter(&shape, &b, DEFAULT_MAX_CONDITION).unwrap());
        let out = emulator.alloc(shape.weight_len() * 4);
        launch_merge(&emulator, &shape, (Ty::F32.suffix(), Ty::F32.suffix()), [merged, undo, out]).unwrap();
        let err = rel_err(&emulator.download(Ty::F32, out, shape.weight_len()), &w);
        assert!(err < 1e-6, "{variant} {dims:?}: W after unmerging on the merge kernel, relative error {err:.2e}");
    }
}
