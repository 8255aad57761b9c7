//! Helpers shared by the integration tests: seeded random data, error norms, GPU handle, fixtures.
#![allow(dead_code)] // each test binary uses a different subset

pub mod fixtures;

use bone_kernels::{Dims, LayerShape, Variant};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A fresh random generator per run; `BONE_TEST_SEED` replays a failure. The seed is
/// printed so that a failing run can be repeated exactly.
pub fn fresh_rng(test: &str) -> StdRng {
    let seed = std::env::var("BONE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("{test}: BONE_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale]; never all zeros.
pub fn random_vec(rng: &mut StdRng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `values` rounded to bf16, as a device buffer holds them.
pub fn bf16s(values: &[f64]) -> Vec<half::bf16> {
    values.iter().map(|&v| half::bf16::from_f64(v)).collect()
}

/// ||got - want|| / ||want|| (Frobenius).
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm).sqrt()
}

/// A layer shape that the test knows is valid.
pub fn layer(variant: Variant, k: usize, n: usize, r: usize) -> LayerShape {
    LayerShape::new(variant, Dims { k, n, r }).expect("test shape is valid")
}

/// Every variant on a few shapes: T = 1, N != K, K not a multiple of r (shared block).
/// Entries are (variant, T, K, N, r).
pub fn oracle_cases() -> Vec<(Variant, usize, usize, usize, usize)> {
    let mut cases = Vec::new();
    for variant in [Variant::BatCol, Variant::BatRow] {
        cases.extend([(variant, 1, 8, 8, 4), (variant, 3, 8, 12, 4), (variant, 5, 12, 6, 2), (variant, 2, 9, 9, 3)]);
    }
    for variant in [Variant::Shared, Variant::Mini { mini_r: 3 }] {
        cases.extend([(variant, 1, 10, 6, 4), (variant, 3, 7, 12, 3), (variant, 4, 8, 6, 4), (variant, 2, 5, 9, 5)]);
    }
    cases
}

/// Prints a skip notice that libtest does not capture, so it shows in every run's log.
pub fn skip_notice(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {message}");
}

/// The GPU handle, or `None` after printing why the calling test is skipped.
pub fn gpu_or_skip(test: &str) -> Option<bone_kernels::cuda::BoneKernels> {
    use bone_kernels::cuda::{BoneKernels, device_count, kernels_built, stream_on_device};
    if device_count() == 0 {
        skip_notice(&format!("{test}: no CUDA GPU on this machine"));
        return None;
    }
    if !kernels_built() {
        skip_notice(&format!("{test}: a GPU is present but this build has no kernels (build with nvcc on PATH)"));
        return None;
    }
    let stream = stream_on_device(0).expect("stream on device 0");
    Some(BoneKernels::new(stream).expect("load the kernel module"))
}

/// The GEMM engines to test on `kernels`' GPU (all it has, or those `BONE_GEMM_ENGINES`
/// names), with a printed notice for each one left out.
pub fn gemm_engines(kernels: &bone_kernels::cuda::BoneKernels) -> Vec<bone_kernels::cuda::GemmEngine> {
    let engines = bone_kernels::cuda::bench_support::engines_to_run(kernels).expect("the engines to test");
    for engine in kernels.available_gemm_engines().expect("query the device") {
        if !engines.contains(&engine) {
            skip_notice(&format!("the {} engine is not tested: BONE_GEMM_ENGINES leaves it out", engine.label()));
        }
    }
    if !engines.contains(&bone_kernels::cuda::GemmEngine::Wgmma) {
        skip_notice("the wgmma engines are not tested here unless the device has compute capability 9.0");
    }
    engines
}

/// One layer's random inputs for the oracle tests.
pub struct Case {
    pub shape: LayerShape,
    pub t: usize,
    pub x: Vec<f64>,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Case {
    /// Fresh random X, W, B (scaled by `b_scale`) and bias for one of [`oracle_cases`].
    pub fn random(
        rng: &mut StdRng,
        (variant, t, k, n, r): (Variant, usize, usize, usize, usize),
        b_scale: f64,
    ) -> Case {
        let shape = layer(variant, k, n, r);
        let x = random_vec(rng, t * k, 1.0);
        let w = random_vec(rng, n * k, 1.0);
        let b = random_vec(rng, shape.adapter_len(), b_scale);
        let bias = random_vec(rng, n, 1.0);
        Case { shape, t, x, w, b, bias }
    }

    /// "BatCol T=3 K=8 N=12 r=4", for assertion messages.
    pub fn label(&self) -> String {
        let s = &self.shape;
        format!("{} T={} K={} N={} r={}", s.variant(), self.t, s.k(), s.n(), s.r())
    }
}
