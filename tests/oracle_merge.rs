//! Merge consistency of the oracle: the adapted layer equals a plain linear layer
//! with the merged weight, unmerge restores W, and a zero adapter is the base layer.

mod common;

use bone_kernels::reference::{
    DEFAULT_MAX_CONDITION, bat_conditions, delta_weight, forward, merge, unmerge, unmerge_adapter,
};
use common::{Case, fresh_rng, layer, oracle_cases, random_vec, rel_err};

/// `X W^T + bias` for a plain linear layer.
fn linear(t: usize, k: usize, n: usize, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; t * n];
    for row in 0..t {
        for col in 0..n {
            let dot: f64 = (0..k).map(|j| x[row * k + j] * w[col * k + j]).sum();
            y[row * n + col] = dot + bias[col];
        }
    }
    y
}

#[test]
fn forward_equals_linear_layer_with_merged_weight() {
    let mut rng = fresh_rng("forward_equals_linear_layer_with_merged_weight");
    for case in oracle_cases() {
        let case = Case::random(&mut rng, case, 0.5);
        let label = case.label();
        let Case { shape, t, x, w, b, bias } = case;
        let (k, n) = (shape.k(), shape.n());
        let y = forward(&shape, t, &x, &w, &b, Some(&bias)).unwrap();
        let merged = merge(&shape, &w, &b).unwrap();
        let err = rel_err(&y, &linear(t, k, n, &x, &merged, &bias));
        assert!(err < 1e-12, "{label}: forward vs merged linear {err:.2e}");

        // The adapter's own contribution, checked separately: Y - X W^T = X dW^T.
        let zero_bias = vec![0.0; n];
        let base = linear(t, k, n, &x, &w, &zero_bias);
        let adapter_part: Vec<f64> = (0..t * n).map(|j| y[j] - base[j] - bias[j % n]).collect();
        let delta = delta_weight(&shape, &w, &b).unwrap();
        let err = rel_err(&adapter_part, &linear(t, k, n, &x, &delta, &zero_bias));
        assert!(err < 1e-10, "{label}: adapter contribution {err:.2e}");
    }
}

#[test]
fn unmerge_restores_the_base_weight() {
    let mut rng = fresh_rng("unmerge_restores_the_base_weight");
    for (variant, _, k, n, r) in oracle_cases() {
        let shape = layer(variant, k, n, r);
        let w = random_vec(&mut rng, n * k, 1.0);
        // Small enough that I + B is well conditioned, as trained adapters are.
        let b = random_vec(&mut rng, shape.adapter_len(), 0.2);
        let merged = merge(&shape, &w, &b).unwrap();
        assert!(rel_err(&merged, &w) > 1e-3, "{variant}: the merge must change W");
        let restored = unmerge(&shape, &merged, &b, DEFAULT_MAX_CONDITION).unwrap();
        let err = rel_err(&restored, &w);
        assert!(err < 1e-12, "{variant} K={k} N={n} r={r}: unmerge error {err:.2e}");
        // The same unmerge as a merge, of the adapter that undoes B.
        let undo = unmerge_adapter(&shape, &b, DEFAULT_MAX_CONDITION).unwrap();
        let err = rel_err(&merge(&shape, &merged, &undo).unwrap(), &w);
        assert!(err < 1e-12, "{variant} K={k} N={n} r={r}: merge of the undoing adapter {err:.2e}");
    }
}

#[test]
fn the_undoing_adapter_refuses_what_unmerge_refuses() {
    let shape = layer(bone_kernels::Variant::BatCol, 8, 8, 4);
    let mut b = vec![0.0; shape.adapter_len()];
    for j in 0..4 {
        b[16 + j * 4 + j] = -1.0; // block 1: I + B = 0
    }
    let err = unmerge_adapter(&shape, &b, DEFAULT_MAX_CONDITION).unwrap_err();
    assert_eq!(err.to_string(), "I + B of adapter block 1 is singular; the merge cannot be undone");
    // Block 1's I + B = diag(1e-5, 0.5, 0.5, 0.5): condition number 5e4.
    b[16] = -0.99999;
    b[21] = -0.5;
    b[26] = -0.5;
    b[31] = -0.5;
    let err = unmerge_adapter(&shape, &b, DEFAULT_MAX_CONDITION).unwrap_err();
    assert!(err.to_string().contains("condition number"), "{err}");
    assert!(unmerge_adapter(&shape, &b[1..], DEFAULT_MAX_CONDITION).is_err(), "B's length is checked");
}

#[test]
fn bat_conditions_are_what_unmerge_compares_with_its_limit() {
    let mut rng = fresh_rng("bat_conditions_are_what_unmerge_compares_with_its_limit");
    let r = 4;
    // Block 0: I + B = diag(1e-5, 0.5, 0.5, 0.5), condition 5e4; block 1: I + B a rotation
    // by 0.3 in the first two coordinates, condition 1; block 2: I + B = 0; block 3: random.
    let mut b = vec![0.0; 4 * r * r];
    for (j, d) in [-0.99999, -0.5, -0.5, -0.5].into_iter().enumerate() {
        b[j * r + j] = d;
    }
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    b[16..18].copy_from_slice(&[c - 1.0, -s]);
    b[20..22].copy_from_slice(&[s, c - 1.0]);
    for j in 0..r {
        b[32 + j * r + j] = -1.0;
    }
    b[48..].copy_from_slice(&random_vec(&mut rng, r * r, 0.4));
    let conditions = bat_conditions(r, &b).unwrap();
    assert!((conditions[0] / 5e4 - 1.0).abs() < 1e-9, "{conditions:?}");
    assert!((conditions[1] - 1.0).abs() < 1e-12, "{conditions:?}");
    assert!(conditions[2].is_infinite(), "{conditions:?}");
    // Unmerging the random block passes at its condition number and is refused just under it.
    let shape = layer(bone_kernels::Variant::BatCol, 8, 4, r);
    let random = &b[48..];
    assert!(unmerge_adapter(&shape, random, conditions[3] * (1.0 + 1e-9)).is_ok());
    let err = unmerge_adapter(&shape, random, conditions[3] * (1.0 - 1e-9)).unwrap_err();
    assert!(err.to_string().contains("condition number"), "{err}");
    b[5] = f64::NAN;
    assert!(bat_conditions(r, &b).unwrap()[0].is_nan());
    // Not a whole number of blocks, r = 0, r x r past usize: errors, not panics.
    let partial = bat_conditions(r, &b[..b.len() - 1]).unwrap_err().to_string();
    assert!(partial.contains("has 63 elements, expected 48 (whole r x r blocks of r = 4)"), "{partial}");
    assert!(bat_conditions(0, &b).unwrap_err().to_string().contains("must be at least 1"));
    assert!(bat_conditions(usize::MAX, &b).unwrap_err().to_string().contains("overflows usize"));
}

#[test]
fn zero_adapter_is_the_base_layer() {
    let mut rng = fresh_rng("zero_adapter_is_the_base_layer");
    for (variant, t, k, n, r) in oracle_cases() {
        let shape = layer(variant, k, n, r);
        let x = random_vec(&mut rng, t * k, 1.0);
        let w = random_vec(&mut rng, n * k, 1.0);
        let zeros = vec![0.0; shape.adapter_len()];
        assert_eq!(merge(&shape, &w, &zeros).unwrap(), w, "{variant}");
        let y = forward(&shape, t, &x, &w, &zeros, None).unwrap();
        let err = rel_err(&y, &linear(t, k, n, &x, &w, &vec![0.0; n]));
        assert!(err < 1e-13, "{variant}: zero adapter {err:.2e}");
    }
}
