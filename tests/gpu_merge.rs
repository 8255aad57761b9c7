//! The GPU merge kernel against the f64 oracle, every variant and storage type.
//! Skips with a printed notice where there is no GPU.

mod common;

use bone_kernels::cuda::{BoneKernels, Element};
use bone_kernels::reference::{delta_weight, merge};
use bone_kernels::{BoneError, LayerShape, Variant};
use common::{fresh_rng, gpu_or_skip, layer, random_vec, rel_err};
use half::{bf16, f16};
use rand::rngs::StdRng;

fn round<T: Element>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&v| T::from_f64(v)).collect()
}

fn widen<T: Element>(values: &[T]) -> Vec<f64> {
    values.iter().map(|v| v.to_f64()).collect()
}

/// Merges on the GPU into a NaN-poisoned buffer and checks W' and the adapter's own
/// part W' - W against the oracle, both computed from the rounded inputs.
fn check_merge<TW: Element, TB: Element>(kernels: &BoneKernels, shape: &LayerShape, rng: &mut StdRng, tolerance: f64) {
    let stream = kernels.stream();
    let w_host: Vec<TW> = round(&random_vec(rng, shape.weight_len(), 1.0));
    let b_host: Vec<TB> = round(&random_vec(rng, shape.adapter_len(), 0.2));
    let (w_exact, b_exact) = (widen(&w_host), widen(&b_host));

    let w = stream.clone_htod(&w_host).unwrap();
    let b = stream.clone_htod(&b_host).unwrap();
    let mut out = stream.clone_htod(&vec![TW::from_f64(f64::NAN); shape.weight_len()]).unwrap();
    kernels.merge(shape, &w, &b, &mut out).unwrap();
    let merged = widen(&stream.clone_dtoh(&out).unwrap());

    let label = format!("{} W {} B {}", shape.variant(), TW::KERNEL_SUFFIX, TB::KERNEL_SUFFIX);
    let dims = format!("K={} N={} r={}", shape.k(), shape.n(), shape.r());
    let err = rel_err(&merged, &merge(shape, &w_exact, &b_exact).unwrap());
    assert!(err < tolerance, "{label} {dims}: merged weight relative error {err:.2e}");
    let adapter_part: Vec<f64> = merged.iter().zip(&w_exact).map(|(m, w)| m - w).collect();
    let err = rel_err(&adapter_part, &delta_weight(shape, &w_exact, &b_exact).unwrap());
    assert!(err < 4.0 * tolerance, "{label} {dims}: adapter contribution relative error {err:.2e}");
}

#[test]
fn gpu_merge_matches_the_oracle() {
    let Some(kernels) = gpu_or_skip("gpu_merge_matches_the_oracle") else { return };
    let mut rng = fresh_rng("gpu_merge_matches_the_oracle");
    let shapes = [
        layer(Variant::BatCol, 384, 256, 64),
        layer(Variant::BatCol, 4096, 4096, 128),
        layer(Variant::BatRow, 384, 256, 64),
        layer(Variant::BatRow, 48, 80, 16),
        layer(Variant::Shared, 100, 96, 32),
        layer(Variant::Mini { mini_r: 16 }, 100, 96, 32),
    ];
    for shape in &shapes {
        check_merge::<bf16, f32>(&kernels, shape, &mut rng, 1e-2);
        check_merge::<bf16, bf16>(&kernels, shape, &mut rng, 1e-2);
        check_merge::<f16, f32>(&kernels, shape, &mut rng, 2e-3);
        check_merge::<f32, f32>(&kernels, shape, &mut rng, 1e-5);
    }
}

#[test]
fn gpu_merge_refuses_bad_buffers_before_launch() {
    let Some(kernels) = gpu_or_skip("gpu_merge_refuses_bad_buffers_before_launch") else { return };
    let stream = kernels.stream();
    let shape = layer(Variant::BatCol, 64, 32, 16);
    let w = stream.alloc_zeros::<bf16>(shape.weight_len()).unwrap();
    let b = stream.alloc_zeros::<f32>(shape.adapter_len()).unwrap();
    let short_b = stream.alloc_zeros::<f32>(shape.adapter_len() - 1).unwrap();
    let mut out = stream.alloc_zeros::<bf16>(shape.weight_len()).unwrap();
    let err = kernels.merge(&shape, &w, &short_b, &mut out).unwrap_err();
    assert!(matches!(err, BoneError::LengthMismatch { buffer: "B", .. }), "{err}");
    // A view too short for W' is refused too.
    let mut short_out = out.slice_mut(1..);
    let err = kernels.merge(&shape, &w, &b, &mut short_out).unwrap_err();
    assert!(matches!(err, BoneError::LengthMismatch { buffer: "out", .. }), "{err}");

    let other = cudarc::driver::CudaContext::new_non_primary(0, 0).unwrap().new_stream().unwrap();
    let foreign_w = other.alloc_zeros::<bf16>(shape.weight_len()).unwrap();
    let err = kernels.merge(&shape, &foreign_w, &b, &mut out).unwrap_err();
    assert!(matches!(err, BoneError::WrongContext { buffer: "W" }), "{err}");
}

#[test]
fn gpu_handles_on_other_streams_share_the_module() {
    let Some(kernels) = gpu_or_skip("gpu_handles_on_other_streams_share_the_module") else { return };
    let mut rng = fresh_rng("gpu_handles_on_other_streams_share_the_module");
    let second = kernels.on_stream(kernels.stream().context().new_stream().unwrap()).unwrap();
    check_merge::<bf16, f32>(&second, &layer(Variant::BatCol, 128, 64, 16), &mut rng, 1e-2);
    let other_context = cudarc::driver::CudaContext::new_non_primary(0, 0).unwrap().new_stream().unwrap();
    let err = kernels.on_stream(other_context).unwrap_err();
    assert!(matches!(err, BoneError::WrongContext { buffer: "stream" }), "{err}");
}
