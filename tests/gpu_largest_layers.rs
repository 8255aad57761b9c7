//! The largest sizes issue #3 names, on the GPU: T = 65536 tokens through a layer with
//! N = K = 16384 (X, Y, dY and dX 2 GiB each: every element index near 2^30), every
//! variant, forward and backward. Y and dX are checked on sampled token rows (the first,
//! the last and two drawn) against the f64 oracle, dbias whole, and dB for having been
//! written everywhere (its full oracle is T N K, out of reach on the host). Y, dX and dB
//! are poisoned with NaN before each call. Skips with a printed notice without a GPU.

mod common;

use bone_kernels::Variant;
use bone_kernels::cuda::{Accumulate, LayerGrads, LayerWeights, Workspace};
use bone_kernels::reference::{backward, forward};
use common::{fresh_rng, gemm_engines, gpu_or_skip, layer, rel_err};
use cudarc::driver::{CudaSlice, CudaStream};
use half::bf16;
use rand::RngExt;
use rand::rngs::StdRng;
use std::sync::Arc;

const TOKENS: usize = 65536;
const SIZE: usize = 16384;
const R: usize = 64;

/// Uniform bf16 values in [-scale, scale] (fast: 2^30 of them).
fn random_bf16(rng: &mut StdRng, len: usize, scale: f32) -> Vec<bf16> {
    (0..len).map(|_| bf16::from_f32(rng.random_range(-scale..scale))).collect()
}

/// The `picked` rows of a `[rows, width]` matrix, in f64.
fn rows_of(values: &[bf16], width: usize, picked: &[usize]) -> Vec<f64> {
    picked.iter().flat_map(|&row| values[row * width..(row + 1) * width].iter().map(|v| v.to_f64())).collect()
}

/// The `picked` rows of a device `[rows, width]` matrix, in f64.
fn device_rows(stream: &Arc<CudaStream>, values: &CudaSlice<bf16>, width: usize, picked: &[usize]) -> Vec<f64> {
    picked
        .iter()
        .flat_map(|&row| stream.clone_dtoh(&values.slice(row * width..(row + 1) * width)).unwrap())
        .map(|v| v.to_f64())
        .collect()
}

#[test]
fn gpu_the_largest_layers_match_the_oracle_on_sampled_rows() {
    let test = "gpu_the_largest_layers_match_the_oracle_on_sampled_rows";
    let Some(mut kernels) = gpu_or_skip(test) else { return };
    let mut rng = fresh_rng(test);
    let stream = kernels.stream().clone();
    let engines = gemm_engines(&kernels);
    let (t, n, k) = (TOKENS, SIZE, SIZE);
    let (x, dy) = (random_bf16(&mut rng, t * k, 1.0), random_bf16(&mut rng, t * n, 1.0));
    let w = random_bf16(&mut rng, n * k, (3.0 / k as f32).sqrt());
    let bias = random_bf16(&mut rng, n, 0.5);
    let picked = [0, t - 1, rng.random_range(1..t - 1), rng.random_range(1..t - 1)];
    let (x_rows, dy_rows) = (rows_of(&x, k, &picked), rows_of(&dy, n, &picked));
    let (w64, bias64): (Vec<f64>, Vec<f64>) =
        (w.iter().map(|v| v.to_f64()).collect(), bias.iter().map(|v| v.to_f64()).collect());
    let mut dbias_ref = vec![0.0; n];
    for row in dy.chunks(n) {
        for (sum, v) in dbias_ref.iter_mut().zip(row) {
            *sum += v.to_f64();
        }
    }
    let (x_dev, dy_dev) = (stream.clone_htod(&x).unwrap(), stream.clone_htod(&dy).unwrap());
    let (w_dev, bias_dev) = (stream.clone_htod(&w).unwrap(), stream.clone_htod(&bias).unwrap());
    drop((x, dy, w));
    let poison = vec![bf16::NAN; t * n];
    let (mut y_dev, mut dx_dev) = (stream.clone_htod(&poison).unwrap(), stream.clone_htod(&poison).unwrap());
    let mut dbias_dev = stream.alloc_zeros::<f32>(n).unwrap();
    let mut workspace = Workspace::new(stream.clone());

    let variants = [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: R }];
    for (i, variant) in variants.into_iter().enumerate() {
        // The engines in turn (cuBLAS, the default, for at least one variant).
        let engine = engines[(i + engines.len() - 1) % engines.len()];
        kernels.set_gemm_engine(engine).unwrap();
        let shape = layer(variant, k, n, R);
        let label = format!("{variant} T={t} N={n} K={k} r={R} engine={engine:?}");
        let b_scale = if variant.is_bat() { 0.5 / (R as f32).sqrt() } else { 0.5 / (k as f32).sqrt() };
        let b: Vec<f32> = (0..shape.adapter_len()).map(|_| rng.random_range(-b_scale..b_scale)).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v.into()).collect();
        let b_dev = stream.clone_htod(&b).unwrap();
        let weights =
            LayerWeights { w: w_dev.as_view(), b: b_dev.as_view(), bias: Some(bias_dev.as_view()), dropout: None };
        stream.memcpy_htod(&poison, &mut y_dev).unwrap();
        stream.memcpy_htod(&poison, &mut dx_dev).unwrap();
        let mut db_dev = stream.clone_htod(&vec![f32::NAN; shape.adapter_len()]).unwrap();

        kernels.forward(&shape, t, &x_dev.as_view(), &weights, &mut y_dev.as_view_mut(), &mut workspace).unwrap();
        let mut grads = LayerGrads {
            dx: Some(dx_dev.as_view_mut()),
            db: db_dev.as_view_mut(),
            dbias: Some(dbias_dev.as_view_mut()),
            accumulate: Accumulate::NONE,
        };
        kernels.backward(&shape, t, &x_dev.as_view(), &weights, &dy_dev.as_view(), &mut grads, &mut workspace).unwrap();

        let y_ref = forward(&shape, picked.len(), &x_rows, &w64, &b64, Some(&bias64)).unwrap();
        let y_err = rel_err(&device_rows(&stream, &y_dev, n, &picked), &y_ref);
        assert!(y_err < 1e-2, "{label}: Y relative error {y_err:.2e}");
        let dx_ref = backward(&shape, picked.len(), &x_rows, &w64, &b64, &dy_rows).unwrap().dx;
        let dx_err = rel_err(&device_rows(&stream, &dx_dev, k, &picked), &dx_ref);
        assert!(dx_err < 1e-2, "{label}: dX relative error {dx_err:.2e}");
        let dbias: Vec<f64> = stream.clone_dtoh(&dbias_dev).unwrap().iter().map(|&v| v.into()).collect();
        let dbias_err = rel_err(&dbias, &dbias_ref);
        assert!(dbias_err < 1e-5, "{label}: dbias relative error {dbias_err:.2e}");
        let db = stream.clone_dtoh(&db_dev).unwrap();
        assert!(db.iter().all(|v| v.is_finite()) && db.iter().any(|&v| v != 0.0), "{label}: dB not written");
        println!("{label}: ok; Y {y_err:.1e}, dX {dx_err:.1e}, dbias {dbias_err:.1e} (rows {picked:?})");
    }
}
