//! BatCol's training passes equal the merged layer's: Y from `forward` against
//! `X merge(W, B)^T` and dX from `backward` against `dY merge(W, B)` (the merge kernel's
//! W', f32 arithmetic rounded once, then one cuBLAS product), B in bf16 so that both take
//! the same values. Both form W' = W + W B + B and
//! round it once, so only the order of f32 additions differs; a W' rounded twice (I + B
//! as a bf16 operand, as before session 8) differs from it by about a bf16 ulp on most
//! elements: 2.6-3.5e-3 relative error in Y on these cases, computed in f64 on the CPU.
//! GPU only; on every engine.

mod common;

use bone_kernels::Variant;
use bone_kernels::cuda::baseline::{Linear, RowMajorBlas};
use bone_kernels::cuda::{Accumulate, LayerGrads, LayerWeights, Workspace};
use common::{bf16s, fresh_rng, gemm_engines, gpu_or_skip, layer, random_vec, rel_err};
use cudarc::driver::CudaSlice;
use half::bf16;

/// Far under the ~3e-3 of a W' rounded twice, far over f32's reordering (about 1e-6, and
/// the bf16 roundings of Y and W' it tips).
const TOLERANCE: f64 = 2e-4;

#[test]
fn gpu_batcol_passes_equal_the_merged_layers() {
    let Some(mut kernels) = gpu_or_skip("gpu_batcol_passes_equal_the_merged_layers") else { return };
    let mut rng = fresh_rng("gpu_batcol_passes_equal_the_merged_layers");
    let stream = kernels.stream().clone();
    let blas = RowMajorBlas::new(stream.clone()).unwrap();
    let mut workspace = Workspace::new(stream.clone());
    let host = |d: &CudaSlice<bf16>| stream.clone_dtoh(d).unwrap().iter().map(|v| v.to_f64()).collect::<Vec<_>>();
    for (n, k, r, t) in
        [(256, 384, 64, 53), (1024, 512, 16, 1), (512, 1024, 128, 300), (512, 256, 8, 33), (512, 512, 256, 7)]
    {
        let shape = layer(Variant::BatCol, k, n, r);
        let x = stream.clone_htod(&bf16s(&random_vec(&mut rng, t * k, 1.0))).unwrap();
        let w = stream.clone_htod(&bf16s(&random_vec(&mut rng, n * k, (3.0 / k as f64).sqrt()))).unwrap();
        let dy = stream.clone_htod(&bf16s(&random_vec(&mut rng, t * n, 1.0))).unwrap();
        for b_scale in [3e-3, 0.1] {
            let b = stream.clone_htod(&bf16s(&random_vec(&mut rng, shape.adapter_len(), b_scale))).unwrap();
            let mut merged = stream.alloc_zeros::<bf16>(n * k).unwrap();
            kernels.merge(&shape, &w, &b, &mut merged).unwrap();
            let linear = Linear { k, n };
            let (mut y_merged, mut dx_merged) =
                (stream.alloc_zeros::<bf16>(t * n).unwrap(), stream.alloc_zeros::<bf16>(t * k).unwrap());
            linear.forward(&blas, t, &x.as_view(), &merged.as_view(), &mut y_merged.as_view_mut()).unwrap();
            linear.input_grad(&blas, t, &dy.as_view(), &merged.as_view(), &mut dx_merged.as_view_mut()).unwrap();
            for engine in gemm_engines(&kernels) {
                kernels.set_gemm_engine(engine).unwrap();
                let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout: None };
                let mut y = stream.clone_htod(&vec![bf16::NAN; t * n]).unwrap();
                kernels.forward(&shape, t, &x.as_view(), &weights, &mut y.as_view_mut(), &mut workspace).unwrap();
                let mut dx = stream.clone_htod(&vec![bf16::NAN; t * k]).unwrap();
                let mut db = stream.alloc_zeros::<f32>(shape.adapter_len()).unwrap();
                let dx_view = Some(dx.as_view_mut());
                let mut grads =
                    LayerGrads { dx: dx_view, db: db.as_view_mut(), dbias: None, accumulate: Accumulate::NONE };
                kernels.backward(&shape, t, &x.as_view(), &weights, &dy.as_view(), &mut grads, &mut workspace).unwrap();
                for (name, got, want) in [("Y", &y, &y_merged), ("dX", &dx, &dx_merged)] {
                    let err = rel_err(&host(got), &host(want));
                    let case = format!("BatCol {n}x{k} r={r} T={t} B scale {b_scale:e} {engine:?}: {name}");
                    println!("{case} against the merged layer's {err:.2e}");
                    assert!(err < TOLERANCE, "{case}: relative error {err:.2e}");
                }
            }
        }
    }
}
