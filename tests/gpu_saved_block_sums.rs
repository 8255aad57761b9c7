//! The shared block and mini keep S `[T, r]` instead of X between the passes
//! (`forward_saving_block_sums`, `backward_from_block_sums`): S holds the sums of X's
//! chunks after dropout, Y is the plain forward's bit for bit, and the backward from S
//! gives the backward from X bit for bit (`gpu_training` checks that one against the
//! oracle). Bad input is refused before any launch. GPU only; on every engine.

mod common;

use bone_kernels::cuda::{Accumulate, LayerGrads, LayerWeights, Workspace};
use bone_kernels::{BoneError, Dropout, Variant};
use common::{bf16s, fresh_rng, gemm_engines, gpu_or_skip, layer, random_vec, rel_err};
use cudarc::driver::CudaSlice;
use half::bf16;
use rand::RngExt;

/// dX, dB and dbias of one backward, on the host.
type Grads = (Vec<bf16>, Vec<f32>, Vec<f32>);

#[test]
fn gpu_the_backward_from_saved_block_sums_is_the_backward_from_x() {
    let Some(mut kernels) = gpu_or_skip("gpu_the_backward_from_saved_block_sums_is_the_backward_from_x") else {
        return;
    };
    let mut rng = fresh_rng("gpu_the_backward_from_saved_block_sums_is_the_backward_from_x");
    let stream = kernels.stream().clone();
    let mut workspace = Workspace::new(stream.clone());
    for (variant, n, k, r, t) in [
        (Variant::Shared, 4096, 4096, 64, 512),
        (Variant::Mini { mini_r: 32 }, 1024, 1000, 32, 300),
        (Variant::Shared, 256, 384, 8, 1),
        (Variant::Shared, 512, 512, 256, 33),
    ] {
        let shape = layer(variant, k, n, r);
        let x_host = bf16s(&random_vec(&mut rng, t * k, 1.0));
        let x = stream.clone_htod(&x_host).unwrap();
        let w = stream.clone_htod(&bf16s(&random_vec(&mut rng, n * k, (3.0 / k as f64).sqrt()))).unwrap();
        let b = stream
            .clone_htod(&random_vec(&mut rng, shape.adapter_len(), 0.1).iter().map(|&v| v as f32).collect::<Vec<_>>())
            .unwrap();
        let bias = stream.clone_htod(&bf16s(&random_vec(&mut rng, n, 0.5))).unwrap();
        let dy = stream.clone_htod(&bf16s(&random_vec(&mut rng, t * n, 1.0))).unwrap();
        let held = (bf16s(&random_vec(&mut rng, t * k, 1.0)), vec![0.5f32; shape.adapter_len()], vec![-0.25f32; n]);
        for engine in gemm_engines(&kernels) {
            kernels.set_gemm_engine(engine).unwrap();
            for dropout in [None, Some(Dropout::new(0.1, rng.random()).unwrap())] {
                let case = format!("{variant} {n}x{k} r={r} T={t} {engine:?} dropout={dropout:?}");
                let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: Some(bias.as_view()), dropout };
                let poisoned = |len| stream.clone_htod(&vec![bf16::NAN; len]).unwrap();
                let (mut y_plain, mut y_saving, mut s) = (poisoned(t * n), poisoned(t * n), poisoned(t * r));
                kernels.forward(&shape, t, &x.as_view(), &weights, &mut y_plain.as_view_mut(), &mut workspace).unwrap();
                kernels
                    .forward_saving_block_sums(
                        &shape,
                        t,
                        &x.as_view(),
                        &weights,
                        &mut y_saving.as_view_mut(),
                        &mut s.as_view_mut(),
                        &mut workspace,
                    )
                    .unwrap();
                let bits =
                    |d: &CudaSlice<bf16>| stream.clone_dtoh(d).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y_saving), bits(&y_plain), "{case}: Y with S saved");
                let s_host: Vec<f64> = stream.clone_dtoh(&s).unwrap().iter().map(|v| v.to_f64()).collect();
                let s_want: Vec<f64> = (0..t * r)
                    .map(|i| {
                        let (row, j) = (i / r, i % r);
                        let factor = |col: usize| dropout.map_or(1.0, |d| d.factor((row * k + col) as u64));
                        (j..k).step_by(r).map(|col| x_host[row * k + col].to_f64() * factor(col)).sum()
                    })
                    .collect();
                let err = rel_err(&s_host, &s_want);
                println!("{case}: S against its f64 sums {err:.2e}");
                assert!(err < 4e-3, "{case}: S relative error {err:.2e}");

                for accumulate in [Accumulate::NONE, Accumulate::ALL] {
                    let mut run = |from_s: bool| -> Grads {
                        let (mut dx, mut db, mut dbias) = (
                            stream.clone_htod(&held.0).unwrap(),
                            stream.clone_htod(&held.1).unwrap(),
                            stream.clone_htod(&held.2).unwrap(),
                        );
                        let mut grads = LayerGrads {
                            dx: Some(dx.as_view_mut()),
                            db: db.as_view_mut(),
                            dbias: Some(dbias.as_view_mut()),
                            accumulate,
                        };
                        let (saved, dy) = (if from_s { &s } else { &x }, dy.as_view());
                        if from_s {
                            kernels.backward_from_block_sums(
                                &shape,
                                t,
                                &saved.as_view(),
                                &weights,
                                &dy,
                                &mut grads,
                                &mut workspace,
                            )
                        } else {
                            kernels.backward(&shape, t, &saved.as_view(), &weights, &dy, &mut grads, &mut workspace)
                        }
                        .unwrap();
                        (
                            stream.clone_dtoh(&dx).unwrap(),
                            stream.clone_dtoh(&db).unwrap(),
                            stream.clone_dtoh(&dbias).unwrap(),
                        )
                    };
                    let (from_x, from_s) = (run(false), run(true));
                    assert!(
                        from_x.0.iter().all(|v| v.is_finite()) && from_x.1.iter().all(|v| v.is_finite()),
                        "{case}: written"
                    );
                    let dx_bits = |g: &Grads| g.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let f32_bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(dx_bits(&from_s), dx_bits(&from_x), "{case} {accumulate:?}: dX from S");
                    assert_eq!(f32_bits(&from_s.1), f32_bits(&from_x.1), "{case} {accumulate:?}: dB from S");
                    assert_eq!(f32_bits(&from_s.2), f32_bits(&from_x.2), "{case} {accumulate:?}: dbias from S");
                }
            }
        }
    }
}

#[test]
fn gpu_block_sums_are_refused_where_they_do_not_fit() {
    let Some(kernels) = gpu_or_skip("gpu_block_sums_are_refused_where_they_do_not_fit") else { return };
    let stream = kernels.stream().clone();
    let mut workspace = Workspace::new(stream.clone());
    let (n, k, r, t) = (256, 256, 16, 8);
    let zeros = |len| stream.alloc_zeros::<bf16>(len).unwrap();
    let (x, w, mut y, dy) = (zeros(t * k), zeros(n * k), zeros(t * n), zeros(t * n));
    for (variant, s_len, expected) in [
        (Variant::BatCol, t * r, "BatCol's backward reads X itself"),
        (Variant::BatRow, t * r, "BatRow's backward reads X itself"),
        (Variant::Shared, t * r + 8, "buffer `S` has 136 elements, expected 128 ([T, r] = [8, 16])"),
    ] {
        let shape = layer(variant, k, n, r);
        let b = stream.alloc_zeros::<f32>(shape.adapter_len()).unwrap();
        let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout: None };
        let mut s = zeros(s_len);
        let err = kernels
            .forward_saving_block_sums(
                &shape,
                t,
                &x.as_view(),
                &weights,
                &mut y.as_view_mut(),
                &mut s.as_view_mut(),
                &mut workspace,
            )
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{variant} forward: {err}");
        let mut db = stream.alloc_zeros::<f32>(shape.adapter_len()).unwrap();
        let mut grads = LayerGrads { dx: None, db: db.as_view_mut(), dbias: None, accumulate: Accumulate::NONE };
        let err = kernels
            .backward_from_block_sums(&shape, t, &s.as_view(), &weights, &dy.as_view(), &mut grads, &mut workspace)
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{variant} backward: {err}");
        if variant.is_bat() {
            assert!(matches!(err, BoneError::BlockSumsOnBat { .. }), "{err:?}");
        }
    }
}
