//! No user input makes the shape checks or the oracle panic: thousands of random sizes,
//! edge values included (0, 1, huge), and buffers of the wrong length.

mod common;

use bone_kernels::reference::{
    DEFAULT_MAX_CONDITION, backward, backward_with_dropout, bat_conditions, delta_weight, forward,
    forward_with_dropout, merge, unmerge, unmerge_adapter,
};
use bone_kernels::{Dims, Dropout, LayerShape, Variant};
use common::fresh_rng;
use rand::RngExt;

fn size(rng: &mut rand::rngs::StdRng) -> usize {
    match rng.random_range(0..6) {
        0 => 0,
        1 => 1,
        2 => usize::MAX >> rng.random_range(0..40),
        3 => 1 << rng.random_range(0..40),
        _ => rng.random_range(1..200),
    }
}

#[test]
fn random_shapes_are_accepted_or_refused_never_panic() {
    let mut rng = fresh_rng("random_shapes_are_accepted_or_refused_never_panic");
    let mut accepted = 0;
    for _ in 0..20_000 {
        let variant = match rng.random_range(0..4) {
            0 => Variant::BatCol,
            1 => Variant::BatRow,
            2 => Variant::Shared,
            _ => Variant::Mini { mini_r: size(&mut rng) },
        };
        let dims = Dims { k: size(&mut rng), n: size(&mut rng), r: size(&mut rng) };
        let Ok(shape) = LayerShape::new(variant, dims) else { continue };
        accepted += 1;
        // Everything a valid shape reports must be computable without overflow.
        let _ = (shape.adapter_dims(), shape.adapter_len(), shape.weight_len(), shape.adapter_layout());
        let t = size(&mut rng);
        let _ = shape.check_tokens(t);
        let _ = shape.check_kernel_indexing(Some(t));
    }
    assert!(accepted > 1000, "the generator must produce valid shapes too ({accepted})");
}

#[test]
fn wrong_buffer_lengths_are_errors() {
    let mut rng = fresh_rng("wrong_buffer_lengths_are_errors");
    for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 4 }] {
        let shape = LayerShape::new(variant, Dims { k: 8, n: 8, r: 4 }).unwrap();
        for _ in 0..200 {
            let t = rng.random_range(0..4);
            let lens: Vec<usize> = (0..4).map(|_| rng.random_range(0..80)).collect();
            let buffers: Vec<Vec<f64>> = lens.iter().map(|&len| vec![0.5; len]).collect();
            let [x, w, b, dy] = [&buffers[0], &buffers[1], &buffers[2], &buffers[3]];
            let right = x.len() == t * 8 && w.len() == 64 && b.len() == shape.adapter_len() && t > 0;
            assert_eq!(forward(&shape, t, x, w, b, None).is_ok(), right, "{variant} t={t} {lens:?}");
            assert_eq!(
                backward(&shape, t, x, w, b, dy).is_ok(),
                right && dy.len() == t * 8,
                "{variant} t={t} {lens:?}"
            );
            let _ = merge(&shape, w, b);
        }
    }
}

#[test]
fn every_reference_function_checks_its_buffers() {
    // The weight functions, the dropout passes and the condition numbers, on buffers of
    // random lengths: an error or a result, never a panic.
    let mut rng = fresh_rng("every_reference_function_checks_its_buffers");
    let dropout = Some(Dropout::new(0.25, 3).unwrap());
    for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 4 }] {
        let shape = LayerShape::new(variant, Dims { k: 8, n: 8, r: 4 }).unwrap();
        for _ in 0..200 {
            let t = rng.random_range(0..4);
            let buffers: Vec<Vec<f64>> = (0..4).map(|_| vec![0.25; rng.random_range(0..80)]).collect();
            let [x, w, b, dy] = [&buffers[0], &buffers[1], &buffers[2], &buffers[3]];
            let weights_right = w.len() == 64 && b.len() == shape.adapter_len();
            assert_eq!(delta_weight(&shape, w, b).is_ok(), weights_right, "{variant} {}, {}", w.len(), b.len());
            assert_eq!(unmerge(&shape, w, b, DEFAULT_MAX_CONDITION).is_ok(), weights_right);
            assert_eq!(unmerge_adapter(&shape, b, DEFAULT_MAX_CONDITION).is_ok(), b.len() == shape.adapter_len());
            let _ = forward_with_dropout(&shape, t, x, w, b, None, dropout);
            let _ = backward_with_dropout(&shape, t, x, w, b, dy, dropout);
            let r = rng.random_range(0..6);
            let whole_blocks = r > 0 && b.len().is_multiple_of(r * r);
            assert_eq!(bat_conditions(r, b).is_ok(), whole_blocks, "r={r} {}", b.len());
        }
    }
}
