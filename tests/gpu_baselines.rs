//! The cuBLAS baselines the benches compare against compute what they claim:
//! LoRA against a CPU LoRA, the BatCol cuBLAS plan against the oracle. GPU only.

mod common;

use bone_kernels::Variant;
use bone_kernels::cuda::baseline::{BatColCublasPlan, Lora, LoraGrads, LoraTensors, PlanBuffers, RowMajorBlas};
use bone_kernels::reference::{backward, forward};
use common::{bf16s, fresh_rng, gpu_or_skip, layer, random_vec, rel_err};
use half::bf16;

fn rounded(values: Vec<f64>) -> (Vec<bf16>, Vec<f64>) {
    let device = bf16s(&values);
    let exact = device.iter().map(|v| v.to_f64()).collect();
    (device, exact)
}

/// Row-major `[m, k] x [k, n]`.
fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    (0..m * n).map(|idx| (0..k).map(|j| a[idx / n * k + j] * b[j * n + idx % n]).sum()).collect()
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols).map(|idx| a[(idx % rows) * cols + idx / rows]).collect()
}

#[test]
fn gpu_lora_baseline_matches_a_cpu_lora() {
    let Some(kernels) = gpu_or_skip("gpu_lora_baseline_matches_a_cpu_lora") else { return };
    let mut rng = fresh_rng("gpu_lora_baseline_matches_a_cpu_lora");
    let stream = kernels.stream().clone();
    let blas = RowMajorBlas::new(stream.clone()).unwrap();
    let (t, k, n, q) = (37, 256, 192, 16);
    let (x_d, x) = rounded(random_vec(&mut rng, t * k, 1.0));
    let (w_d, w) = rounded(random_vec(&mut rng, n * k, 0.1));
    let (a_d, a) = rounded(random_vec(&mut rng, q * k, 0.1));
    let (b_d, b) = rounded(random_vec(&mut rng, n * q, 0.1));
    let (dy_d, dy) = rounded(random_vec(&mut rng, t * n, 1.0));
    let up = |v: &Vec<bf16>| stream.clone_htod(v).unwrap();
    let (xg, wg, ag, bg, dyg) = (up(&x_d), up(&w_d), up(&a_d), up(&b_d), up(&dy_d));
    let mut h = stream.alloc_zeros::<bf16>(t * q).unwrap();
    let mut y = stream.alloc_zeros::<bf16>(t * n).unwrap();
    let lora = Lora::new(k, n, q).unwrap();
    let mut tensors =
        LoraTensors { x: xg.as_view(), w: wg.as_view(), a: ag.as_view(), b: bg.as_view(), h: h.as_view_mut() };
    lora.forward(&blas, t, &mut tensors, &mut y.as_view_mut()).unwrap();
    let (mut dx, mut da, mut db, mut dh) = (
        stream.alloc_zeros::<bf16>(t * k).unwrap(),
        stream.alloc_zeros::<bf16>(q * k).unwrap(),
        stream.alloc_zeros::<bf16>(n * q).unwrap(),
        stream.alloc_zeros::<bf16>(t * q).unwrap(),
    );
    let mut grads =
        LoraGrads { dx: dx.as_view_mut(), da: da.as_view_mut(), db: db.as_view_mut(), dh: dh.as_view_mut() };
    lora.backward(&blas, t, &mut tensors, &dyg.as_view(), &mut grads).unwrap();
    let down = |v: &cudarc::driver::CudaSlice<bf16>| -> Vec<f64> {
        stream.clone_dtoh(v).unwrap().iter().map(|x| x.to_f64()).collect()
    };

    let h_ref = matmul(&x, &transpose(&a, q, k), t, k, q);
    let y_ref: Vec<f64> = matmul(&x, &transpose(&w, n, k), t, k, n)
        .iter()
        .zip(matmul(&h_ref, &transpose(&b, n, q), t, q, n))
        .map(|(base, low)| base + low)
        .collect();
    let dh_ref = matmul(&dy, &b, t, n, q);
    let dx_ref: Vec<f64> =
        matmul(&dy, &w, t, n, k).iter().zip(matmul(&dh_ref, &a, t, q, k)).map(|(p, l)| p + l).collect();
    let da_ref = matmul(&transpose(&dh_ref, t, q), &x, q, t, k);
    let db_ref = matmul(&transpose(&dy, t, n), &h_ref, n, t, q);
    for (name, got, want) in
        [("Y", down(&y), y_ref), ("dX", down(&dx), dx_ref), ("dA", down(&da), da_ref), ("dB", down(&db), db_ref)]
    {
        let err = rel_err(&got, &want);
        assert!(err < 1e-2, "LoRA {name}: relative error {err:.2e}");
    }
}

#[test]
fn gpu_batcol_cublas_plan_matches_the_oracle() {
    let Some(kernels) = gpu_or_skip("gpu_batcol_cublas_plan_matches_the_oracle") else { return };
    let mut rng = fresh_rng("gpu_batcol_cublas_plan_matches_the_oracle");
    let stream = kernels.stream().clone();
    let blas = RowMajorBlas::new(stream.clone()).unwrap();
    let shape = layer(Variant::BatCol, 384, 256, 64);
    let (t, k, n) = (53, 384, 256);
    let (x_d, x) = rounded(random_vec(&mut rng, t * k, 1.0));
    let (w_d, w) = rounded(random_vec(&mut rng, n * k, 0.1));
    let (dy_d, dy) = rounded(random_vec(&mut rng, t * n, 1.0));
    let b: Vec<f64> = random_vec(&mut rng, shape.adapter_len(), 0.05).iter().map(|&v| f64::from(v as f32)).collect();
    let b_d: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    let (xg, wg, dyg, bg) = (
        stream.clone_htod(&x_d).unwrap(),
        stream.clone_htod(&w_d).unwrap(),
        stream.clone_htod(&dy_d).unwrap(),
        stream.clone_htod(&b_d).unwrap(),
    );
    let plan = BatColCublasPlan::new(&shape).unwrap();
    let (mut w_prime, mut g) = (stream.alloc_zeros::<bf16>(n * k).unwrap(), stream.alloc_zeros::<bf16>(n * k).unwrap());
    let mut partials = stream.alloc_zeros::<f32>(plan.partials_len()).unwrap();
    let mut buffers =
        PlanBuffers { w_prime: w_prime.as_view_mut(), g: g.as_view_mut(), partials: partials.as_view_mut() };
    let mut y = stream.alloc_zeros::<bf16>(t * n).unwrap();
    plan.forward(&kernels, &blas, t, &xg.as_view(), &wg.as_view(), &bg.as_view(), &mut buffers, &mut y.as_view_mut())
        .unwrap();
    let (mut dx, mut db) =
        (stream.alloc_zeros::<bf16>(t * k).unwrap(), stream.alloc_zeros::<f32>(shape.adapter_len()).unwrap());
    plan.backward(
        &kernels,
        &blas,
        t,
        &xg.as_view(),
        &wg.as_view(),
        &bg.as_view(),
        &dyg.as_view(),
        &mut buffers,
        &mut dx.as_view_mut(),
        &mut db.as_view_mut(),
    )
    .unwrap();
    let y_got: Vec<f64> = stream.clone_dtoh(&y).unwrap().iter().map(|v| v.to_f64()).collect();
    let dx_got: Vec<f64> = stream.clone_dtoh(&dx).unwrap().iter().map(|v| v.to_f64()).collect();
    let db_got: Vec<f64> = stream.clone_dtoh(&db).unwrap().iter().map(|&v| v.into()).collect();
    let grads = backward(&shape, t, &x, &w, &b, &dy).unwrap();
    for (name, got, want) in [
        ("Y", y_got, forward(&shape, t, &x, &w, &b, None).unwrap()),
        ("dX", dx_got, grads.dx),
        ("dB", db_got, grads.db),
    ] {
        let err = rel_err(&got, &want);
        assert!(err < 1e-2, "plan {name}: relative error {err:.2e}");
    }
}
