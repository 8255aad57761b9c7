//! BatCol's fused dB kernel (kernels/bat_col_grads.cu), in its three versions (mma.sync,
//! wgmma, warp-specialised wgmma), launched directly on the CPU emulator against a direct f64 sum: every block size
//! and activation type, ragged N and K,
//! blocks walking several K tiles (which the launch sequences reach only on large layers),
//! and runs of K tiles written as separate partial sums. Outputs start as NaN, or, where
//! the kernel adds to them, hold random values of dB's size.

use bone_host_kernels::Landing;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::emulator::{Emulator, Ty, host_kernels_or_skip};
use super::launch::{Arg, GemmKernels, Launcher};

/// dB's runs `[runs, N, r]` as the kernel defines them: run c sums K tiles c per_run ..,
/// of (W_{o,i} + I)^T G_{o,i} with G = dY^T X.
fn expected(
    (t, n, k, r): (usize, usize, usize, usize),
    per_run: usize,
    (dy, x, w): (&[f64], &[f64], &[f64]),
) -> Vec<f64> {
    let runs = k.div_ceil(128).div_ceil(per_run);
    let mut out = vec![0.0; runs * n * r];
    for run in 0..runs {
        for o in 0..n / r {
            for i in (run * per_run * 128 / r..((run + 1) * per_run * 128 / r).min(k / r)).collect::<Vec<_>>() {
                for a in 0..r {
                    for b in 0..r {
                        let mut sum = 0.0;
                        for q in 0..r {
                            let g: f64 = (0..t).map(|s| dy[s * n + o * r + q] * x[s * k + i * r + b]).sum();
                            let w_plus = w[(o * r + q) * k + i * r + a] + if q == a { 1.0 } else { 0.0 };
                            sum += w_plus * g;
                        }
                        out[(run * n + o * r + a) * r + b] += sum;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn fused_batcol_grads_match_a_direct_sum() {
    if !host_kernels_or_skip("fused_batcol_grads_match_a_direct_sum") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(31);
    // (T, N, K, r, K tiles per run): N = 192 and K = 336 are ragged against the 128-wide
    // tiles; 3 tiles per run walks all of K in one block, 2 makes two runs; T = 150 takes
    // three steps of 64 tokens a K tile, so the warp-specialised kernel's four stages
    // wrap around within and across K tiles.
    let cases = [
        (40, 192, 336, 16, 3),
        (40, 192, 336, 16, 2),
        (17, 256, 384, 32, 2),
        (9, 192, 256, 64, 2),
        (9, 256, 384, 128, 3),
        (150, 128, 384, 64, 3),
    ];
    for family in [GemmKernels::MmaSync, GemmKernels::Wgmma, GemmKernels::WgmmaWarpSpecialized] {
        for (case, &(t, n, k, r, per_run)) in cases.iter().enumerate() {
            let ty = if case % 2 == 0 { Ty::Bf16 } else { Ty::F16 };
            let emulator = Emulator::new(Landing::Late, family).in_drawn_order(&mut rng);
            let schedule = emulator.schedule();
            let mut random = |len: usize, scale: f64| -> Vec<f64> {
                (0..len).map(|_| ty.round(rng.random_range(-scale..scale))).collect()
            };
            let (dy, x, w) = (random(t * n, 1.0), random(t * k, 1.0), random(n * k, 0.1));
            let runs = k.div_ceil(128).div_ceil(per_run);
            let want = expected((t, n, k, r), per_run, (&dy, &x, &w));
            // Every other case adds to what the output holds.
            let accumulate = case % 2 == 1;
            let scale = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
            let held: Vec<f64> = (0..want.len()).map(|_| rng.random_range(-scale..scale)).collect();
            let out = if accumulate { emulator.upload(Ty::F32, &held) } else { emulator.alloc(runs * n * r * 4) };
            let sizes = [t, n, k, per_run, usize::from(accumulate)].map(|v| Arg::I32(v as i32));
            let inputs = [emulator.upload(ty, &dy), emulator.upload(ty, &x), emulator.upload(ty, &w), out];
            let kernel = format!("bone_bat_col_grads_x_{}_r{r}", ty.suffix());
            let grid = (n.div_ceil(128) as u32, runs as u32);
            emulator.fused(&kernel, grid, &[&sizes[..], &inputs.map(Arg::Ptr)].concat()).unwrap().unwrap();

            let got = emulator.download(Ty::F32, out, runs * n * r);
            let want: Vec<f64> = if accumulate { want.iter().zip(&held).map(|(w, h)| w + h).collect() } else { want };
            let (diff, norm) =
                got.iter().zip(&want).fold((0.0, 0.0), |(d, s), (g, w)| (d + (g - w) * (g - w), s + w * w));
            let err = (diff / norm).sqrt();
            // G is rounded once to the activations' type before its products: bf16's 2^-8.
            assert!(
                err < 1e-2,
                "{family:?} {kernel} T={t} N={n} K={k} per run {per_run} accumulate {accumulate} {schedule:?}: relative error {err:.2e}"
            );
        }
    }
}
