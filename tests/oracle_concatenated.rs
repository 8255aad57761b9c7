//! Layers that read one input (Llama's q, k and v projections; gate and up) can run as
//! one call on their weights stacked along N, for the variants whose adapter is chosen by
//! the output (BatCol: B stacked along its first axis; the shared block: B's columns
//! side by side, row by row): Y is the layers' outputs side by side, dX their sum, dB
//! theirs stacked. Mini (one [r, mini_r] block per layer) and BatRow (blocks chosen by the
//! input) do not stack.

mod common;

use bone_kernels::Variant;
use bone_kernels::reference::{backward, forward};
use common::{fresh_rng, layer, random_vec, rel_err};

/// The layers' values stacked along N: `rows` rows of each layer's `[rows, width_i]`
/// block side by side (B of the shared block, `[r, N_i]`), or, with one row, the buffers
/// one after the other (W `[N_i, K]`, BatCol's B `[N_i / r, r, r]`, a bias `[N_i]`).
fn side_by_side(rows: usize, parts: &[Vec<f64>]) -> Vec<f64> {
    let mut out = Vec::new();
    for row in 0..rows {
        for part in parts {
            let width = part.len() / rows;
            out.extend_from_slice(&part[row * width..(row + 1) * width]);
        }
    }
    out
}

#[test]
fn layers_reading_one_input_run_as_one_call_on_their_stacked_weights() {
    let mut rng = fresh_rng("layers_reading_one_input_run_as_one_call_on_their_stacked_weights");
    let (t, k, r, widths) = (5, 16, 4, [8, 12, 4]);
    for variant in [Variant::Shared, Variant::BatCol] {
        let x = random_vec(&mut rng, t * k, 1.0);
        let layers: Vec<_> = widths.iter().map(|&n| layer(variant, k, n, r)).collect();
        let ws: Vec<Vec<f64>> = widths.iter().map(|&n| random_vec(&mut rng, n * k, 0.5)).collect();
        let bs: Vec<Vec<f64>> = layers.iter().map(|l| random_vec(&mut rng, l.adapter_len(), 0.3)).collect();
        let dys: Vec<Vec<f64>> = widths.iter().map(|&n| random_vec(&mut rng, t * n, 1.0)).collect();

        let total: usize = widths.iter().sum();
        let stacked = layer(variant, k, total, r);
        let w = side_by_side(1, &ws);
        let b = side_by_side(if variant == Variant::Shared { r } else { 1 }, &bs);
        let dy = side_by_side(t, &dys);

        // Y: the layers' outputs side by side, token by token.
        let ys: Vec<Vec<f64>> = (0..3).map(|i| forward(&layers[i], t, &x, &ws[i], &bs[i], None).unwrap()).collect();
        let y = forward(&stacked, t, &x, &w, &b, None).unwrap();
        assert!(rel_err(&y, &side_by_side(t, &ys)) < 1e-14, "{variant}: Y");

        // dX: the sum of the layers'; dB: theirs stacked like B.
        let grads: Vec<_> = (0..3).map(|i| backward(&layers[i], t, &x, &ws[i], &bs[i], &dys[i]).unwrap()).collect();
        let all = backward(&stacked, t, &x, &w, &b, &dy).unwrap();
        let dx_sum: Vec<f64> = (0..t * k).map(|j| grads.iter().map(|g| g.dx[j]).sum()).collect();
        assert!(rel_err(&all.dx, &dx_sum) < 1e-14, "{variant}: dX");
        let dbs: Vec<Vec<f64>> = grads.iter().map(|g| g.db.clone()).collect();
        let db_rows = if variant == Variant::Shared { r } else { 1 };
        assert!(rel_err(&all.db, &side_by_side(db_rows, &dbs)) < 1e-14, "{variant}: dB");
    }
}
