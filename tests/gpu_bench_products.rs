//! The plain products `benches/layers.rs` times in `product/` (through
//! `bone_kernels::cuda::bench_support`) compute what they claim, on every engine, against
//! an f64 product of the same bf16 inputs; bad dimensions are refused; and its per-launch
//! timing changes no result. Skips with a printed notice where there is no GPU.

mod common;

use bone_kernels::cuda::baseline::RowMajorBlas;
use bone_kernels::cuda::bench_support::{Product, product, time_launches};
use bone_kernels::cuda::{BoneKernels, LayerWeights, Workspace};
use bone_kernels::{BoneError, Variant};
use common::{bf16s, fresh_rng, gemm_engines, gpu_or_skip, random_vec, rel_err};
use half::bf16;

/// C = op(A) op(B) in f64 for `product`'s layouts (A and B as stored).
fn reference(which: Product, [m, n, k]: [usize; 3], a: &[f64], b: &[f64]) -> Vec<f64> {
    let a_at = |row: usize, j: usize| if which == Product::Weight { a[j * m + row] } else { a[row * k + j] };
    let b_at = |col: usize, j: usize| if which == Product::Forward { b[col * k + j] } else { b[j * n + col] };
    (0..m * n).map(|i| (0..k).map(|j| a_at(i / n, j) * b_at(i % n, j)).sum()).collect()
}

#[test]
fn gpu_bench_products_compute_what_they_claim() {
    let Some(mut kernels) = gpu_or_skip("gpu_bench_products_compute_what_they_claim") else { return };
    let mut rng = fresh_rng("gpu_bench_products_compute_what_they_claim");
    let stream = kernels.stream().clone();
    let blas = RowMajorBlas::new(stream.clone()).unwrap();
    let dims = [136, 72, 264];
    let [m, n, k] = dims;
    let a = bf16s(&random_vec(&mut rng, m * k, 1.0));
    let b = bf16s(&random_vec(&mut rng, n * k, 1.0));
    let (a64, b64): (Vec<f64>, Vec<f64>) =
        (a.iter().map(|v| v.to_f64()).collect(), b.iter().map(|v| v.to_f64()).collect());
    let (a_dev, b_dev) = (stream.clone_htod(&a).unwrap(), stream.clone_htod(&b).unwrap());
    for engine in gemm_engines(&kernels) {
        kernels.set_gemm_engine(engine).unwrap();
        for which in [Product::Forward, Product::Input, Product::Weight] {
            for on_cublas in [false, true] {
                let mut c_dev = stream.clone_htod(&vec![bf16::NAN; m * n]).unwrap();
                let library = on_cublas.then_some(&blas);
                product(&kernels, library, which, dims, (&a_dev.as_view(), &b_dev.as_view()), &mut c_dev.as_view_mut())
                    .unwrap();
                let got: Vec<f64> = stream.clone_dtoh(&c_dev).unwrap().iter().map(|v| v.to_f64()).collect();
                let err = rel_err(&got, &reference(which, dims, &a64, &b64));
                let label = format!("{engine:?} {which:?} cuBLAS={on_cublas}");
                assert!(err < 1e-2, "{label}: relative error {err:.2e}");
                println!("{label}: relative error {err:.1e}");
            }
        }
    }
    // The operands above are far longer than these dimensions need.
    let mut c_dev = stream.clone_htod(&vec![bf16::ZERO; 4]).unwrap();
    let mut on = |dims| {
        product(&kernels, None, Product::Forward, dims, (&a_dev.as_view(), &b_dev.as_view()), &mut c_dev.as_view_mut())
    };
    let refused = on([2, 2, 2]);
    assert!(matches!(refused, Err(BoneError::UnsupportedByKernels(_))), "{refused:?}");
    let short = on([8, 8, 8]);
    assert!(matches!(short, Err(BoneError::LengthMismatch { .. })), "{short:?}");
}

#[test]
fn gpu_timed_launches_leave_the_results_unchanged() {
    // The benches' breakdown runs a step on a timed copy of the handle: every launch gets
    // a positive time and a name, and Y is bitwise the untimed handle's, on every engine.
    let test = "gpu_timed_launches_leave_the_results_unchanged";
    let Some(mut kernels) = gpu_or_skip(test) else { return };
    let mut rng = fresh_rng(test);
    let stream = kernels.stream().clone();
    let shape = common::layer(Variant::Shared, 256, 384, 64);
    let t = 200;
    let upload = |values: Vec<f64>| stream.clone_htod(&bf16s(&values));
    let x = upload(random_vec(&mut rng, t * shape.k(), 1.0)).unwrap();
    let w = upload(random_vec(&mut rng, shape.weight_len(), 0.1)).unwrap();
    let b_host: Vec<f32> = random_vec(&mut rng, shape.adapter_len(), 0.05).iter().map(|&v| v as f32).collect();
    let b = stream.clone_htod(&b_host).unwrap();
    let mut workspace = Workspace::new(stream.clone());
    for engine in gemm_engines(&kernels) {
        kernels.set_gemm_engine(engine).unwrap();
        let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout: None };
        let mut run = |handle: &BoneKernels| -> Vec<bf16> {
            let mut y = stream.clone_htod(&vec![bf16::NAN; t * shape.n()]).unwrap();
            handle.forward(&shape, t, &x.as_view(), &weights, &mut y.as_view_mut(), &mut workspace).unwrap();
            stream.clone_dtoh(&y).unwrap()
        };
        let untimed = run(&kernels);
        let mut timed = Vec::new();
        let launches = time_launches(&kernels, |handle| {
            timed = run(handle);
            Ok(())
        })
        .unwrap();
        assert!(untimed.iter().zip(&timed).all(|(a, b)| a.to_bits() == b.to_bits()), "{engine:?}: Y changed");
        assert!(launches.len() >= 2, "{engine:?}: {launches:?}");
        assert!(launches.iter().all(|l| l.ms > 0.0 && !l.kernel.is_empty()), "{engine:?}: {launches:?}");
        println!("{engine:?}: {launches:?}");
    }
}
