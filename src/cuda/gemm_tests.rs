//! The tensor-core GEMMs (kernels/gemm.cuh on mma.sync, kernels/gemm_wgmma.cuh on wgmma),
//! every instantiation, run from their own source on the CPU (`bone-host-kernels`) against
//! a direct f64 product: ragged edges against the 128 x 128 x 32 tiles, a second product
//! appended along K, an addend, bias, accumulation into every output type, batches with
//! strides, cp.async copies landing both as early and as late as the PTX rules allow, and
//! each block's threads run lowest- or highest-numbered first.
//! Outputs start as NaN, so an element the kernel does not write fails.

use bone_host_kernels::{Landing, Schedule};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::emulator::{Emulator, Ty, host_kernels_or_skip, random_cases};
use super::launch::{Gemm, GemmKernels, GemmKind, gemm_kind};

/// Every instantiation (kernels/gemm.cu), on bf16 and on f16 operands.
fn kernels() -> Vec<String> {
    let mut names = Vec::new();
    for half in ["bf16", "f16"] {
        for (layouts, out) in [("kk", half), ("kk", "f32"), ("kt", half), ("kt", "f32"), ("tt", half), ("tt", "f32")] {
            names.push(format!("bone_gemm_{layouts}_{half}_{out}"));
        }
    }
    names
}

/// One operand [rows, k] of one batch z: K-major `v[z stride + row ld + k]`, else
/// `v[z stride + k ld + row]`.
struct Operand {
    values: Vec<f64>,
    ld: usize,
    stride: usize,
    k_major: bool,
}

impl Operand {
    fn random(rng: &mut StdRng, (rows, k): (usize, usize), batches: usize, k_major: bool, ty: Ty) -> Self {
        // Padded leading dimensions and batch strides: the kernel must honour both.
        let ld = if k_major { k + 8 } else { rows + 8 };
        let stride = ld * if k_major { rows } else { k } + 16;
        let values = (0..stride * batches).map(|_| ty.round(rng.random_range(-1.0..1.0))).collect();
        Operand { values, ld, stride, k_major }
    }

    fn at(&self, z: usize, row: usize, k: usize) -> f64 {
        self.values[z * self.stride + if self.k_major { row * self.ld + k } else { k * self.ld + row }]
    }
}

fn check(
    (family, tile_n): Family,
    kernel: &str,
    [m, n, k, k2]: [usize; 4],
    batches: usize,
    (bias, addend, accumulate): (bool, bool, bool),
    landing: Landing,
    rng: &mut StdRng,
) {
    let GemmKind { a_k_major, b_k_major, half, out_f32 } = gemm_kind(kernel);
    let ty = Ty::from(half);
    let emulator = Emulator::with_tile_n(landing, family, tile_n).in_drawn_order(rng);
    let label = format!(
        "{} m={m} n={n} k={k} k2={k2} batches={batches} bias={bias} addend={addend} accumulate={accumulate} {landing:?} {:?}",
        kernel.replacen("bone_gemm_", &format!("{family:?}{tile_n}/"), 1),
        emulator.schedule()
    );
    let a = Operand::random(rng, (m, k), batches, a_k_major, ty);
    let b = Operand::random(rng, (n, k), batches, b_k_major, ty);
    let a2 = Operand::random(rng, (m, k2.max(8)), batches, a_k_major, ty);
    let b2 = Operand::random(rng, (n, k2.max(8)), batches, b_k_major, ty);
    let bias_values: Vec<f64> = (0..n).map(|_| ty.round(rng.random_range(-1.0..1.0))).collect();
    let (ldc, stride_c) = (n + 8, (n + 8) * m + 8);
    let out_ty = if out_f32 { Ty::F32 } else { ty };
    let c_before: Vec<f64> = (0..stride_c * batches).map(|_| rng.random_range(-1.0..1.0)).collect();
    // Laid out as C, in the operands' type.
    let addend_values: Vec<f64> = (0..stride_c * batches).map(|_| ty.round(rng.random_range(-1.0..1.0))).collect();
    let c = if accumulate { emulator.upload(out_ty, &c_before) } else { emulator.alloc(stride_c * batches * 4) };

    let upload = |o: &Operand| (emulator.upload(ty, &o.values), o.ld);
    let mut gemm = Gemm::new(upload(&a), upload(&b), (c, ldc), [m, n, k])
        .strides([a.stride, b.stride, a2.stride, b2.stride, stride_c])
        .accumulate(accumulate);
    if k2 > 0 {
        gemm = gemm.second(upload(&a2), upload(&b2), k2);
    }
    if bias {
        gemm = gemm.bias(emulator.upload(ty, &bias_values));
    }
    if addend {
        gemm = gemm.addend(emulator.upload(ty, &addend_values));
    }
    gemm.launch(&emulator, kernel, batches).unwrap();

    let got = emulator.download(out_ty, c, stride_c * batches);
    // One rounding of the output: 2^-8 relative for bf16, 2^-11 for f16.
    let tolerance = match out_ty {
        Ty::F32 => 1e-5,
        Ty::Bf16 => 8e-3,
        Ty::F16 => 1e-3,
    };
    for z in 0..batches {
        for row in 0..m {
            for (col, bias_value) in bias_values.iter().enumerate() {
                let mut want: f64 = (0..k).map(|j| a.at(z, row, j) * b.at(z, col, j)).sum();
                want += (0..k2).map(|j| a2.at(z, row, j) * b2.at(z, col, j)).sum::<f64>();
                let index = z * stride_c + row * ldc + col;
                want += if bias { *bias_value } else { 0.0 };
                want += if addend { addend_values[index] } else { 0.0 };
                want += if accumulate { out_ty.round(c_before[index]) } else { 0.0 };
                let error = (got[index] - want).abs() / (1.0 + want.abs());
                assert!(error < tolerance, "{label}: C[{z}, {row}, {col}] = {}, want {want}", got[index]);
            }
        }
    }
}

/// A GEMM family and the tile width forced on it: mma.sync's one width, and each of
/// wgmma's and the warp-specialised wgmma's (every width must be right for any N;
/// `GemmKernels::select` is tested apart).
type Family = (GemmKernels, u32);
const FAMILIES: [Family; 7] = [
    (GemmKernels::MmaSync, 128),
    (GemmKernels::Wgmma, 64),
    (GemmKernels::Wgmma, 128),
    (GemmKernels::Wgmma, 256),
    (GemmKernels::WgmmaWarpSpecialized, 64),
    (GemmKernels::WgmmaWarpSpecialized, 128),
    (GemmKernels::WgmmaWarpSpecialized, 256),
];

#[test]
fn every_gemm_kernel_on_ragged_shapes_with_copies_landing_early_and_late() {
    if !host_kernels_or_skip("every_gemm_kernel_on_ragged_shapes_with_copies_landing_early_and_late") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(21);
    for family in FAMILIES {
        for kernel in kernels() {
            let (kernel, GemmKind { a_k_major, out_f32, .. }) = (kernel.as_str(), gemm_kind(&kernel));
            // M is contiguous (a multiple of 8) only where A is MN-major.
            let m = if a_k_major { 137 } else { 136 };
            for landing in [Landing::Early, Landing::Late] {
                // Adding to what C holds: f32 outputs on one landing, every output on the other.
                let accumulate = out_f32 || landing == Landing::Late;
                check(family, kernel, [m, 264, 200, 24], 2, (true, true, accumulate), landing, &mut rng);
                let tiny = [if a_k_major { 1 } else { 8 }, 8, 8, 0];
                check(family, kernel, tiny, 1, (false, false, false), landing, &mut rng);
            }
        }
    }
}

#[test]
fn a_long_k_cycles_every_pipeline_stage_several_times() {
    if !host_kernels_or_skip("a_long_k_cycles_every_pipeline_stage_several_times") {
        return;
    }
    // 21 K tiles of 32 (mma.sync, 3 stages), 11 of 64 (wgmma: 4 stages on the 64-wide
    // tiles, 5 on the 128-wide, 4 on the 256-wide; warp-specialised: 6 on the 128-wide, 4
    // on the others).
    let mut rng = StdRng::seed_from_u64(23);
    for family in FAMILIES {
        for landing in [Landing::Early, Landing::Late] {
            for n in [56, 120, 136] {
                check(family, "bone_gemm_kt_bf16_f32", [72, n, 640, 24], 1, (false, false, true), landing, &mut rng);
            }
        }
    }
}

#[test]
fn blocks_cover_every_tile_when_grouped_by_tile_rows() {
    if !host_kernels_or_skip("blocks_cover_every_tile_when_grouped_by_tile_rows") {
        return;
    }
    // 11 tile rows (a group of 8, then one of 3) by 3 tile columns, two batches.
    let mut rng = StdRng::seed_from_u64(24);
    for family in FAMILIES {
        check(family, "bone_gemm_kk_bf16_bf16", [1290, 264, 16, 0], 2, (true, false, false), Landing::Late, &mut rng);
    }
}

#[test]
fn a_gemm_with_no_k_writes_what_it_adds_alone() {
    if !host_kernels_or_skip("a_gemm_with_no_k_writes_what_it_adds_alone") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(22);
    for family in FAMILIES {
        for landing in [Landing::Early, Landing::Late] {
            check(family, "bone_gemm_kk_bf16_bf16", [40, 24, 0, 0], 1, (true, false, false), landing, &mut rng);
            check(family, "bone_gemm_tt_f16_f32", [40, 24, 0, 16], 1, (false, true, true), landing, &mut rng);
        }
    }
}

#[test]
fn a_reduction_cut_into_chunks_writes_each_chunks_partial_sums() {
    if !host_kernels_or_skip("a_reduction_cut_into_chunks_writes_each_chunks_partial_sums") {
        return;
    }
    // K = K2 = 200 in chunks of 64 (whole K tiles; the last chunk is 8) and of 136 (a
    // chunk starting inside a K tile), two batches: layer (chunk, batch) = chunk x 2 + batch.
    let mut rng = StdRng::seed_from_u64(25);
    let (m, n, k, batches): (usize, usize, usize, usize) = (72, 40, 200, 2);
    for family in FAMILIES {
        for kernel in ["bone_gemm_tt_bf16_f32", "bone_gemm_kt_f16_f32", "bone_gemm_kk_bf16_f32"] {
            let GemmKind { a_k_major, b_k_major, half, .. } = gemm_kind(kernel);
            let ty = Ty::from(half);
            for (split, landing, schedule) in
                [(64, Landing::Late, Schedule::LowestFirst), (136, Landing::Early, Schedule::HighestFirst)]
            {
                let emulator = Emulator::with_tile_n(landing, family.0, family.1).scheduled(schedule);
                let chunks = k.div_ceil(split);
                let operands = [(m, a_k_major), (n, b_k_major), (m, a_k_major), (n, b_k_major)]
                    .map(|(rows, k_major)| Operand::random(&mut rng, (rows, k), batches, k_major, ty));
                let [a, b, a2, b2] = &operands;
                let (ldc, layer_stride) = (n + 8, (n + 8) * m);
                let c = emulator.alloc(layer_stride * batches * chunks * 4);
                let upload = |o: &Operand| (emulator.upload(ty, &o.values), o.ld);
                Gemm::new(upload(a), upload(b), (c, ldc), [m, n, k])
                    .second(upload(a2), upload(b2), k)
                    .strides([a.stride, b.stride, a2.stride, b2.stride, layer_stride])
                    .split_k(split, layer_stride)
                    .launch(&emulator, kernel, batches)
                    .unwrap();
                let got = emulator.download(Ty::F32, c, layer_stride * batches * chunks);
                for chunk in 0..chunks {
                    let range = chunk * split..(chunk * split + split).min(k);
                    for z in 0..batches {
                        for row in 0..m {
                            for col in 0..n {
                                let want: f64 = range
                                    .clone()
                                    .map(|j| a.at(z, row, j) * b.at(z, col, j) + a2.at(z, row, j) * b2.at(z, col, j))
                                    .sum();
                                let got = got[(chunk * batches + z) * layer_stride + row * ldc + col];
                                assert!(
                                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                    "{family:?} {kernel} split {split}: chunk {chunk} batch {z} C[{row}, {col}] = {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn random_gemms_match_the_direct_product() {
    if !host_kernels_or_skip("random_gemms_match_the_direct_product") {
        return;
    }
    // Shapes, layouts, types, extras and landing drawn at random (seeded): the combinations
    // the lists above do not name. BONE_RANDOM_GEMMS=<cases>[:<seed>] runs more.
    let (cases, seed) = random_cases("BONE_RANDOM_GEMMS", (16, 29));
    let mut rng = StdRng::seed_from_u64(seed);
    let kernels = kernels();
    for _ in 0..cases {
        let family = FAMILIES[rng.random_range(0..FAMILIES.len())];
        let kernel = &kernels[rng.random_range(0..kernels.len())];
        let GemmKind { a_k_major, out_f32, .. } = gemm_kind(kernel);
        // M need be a multiple of 8 only where A is MN-major (contiguous along M); N, K and
        // K2 are always (16-byte chunks, paired stores). K = 0 now and then: C is the extras.
        let m = if a_k_major { rng.random_range(1..=300) } else { 8 * rng.random_range(1..=38) };
        let n = 8 * rng.random_range(1..=40);
        let k = if rng.random_bool(0.05) { 0 } else { 8 * rng.random_range(1..=48) };
        let k2 = if rng.random_bool(0.3) { 8 * rng.random_range(1..=8) } else { 0 };
        let batches = rng.random_range(1..=3);
        let extras = (rng.random_bool(0.5), rng.random_bool(0.5), out_f32 || rng.random_bool(0.5));
        let landing = if rng.random_bool(0.5) { Landing::Early } else { Landing::Late };
        check(family, kernel, [m, n, k, k2], batches, extras, landing, &mut rng);
    }
}
