//! Finite-difference checks of the f64 oracle's backward pass against its forward.

mod common;

use bone_kernels::reference::{backward, forward};
use common::{Case, fresh_rng, oracle_cases, random_vec, rel_err};

/// Central differences of `loss(v) = sum(Y(v) * C)` with respect to every element of `v`.
fn numeric_gradient(values: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-4;
    let mut probe = values.to_vec();
    (0..values.len())
        .map(|j| {
            probe[j] = values[j] + h;
            let up = loss(&probe);
            probe[j] = values[j] - h;
            let down = loss(&probe);
            probe[j] = values[j];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[test]
fn backward_matches_finite_differences_for_every_variant() {
    let mut rng = fresh_rng("backward_matches_finite_differences_for_every_variant");
    for case in oracle_cases() {
        let case = Case::random(&mut rng, case, 0.5);
        let label = case.label();
        let Case { shape, t, x, w, b, bias } = case;
        let dy = random_vec(&mut rng, t * shape.n(), 1.0);
        let loss = |x: &[f64], b: &[f64], bias: &[f64]| dot(&forward(&shape, t, x, &w, b, Some(bias)).unwrap(), &dy);

        let grads = backward(&shape, t, &x, &w, &b, &dy).unwrap();
        let checks = [
            ("dX", grads.dx, numeric_gradient(&x, |x| loss(x, &b, &bias))),
            ("dB", grads.db, numeric_gradient(&b, |b| loss(&x, b, &bias))),
            ("dbias", grads.dbias, numeric_gradient(&bias, |bias| loss(&x, &b, bias))),
        ];
        for (name, analytic, numeric) in checks {
            let err = rel_err(&analytic, &numeric);
            assert!(err < 1e-8, "{label}: {name} relative error {err:.2e}");
        }
    }
}
