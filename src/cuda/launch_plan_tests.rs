//! The launch sequences at Llama-2-7B's layer shapes, recorded instead of run: how many
//! launches each pass takes, and that no GEMM with real work runs on a fraction of the
//! GPU. Both are properties of the sequence alone, so they are checked here without a GPU
//! (a reduction cut into chunks once ran one launch per chunk, serialised on the stream).

use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use cudarc::driver::LaunchConfig;

use super::call::Call;
use super::launch::{Arg, GemmKernels, Launcher, chunks, elementwise_config};
use super::params::{BoneDropout, BoneGemm, BoneLayer};
use super::split::{Product, ProductRunner, Split};
use super::timed::{Clock, Timed};
use super::training::{Accumulate, Pass, region_sizes, run_backward, run_forward};
use super::workspace;
use crate::dropout::Dropout;
use crate::error::Result;
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;

/// One recorded launch: the kernel, its thread blocks and, for a GEMM, its flops.
#[derive(Debug)]
struct Launch {
    kernel: String,
    blocks: u32,
    flops: f64,
}

/// CUDA's launch limits (grid.y and grid.z; threads a block) and the most dynamic shared
/// memory a block of an H100/H200 may opt into.
const GRID_YZ_MAX: u32 = 65535;
const BLOCK_THREADS_MAX: u32 = 1024;
const SHARED_BYTES_MAX: u32 = 227 * 1024;
const H200_SMS: u32 = 132;

/// Asserts that `config` is a launch CUDA accepts.
fn assert_launchable(kernel: &str, config: &LaunchConfig) {
    let ((_, y, z), (bx, by, bz)) = (config.grid_dim, config.block_dim);
    assert!(y <= GRID_YZ_MAX && z <= GRID_YZ_MAX, "{kernel}: grid {:?}", config.grid_dim);
    assert!(bx * by * bz <= BLOCK_THREADS_MAX, "{kernel}: block {:?}", config.block_dim);
    assert!(
        config.shared_mem_bytes <= SHARED_BYTES_MAX,
        "{kernel}: {} bytes of shared memory",
        config.shared_mem_bytes
    );
}

/// A [`Launcher`] that only records, on the given GEMM family's tiles, and checks that
/// every launch is one CUDA accepts.
struct Recorder {
    family: GemmKernels,
    launches: RefCell<Vec<Launch>>,
}

impl Launcher for Recorder {
    fn gemm(&self, kernel: &str, p: &BoneGemm, batches: usize) -> Result<()> {
        let (name, config) = self.family.select(kernel, p, batches, H200_SMS);
        assert_launchable(&name, &config);
        let (x, y, z) = config.grid_dim;
        assert_eq!(z as usize, batches * chunks(p));
        let flops = 2.0 * f64::from(p.m) * f64::from(p.n) * f64::from(p.k + p.k2) * batches as f64;
        self.launches.borrow_mut().push(Launch { kernel: name, blocks: x * y * z, flops });
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, _: &[Arg]) -> Result<()> {
        let config = elementwise_config(kernel, elements);
        assert_launchable(kernel, &config);
        let blocks = config.grid_dim.0;
        self.launches.borrow_mut().push(Launch { kernel: kernel.to_string(), blocks, flops: 0.0 });
        Ok(())
    }

    /// The one fused kernel (BatCol's dB) takes T, N, K first and computes G = dY^T X.
    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>> {
        let (name, config) = self.family.fused(kernel, grid);
        assert_launchable(&name, &config);
        let flops = match args {
            [Arg::I32(t), Arg::I32(n), Arg::I32(k), ..] => 2.0 * f64::from(*t) * f64::from(*n) * f64::from(*k),
            _ => panic!("{kernel}: arguments {args:?}"),
        };
        let (x, y, _) = config.grid_dim;
        self.launches.borrow_mut().push(Launch { kernel: name, blocks: x * y, flops });
        Some(Ok(()))
    }
}

/// A library GEMM's products, recorded (through [`Split`]).
impl ProductRunner for Recorder {
    fn product(&self, p: &Product) -> Result<()> {
        // cuBLAS takes every extent and batch count as a 32-bit int.
        assert!(p.shape.iter().chain([&p.batches]).all(|&v| i32::try_from(v).is_ok()), "{p:?}");
        let [m, n, k] = p.shape.map(|v| v as f64);
        let flops = 2.0 * m * n * k * p.batches as f64;
        self.launches.borrow_mut().push(Launch { kernel: "cublas".into(), blocks: 0, flops });
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        Launcher::elementwise(self, kernel, elements, args)
    }

    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        Launcher::gemm(self, kernel, params, batches)
    }
}

/// The launches of one pass, with made-up (aligned, disjoint) addresses: nothing runs.
/// `family` None: on a library GEMM (cuBLAS, through [`Split`]).
fn record_on(family: Option<GemmKernels>, shape: &LayerShape, tokens: usize, pass: Pass) -> Vec<Launch> {
    record_call(family, shape, tokens, pass, |call| call)
}

/// A backward (or forward) call of `shape` with made-up addresses, and its workspace regions.
fn call_for(shape: &LayerShape, tokens: usize, pass: Pass, cut: bool) -> (Call, Vec<u64>) {
    workspace::use_production_bounds();
    let layer = BoneLayer::new(shape, Some(tokens)).unwrap();
    let inputs = Call::new(layer, *shape, tokens, ("bf16", "f32"), [1 << 40, 2 << 40, 3 << 40]).unwrap();
    let call = match pass {
        Pass::Forward => Call { y: 4 << 40, bias: 5 << 40, ..inputs },
        Pass::Backward => Call { y: 4 << 40, dx: 5 << 40, db: 6 << 40, dbias: 7 << 40, ..inputs },
    };
    let regions = (0..region_sizes(shape, tokens, pass, cut).len() as u64).map(|i| (8 + i) << 40).collect();
    (call, regions)
}

/// The same for the call `tweak` makes of the usual one (accumulating, dropping).
fn record_call(
    family: Option<GemmKernels>,
    shape: &LayerShape,
    tokens: usize,
    pass: Pass,
    tweak: impl FnOnce(Call) -> Call,
) -> Vec<Launch> {
    let (call, regions) = call_for(shape, tokens, pass, family.is_some());
    let call = tweak(call);
    let recorder = Recorder { family: family.unwrap_or(GemmKernels::MmaSync), launches: RefCell::new(Vec::new()) };
    match (pass, family) {
        (Pass::Forward, Some(_)) => run_forward(&recorder, &call, &regions).unwrap(),
        (Pass::Backward, Some(_)) => run_backward(&recorder, &call, &regions).unwrap(),
        (Pass::Forward, None) => run_forward(&Split(&recorder), &call, &regions).unwrap(),
        (Pass::Backward, None) => run_backward(&Split(&recorder), &call, &regions).unwrap(),
    }
    recorder.launches.into_inner()
}

fn record(family: GemmKernels, shape: &LayerShape, tokens: usize, pass: Pass) -> Vec<Launch> {
    record_on(Some(family), shape, tokens, pass)
}

const LLAMA: [(usize, usize); 3] = [(4096, 4096), (11008, 4096), (4096, 11008)];
const VARIANTS: [Variant; 4] = [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 64 }];

#[test]
fn every_gemm_with_real_work_fills_the_gpu() {
    // An H100/H200 has 132 SMs: a GEMM of a GFLOP or more on fewer than 128 blocks leaves
    // some idle for microseconds (a GFLOP is about 2 us at full rate). At r = 8, 64 and 256.
    for family in [GemmKernels::MmaSync, GemmKernels::Wgmma, GemmKernels::WgmmaWarpSpecialized] {
        for variant in VARIANTS {
            for (n, k) in LLAMA {
                for t in [128, 256, 512, 4096] {
                    // r = 256 from T = 512: below, BatRow's backward r x r products (dX_i, and
                    // dB_i, whose chunks keep 256 tokens at least) are 64-86 blocks of 1-1.4
                    // GFLOP, about a microsecond of half the GPU each, at a rare block size.
                    for r in [8, 64, 256].into_iter().filter(|&r| r < 256 || t >= 512) {
                        let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
                        for pass in [Pass::Forward, Pass::Backward] {
                            for launch in record(family, &shape, t, pass) {
                                assert!(
                                    launch.flops < 1e9 || launch.blocks >= 128,
                                    "{family:?} {variant} {n}x{k} r={r} T={t} {pass:?}: {launch:?}"
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
fn every_variant_takes_a_handful_of_launches() {
    // Bias and dX on. Every variant's setup (B's operands, S, the tiling matrices) is one launch. The
    // shared block: setup (S, Bfull's two layouts), the GEMM; backward: setup (with E), dB
    // (one chunked GEMM and the sum of its chunks), U (the same), dX, dbias; mini folds
    // dBfull too. BatRow: setup (B's blocks and stack, E), X~, R (chunked: GEMM and sum), the
    // GEMM; backward: setup, dX~, dR (chunked), dX, dB (chunked), dbias. Every reduction is
    // chunked at both T: its [T, r] or [r, r] outputs make 32 tiles at most. BatCol (W' in
    // one slab here): setup (B's blocks, onehot), W', Y; backward: setup, dB (fused with
    // G = dY^T X, in runs of K, then their sum), W', dX, dbias. dbias is two launches
    // everywhere here: 64 strips of columns would leave SMs idle, so its tokens are cut into
    // chunks too, and their sums added in order.
    let expected = [
        (Variant::Shared, 512, 2, 8),
        (Variant::Shared, 4096, 2, 8),
        (Variant::Mini { mini_r: 64 }, 4096, 2, 9),
        (Variant::BatRow, 512, 5, 9),
        (Variant::BatRow, 4096, 5, 9),
        (Variant::BatCol, 512, 3, 7),
        (Variant::BatCol, 4096, 3, 7),
    ];
    check_launch_counts(Some(GemmKernels::MmaSync), &expected);
}

/// Each (variant, T, forward launches, backward launches) at 4096 x 4096, r = 64, on
/// `family` (None: a library GEMM); no summing pass where a library GEMM runs.
fn check_launch_counts(family: Option<GemmKernels>, expected: &[(Variant, usize, usize, usize)]) {
    for &(variant, t, forward, backward) in expected {
        let shape = LayerShape::new(variant, Dims { k: 4096, n: 4096, r: 64 }).unwrap();
        let names =
            |pass| record_on(family, &shape, t, pass).into_iter().map(|launch| launch.kernel).collect::<Vec<_>>();
        let (f, b) = (names(Pass::Forward), names(Pass::Backward));
        // Summing passes of products (not dbias's, which is the crate's own on every engine).
        let sums = f
            .iter()
            .chain(&b)
            .zip([""].into_iter().chain(f.iter().chain(&b).map(String::as_str)))
            .filter(|(name, before)| name.starts_with("bone_sum_chunks") && !before.starts_with("bone_bias_grad"))
            .count();
        assert!(family.is_some() || sums == 0, "{variant} T={t}: a summing pass in forward {f:?}, backward {b:?}");
        assert_eq!((f.len(), b.len()), (forward, backward), "{variant} T={t}: forward {f:?}, backward {b:?}");
    }
}

#[test]
fn a_library_gemm_gets_whole_reductions_and_no_summing_pass() {
    // cuBLAS picks its own split-K: the sequence hands it each product whole, so no
    // bone_sum_chunks* pass runs but dbias's, and the launches are the crate-GEMM sequence's less its
    // sums, plus a second call for each long appended product and a bias-add kernel for Y
    // (but the shared block's and BatRow's, whose bias rides in their appended products);
    // and BatCol's unfused dB (G, then W_o^T G_o and the identity term, dY^T S at small T). The short two-part
    // products (BatCol's W' slab, BatRow's dX_i) and the one with an addend (BatRow's X~)
    // stay on the crate's GEMM, one launch each.
    let expected = [
        (Variant::Shared, 512, 3, 7),
        (Variant::Shared, 4096, 3, 7),
        (Variant::Mini { mini_r: 64 }, 512, 3, 8),
        (Variant::BatRow, 512, 5, 8),
        (Variant::BatCol, 512, 4, 8),
    ];
    check_launch_counts(None, &expected);
    for (variant, pass) in [
        (Variant::BatCol, Pass::Forward),
        (Variant::BatCol, Pass::Backward),
        (Variant::BatRow, Pass::Forward),
        (Variant::BatRow, Pass::Backward),
    ] {
        let shape = LayerShape::new(variant, Dims { k: 4096, n: 4096, r: 64 }).unwrap();
        let launches = record_on(None, &shape, 512, pass);
        let own: Vec<&Launch> = launches.iter().filter(|launch| launch.kernel.starts_with("bone_gemm_")).collect();
        assert_eq!(own.len(), 1, "{variant} {pass:?}: {launches:?}");
    }
}

#[test]
fn accumulating_takes_no_launch_and_dropout_one_element_wise_pass() {
    // Accumulation happens inside the launches that write each output. Dropout replaces the
    // shared block's appended dX term by an element-wise pass (on cuBLAS it was a second
    // library call) and changes nothing else.
    let names = |launches: Vec<Launch>| launches.into_iter().map(|launch| launch.kernel).collect::<Vec<_>>();
    let dropout = BoneDropout::of(Some(Dropout::new(0.1, 5).unwrap()));
    for family in [None, Some(GemmKernels::MmaSync), Some(GemmKernels::WgmmaWarpSpecialized)] {
        for variant in VARIANTS {
            let shape = LayerShape::new(variant, Dims { k: 4096, n: 4096, r: 64 }).unwrap();
            for t in [7, 512] {
                let plain = names(record_on(family, &shape, t, Pass::Backward));
                let summed = names(record_call(family, &shape, t, Pass::Backward, |c| Call {
                    accumulate: Accumulate::ALL,
                    ..c
                }));
                assert_eq!(summed, plain, "{family:?} {variant} T={t}: accumulating");
                if variant.is_bat() {
                    continue;
                }
                let forward = names(record_on(family, &shape, t, Pass::Forward));
                let dropped_forward = names(record_call(family, &shape, t, Pass::Forward, |c| Call { dropout, ..c }));
                assert_eq!(dropped_forward, forward, "{family:?} {variant} T={t}: forward with dropout");
                let dropped = names(record_call(family, &shape, t, Pass::Backward, |c| Call { dropout, ..c }));
                let passes = dropped.iter().filter(|name| *name == "bone_dropped_tiles_x_bf16").count();
                let extra = if family.is_some() { 1 } else { 0 };
                assert_eq!(
                    (passes, dropped.len()),
                    (1, plain.len() + extra),
                    "{family:?} {variant} T={t}: {dropped:?}"
                );
            }
        }
    }
}

#[test]
fn the_largest_supported_layers_launch_within_cuda_limits() {
    // #3's bounds: T up to 65536, N and K up to 16384, every r; every family and cuBLAS
    // (the Recorder asserts each launch's grid, block and shared memory).
    for family in [None, Some(GemmKernels::MmaSync), Some(GemmKernels::Wgmma), Some(GemmKernels::WgmmaWarpSpecialized)]
    {
        for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 16 }] {
            for r in [16, 128] {
                let shape = LayerShape::new(variant, Dims { k: 16384, n: 16384, r }).unwrap();
                for t in [1, 65536] {
                    for pass in [Pass::Forward, Pass::Backward] {
                        assert!(!record_on(family, &shape, t, pass).is_empty(), "{variant} r={r} T={t} {pass:?}");
                    }
                }
            }
        }
    }
}

/// Marks counted up from 1.
struct Counter(Cell<u32>);

impl Clock for Counter {
    type Mark = u32;
    fn mark(&self) -> Result<u32> {
        self.0.set(self.0.get() + 1);
        Ok(self.0.get())
    }
}

#[test]
fn a_timed_pass_marks_every_launch_it_makes_and_only_those() {
    // The benches' per-launch breakdown: each launch between its own two marks, in order,
    // named as recorded; nothing changed in what is launched. BatCol's backward on the
    // crate's GEMMs runs the fused dB kernel; on a library GEMM it is not launched (the
    // unfused sequence instead) and must not be marked.
    let shape = LayerShape::new(Variant::BatCol, Dims { k: 4096, n: 4096, r: 64 }).unwrap();
    for family in [Some(GemmKernels::WgmmaWarpSpecialized), None] {
        let (call, regions) = call_for(&shape, 512, Pass::Backward, family.is_some());
        let recorder = Recorder { family: family.unwrap_or(GemmKernels::MmaSync), launches: RefCell::new(Vec::new()) };
        let (clock, launches) = (Counter(Cell::new(0)), Mutex::new(Vec::new()));
        match family {
            Some(_) => {
                let timed = Timed { inner: &recorder, clock: &clock, engine: "wgmma-ws", launches: &launches };
                run_backward(&timed, &call, &regions).unwrap();
            }
            None => {
                let timed = Timed { inner: &recorder, clock: &clock, engine: "native", launches: &launches };
                run_backward(&Split(timed), &call, &regions).unwrap();
            }
        }
        let (marked, recorded) = (launches.into_inner().unwrap(), recorder.launches.into_inner());
        let untimed = record_on(family, &shape, 512, Pass::Backward);
        assert_eq!(
            recorded.iter().map(|l| &l.kernel).collect::<Vec<_>>(),
            untimed.iter().map(|l| &l.kernel).collect::<Vec<_>>()
        );
        // One mark per launch, the same launches: a GEMM under the instantiation the
        // sequence asked for (and its shape and engine), a library product as "cublas".
        assert_eq!(marked.len(), recorded.len(), "{marked:?}");
        for ((name, ..), launch) in marked.iter().zip(&recorded) {
            let engine = if launch.kernel == "cublas" { "cublas " } else { " on " };
            assert!(name == &launch.kernel || name.contains(engine), "{name} for {}", launch.kernel);
        }
        for (i, (name, start, end)) in marked.iter().enumerate() {
            assert!(start < end && (i == 0 || marked[i - 1].2 < *start), "{name}: marks {start}, {end}");
        }
        let names: Vec<&str> = marked.iter().map(|(name, ..)| name.as_str()).collect();
        let fused = names.iter().filter(|name| name.starts_with("bone_bat_col_grads")).count();
        assert_eq!(fused, usize::from(family.is_some()), "{names:?}");
        // BatCol's W' slab: on the crate's GEMM on either engine (a short two-part product).
        let engine = if family.is_some() { "wgmma-ws" } else { "native" };
        let slab = format!("bone_gemm_kt_bf16_bf16 4096x64x64+64 x64 on {engine}");
        assert!(names.contains(&slab.as_str()), "{names:?}");
        // On a library GEMM: G, W_o^T G_o, the identity term dY^T S (T = 512 is below
        // N K / (N + K) = 2048 tokens) and dX.
        assert_eq!(
            names.iter().filter(|name| name.starts_with("cublas ")).count(),
            if family.is_some() { 0 } else { 4 }
        );
        assert!(!names.iter().any(|name| name.starts_with("bone_chunk_sum_add")), "{names:?}");
        assert!(names.contains(&"bone_bias_grad_x_bf16"), "{names:?}");
    }
}

#[test]
fn batcol_takes_its_identity_term_from_whichever_reads_less() {
    // Where dB runs unfused (a library GEMM; r = 8 or 256 on the crate's), sum_i G_{o,i} is
    // dY_o^T S (a product; S from the setup launch) below N K / (N + K) tokens, else the
    // chunk sums of G. The fused kernel has G in shared memory and needs neither.
    let cases = [
        (None, 64, 512, true),
        (None, 64, 2047, true),
        (None, 64, 2048, false),
        (None, 64, 4096, false),
        (Some(GemmKernels::MmaSync), 8, 512, true),
        (Some(GemmKernels::Wgmma), 256, 4096, false),
        (Some(GemmKernels::MmaSync), 64, 512, false),
    ];
    for (family, r, t, from_sums) in cases {
        let shape = LayerShape::new(Variant::BatCol, Dims { k: 4096, n: 4096, r }).unwrap();
        let names: Vec<String> = record_on(family, &shape, t, Pass::Backward).into_iter().map(|l| l.kernel).collect();
        let chunk_sums = names.iter().any(|name| name.starts_with("bone_chunk_sum_add"));
        let fused = names.iter().any(|name| name.starts_with("bone_bat_col_grads"));
        assert_eq!(chunk_sums, !from_sums && !fused, "{family:?} r={r} T={t}: {names:?}");
        assert_eq!(fused, family.is_some() && r == 64, "{family:?} r={r} T={t}: {names:?}");
        // S is written by the setup launch exactly where the identity term is taken from it.
        let s_region = region_sizes(&shape, t, Pass::Backward, family.is_some())[5];
        assert_eq!(s_region, if from_sums { t * r * 2 } else { 0 }, "{family:?} r={r} T={t}");
    }
}
