//! Finite-difference checks of the f64 oracle's backward pass against its forward.

mod common;

use bone_kernels::Dropout;
use bone_kernels::reference::{backward, backward_with_dropout, forward, forward_with_dropout};
use common::{Case, fresh_rng, oracle_cases, random_vec, rel_err};
use rand::RngExt;

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

#[test]
fn backward_with_dropout_matches_finite_differences() {
    let mut rng = fresh_rng("backward_with_dropout_matches_finite_differences");
    let mut changed = 0;
    for case in oracle_cases().into_iter().filter(|case| !case.0.is_bat()) {
        let case = Case::random(&mut rng, case, 0.5);
        let label = case.label();
        let Case { shape, t, x, w, b, bias } = case;
        let dropout = Dropout::new(0.3, rng.random()).unwrap();
        let dy = random_vec(&mut rng, t * shape.n(), 1.0);
        let forward = |x: &[f64], b: &[f64]| forward_with_dropout(&shape, t, x, &w, b, Some(&bias), Some(dropout));
        let loss = |x: &[f64], b: &[f64]| dot(&forward(x, b).unwrap(), &dy);

        let grads = backward_with_dropout(&shape, t, &x, &w, &b, &dy, Some(dropout)).unwrap();
        for (name, analytic, numeric) in [
            ("dX", grads.dx, numeric_gradient(&x, |x| loss(x, &b))),
            ("dB", grads.db, numeric_gradient(&b, |b| loss(&x, b))),
        ] {
            let err = rel_err(&analytic, &numeric);
            assert!(err < 1e-8, "{label} dropout 0.3: {name} relative error {err:.2e}");
        }
        // Dropout acts on the adapter's input only: with B = 0 the layer is the base layer.
        let zero = vec![0.0; b.len()];
        assert_eq!(
            forward(&x, &zero).unwrap(),
            forward_with_dropout(&shape, t, &x, &w, &zero, Some(&bias), None).unwrap()
        );
        changed += usize::from(
            forward(&x, &b).unwrap() != forward_with_dropout(&shape, t, &x, &w, &b, Some(&bias), None).unwrap(),
        );
    }
    // Not vacuous: the mask changed Y (each case keeps all of its 10 to 32 elements of X
    // with probability 0.7^10 at most).
    assert!(changed >= 4, "dropout changed Y in {changed} cases of 8");
}

#[test]
fn dropout_with_p_zero_is_no_dropout_and_bat_variants_refuse_more() {
    let mut rng = fresh_rng("dropout_with_p_zero_is_no_dropout_and_bat_variants_refuse_more");
    for case in oracle_cases() {
        let case = Case::random(&mut rng, case, 0.5);
        let Case { shape, t, x, w, b, bias } = case;
        let none = Dropout::new(0.0, rng.random()).unwrap();
        let dy = random_vec(&mut rng, t * shape.n(), 1.0);
        assert_eq!(
            forward_with_dropout(&shape, t, &x, &w, &b, Some(&bias), Some(none)).unwrap(),
            forward(&shape, t, &x, &w, &b, Some(&bias)).unwrap()
        );
        assert_eq!(
            backward_with_dropout(&shape, t, &x, &w, &b, &dy, Some(none)).unwrap(),
            backward(&shape, t, &x, &w, &b, &dy).unwrap()
        );
        if shape.variant().is_bat() {
            let some = Some(Dropout::new(0.1, 1).unwrap());
            let err = forward_with_dropout(&shape, t, &x, &w, &b, None, some).unwrap_err();
            assert!(matches!(err, bone_kernels::BoneError::DropoutOnBat { .. }), "{err}");
            assert!(backward_with_dropout(&shape, t, &x, &w, &b, &dy, some).is_err());
        }
    }
}
