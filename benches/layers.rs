//! Every Bone path against LoRA, the cuBLAS floors and the cuBLAS BatCol plan, on
//! Llama-2-7B's layer shapes, timed with CUDA events (criterion `iter_custom`): warm-up,
//! then the median of many samples; inputs alternate between two copies so that X, dY
//! and W together exceed the H200's 50 MB L2; random data.
//!
//! Paths (criterion function names):
//!   floor/fwd            Y = X W^T                          (cuBLAS; 1 GEMM)
//!   floor2/fwd_bwd       + dX = dY W                        (frozen base, the LoRA-order floor; 2 GEMMs)
//!   floor3/fwd_bwd       + dW = dY^T X                      (full fine-tuning; 3 GEMMs)
//!   lora/*               LoRA rank r/2 via cuBLAS: (K + N) r/2 parameters, exactly BatCol's and
//!                        Shared's N r on square W; on the MLP shapes BatCol has N r (1.46x LoRA's
//!                        at 11008 x 4096, 0.54x at 4096 x 11008) and BatRow K r (the reverse)
//!   plan/*               BatCol with W' formed whole, cuBLAS GEMMs, our dB kernel
//!   bat-col/*, bat-row/*, shared/*, mini/*   this crate's kernels (its own GEMM on mma.sync);
//!                        the shared block and mini keep S [T, r] between the passes (since
//!                        2026-11-29: forward_saving_block_sums), BatCol and BatRow keep X
//!   <variant>+wgmma-ws/* the same with its warp-specialised wgmma GEMM (compute capability
//!                        9.0 only)
//!   <variant>+cublas/*   the same launch sequence with cuBLAS for the products
//!   shared+<engine>+bias/fwd_bwd, shared+<engine>+dropout/fwd_bwd, shared+<engine>+keeps-x/fwd_bwd
//!                        the shared block on the default engine with a bias (and dbias),
//!                        with PEFT's miss_dropout (p = 0.1), and keeping X instead of S (its
//!                        backward sums X again), on the square layer
//!   bat-col*/db          BatCol's dB alone (a backward without dX): the fused kernel on the
//!                        crate's GEMMs (bat-col+wgmma/db the first wgmma one's, the only
//!                        path of that engine here), G through device memory on cuBLAS
//! After each path's fwd_bwd, its step is run launch by launch with CUDA events around each
//! launch (`launch <layer> <path> <i> <ms> ms <kernel>` lines, the median of 5 steps), so
//! that the summary can say where the time goes.
//! Throughput is counted as 2 T N K per GEMM the path needs by definition (1 forward;
//! 2 forward + backward, 3 for BatCol, the plan and full fine-tuning).
//!
//! First, the plain products alone (groups `product/<kk|kt|tt>/<m>x<n>x<k>`: the forward's
//! Y = X W^T, the backward's dX = dY W and a weight gradient dY^T X): the crate's GEMM on
//! mma.sync (`native`), on wgmma (`wgmma`) and warp-specialised (`wgmma-ws`) against
//! cuBLAS (`cublas`) on the same shape, 2 m n k flops each.
//! `benches/summarize.py` turns criterion's estimates into the summary table.

use std::time::Duration;

use bone_kernels::cuda::baseline::{BatColCublasPlan, Linear, Lora, LoraGrads, LoraTensors, PlanBuffers, RowMajorBlas};
use bone_kernels::cuda::bench_support::{self, LaunchTime, Product, product};
use bone_kernels::cuda::{
    Accumulate, BoneKernels, GemmEngine, LayerGrads, LayerWeights, Pass, Workspace, device_count, kernels_built,
    stream_on_device,
};
use bone_kernels::{Dims, Dropout, LayerShape, Variant};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
use half::bf16;
use std::sync::Arc;

struct Gpu {
    kernels: BoneKernels,
    blas: RowMajorBlas,
    stream: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
}

impl Gpu {
    /// GPU time of `iters` calls of `step(i)`.
    fn time(&self, iters: u64, mut step: impl FnMut(usize)) -> Duration {
        self.start.record(&self.stream).unwrap();
        for i in 0..iters {
            step(i as usize);
        }
        self.end.record(&self.stream).unwrap();
        Duration::from_secs_f64(f64::from(self.start.elapsed_ms(&self.end).unwrap()) / 1e3)
    }
}

/// Deterministic pseudo-random values in [-scale, scale] (fast enough for 90 M elements).
fn noise(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn device_bf16(stream: &Arc<CudaStream>, len: usize, seed: u64, scale: f32) -> CudaSlice<bf16> {
    let host: Vec<bf16> = noise(len, seed, scale).into_iter().map(bf16::from_f32).collect();
    stream.clone_htod(&host).unwrap()
}

/// One step's buffers: X and dY in, Y, dX, dB and (for a layer with a bias) dbias out; the
/// shared block's and mini's block sums S kept between the passes (`None`: they keep X).
struct StepBuffers<'a> {
    x: &'a CudaSlice<bf16>,
    dy: &'a CudaSlice<bf16>,
    sums: Option<&'a mut CudaSlice<bf16>>,
    y: &'a mut CudaSlice<bf16>,
    dx: &'a mut CudaSlice<bf16>,
    db: &'a mut CudaSlice<f32>,
    dbias: Option<&'a mut CudaSlice<f32>>,
}

/// One forward and backward of `shape`, as a trainer keeping the least would run it: the
/// shared block and mini keep S `[T, r]` between the passes where `io.sums` is given,
/// else (and BatCol and BatRow always) X.
fn step(
    kernels: &BoneKernels,
    shape: &LayerShape,
    weights: &LayerWeights<f32>,
    io: StepBuffers,
    workspace: &mut Workspace,
) {
    let t = io.x.len() / shape.k();
    let (x, mut y) = (io.x.as_view(), io.y.as_view_mut());
    let mut sums = io.sums.filter(|_| !shape.variant().is_bat());
    if let Some(sums) = sums.as_mut() {
        let mut sums = sums.slice_mut(..t * shape.r());
        kernels.forward_saving_block_sums(shape, t, &x, weights, &mut y, &mut sums, workspace).unwrap();
    } else {
        kernels.forward(shape, t, &x, weights, &mut y, workspace).unwrap();
    }
    let mut grads = LayerGrads {
        dx: Some(io.dx.as_view_mut()),
        db: io.db.slice_mut(..shape.adapter_len()),
        dbias: io.dbias.map(|d| d.as_view_mut()),
        accumulate: Accumulate::NONE,
    };
    let dy = io.dy.as_view();
    if let Some(sums) = sums {
        let sums = sums.slice(..t * shape.r());
        kernels.backward_from_block_sums(shape, t, &sums, weights, &dy, &mut grads, workspace).unwrap();
    } else {
        kernels.backward(shape, t, &x, weights, &dy, &mut grads, workspace).unwrap();
    }
}

fn bench_layer(
    group: &mut BenchmarkGroup<WallTime>,
    gpu: &Gpu,
    (n, k, t, r): (usize, usize, usize, usize),
    baselines: bool,
) {
    let s = &gpu.stream;
    let xs = [device_bf16(s, t * k, 1, 1.0), device_bf16(s, t * k, 2, 1.0)];
    let dys = [device_bf16(s, t * n, 3, 1.0), device_bf16(s, t * n, 4, 1.0)];
    let w = device_bf16(s, n * k, 5, (3.0 / k as f32).sqrt());
    let adapter_max = n.max(k) * r;
    let b = s.clone_htod(&noise(adapter_max, 7, 0.01)).unwrap();
    let mut y = s.alloc_zeros::<bf16>(t * n).unwrap();
    let mut dx = s.alloc_zeros::<bf16>(t * k).unwrap();
    let mut db = s.alloc_zeros::<f32>(adapter_max).unwrap();
    let mut sums = s.alloc_zeros::<bf16>(t * r).unwrap();
    let mut workspace = Workspace::new(s.clone());
    let units = |count: u64| Throughput::Elements(count * 2 * (t * n * k) as u64);
    // Every engine this GPU has (the wgmma GEMMs need compute capability 9.0); the first
    // wgmma one only in BatCol's dB alone (its fused kernel against the warp-specialised
    // one's): its layers would repeat the warp-specialised engine's launches but for the
    // GEMMs' main loop, which `product/` times alone, at a minute and a half of the device
    // call's ten.
    let engines: Vec<(GemmEngine, BoneKernels)> = bench_support::engines_to_run(&gpu.kernels)
        .unwrap()
        .into_iter()
        .map(|engine| {
            let mut kernels = gpu.kernels.clone();
            kernels.set_gemm_engine(engine).unwrap();
            (engine, kernels)
        })
        .collect();

    let variants = [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: r }];
    // The first wgmma engine takes part in BatCol's dB alone (see `engines`).
    let paths = variants
        .into_iter()
        .flat_map(|variant| engines.iter().map(move |(engine, kernels)| (variant, *engine, kernels)))
        .filter(|&(variant, engine, _)| engine != GemmEngine::Wgmma || variant == Variant::BatCol);
    for (variant, engine, kernels) in paths {
        let shape = LayerShape::new(variant, Dims { k, n, r }).unwrap();
        let variant_name = match variant {
            Variant::BatCol => "bat-col",
            Variant::BatRow => "bat-row",
            Variant::Shared => "shared",
            Variant::Mini { .. } => "mini",
        };
        let name = match engine {
            GemmEngine::Native => variant_name.to_string(),
            _ => format!("{variant_name}+{}", engine.label()),
        };
        // No bias: Llama's linear layers have none, and LoRA and the cuBLAS floors below
        // run without one (until 2026-11-28 ours ran with bias and dbias: an extra pass
        // over Y and one over dY that the baselines did not pay).
        let weights = LayerWeights { w: w.as_view(), b: b.slice(..shape.adapter_len()), bias: None, dropout: None };
        if engine != GemmEngine::Wgmma {
            // The workspace this path's engine needs (none of the partial sums on cuBLAS).
            let bytes = [Pass::Forward, Pass::Backward]
                .map(|pass| kernels.workspace_bytes(&shape, t, pass).expect("a supported bench shape"));
            let bytes = bytes[0].max(bytes[1]);
            let kept = if variant.is_bat() { (t * k * 2, "X") } else { (t * r * 2, "S") };
            println!(
                "memory {n}x{k} T{t} r{r} {name}: kept between forward and backward {} B ({}), workspace {bytes} B",
                kept.0, kept.1
            );
            group.throughput(units(1));
            group.bench_function(format!("{name}/fwd"), |bencher| {
                bencher.iter_custom(|iters| {
                    gpu.time(iters, |i| {
                        kernels
                            .forward(&shape, t, &xs[i % 2].as_view(), &weights, &mut y.as_view_mut(), &mut workspace)
                            .unwrap()
                    })
                })
            });
            group.throughput(units(if variant == Variant::BatCol { 3 } else { 2 }));
            group.bench_function(format!("{name}/fwd_bwd"), |bencher| {
                bencher.iter_custom(|iters| {
                    gpu.time(iters, |i| {
                        let (x, dy, dbias) = (&xs[i % 2], &dys[i % 2], None);
                        let io =
                            StepBuffers { x, dy, sums: Some(&mut sums), y: &mut y, dx: &mut dx, db: &mut db, dbias };
                        step(kernels, &shape, &weights, io, &mut workspace)
                    })
                })
            });
            // Where the step's time goes, launch by launch (the median of 5 timed steps).
            let runs: Vec<Vec<LaunchTime>> = (0..5)
                .map(|_| {
                    bench_support::time_launches(kernels, |timed| {
                        let io = StepBuffers {
                            x: &xs[0],
                            dy: &dys[0],
                            sums: Some(&mut sums),
                            y: &mut y,
                            dx: &mut dx,
                            db: &mut db,
                            dbias: None,
                        };
                        step(timed, &shape, &weights, io, &mut workspace);
                        Ok(())
                    })
                    .unwrap()
                })
                .collect();
            for (i, launch) in runs[0].iter().enumerate() {
                let mut ms: Vec<f32> = runs.iter().map(|run| run[i].ms).collect();
                ms.sort_by(f32::total_cmp);
                println!("launch {n}x{k}/T{t}/r{r} {name} {i} {:.4} ms {}", ms[ms.len() / 2], launch.kernel);
            }
        }
        if variant == Variant::BatCol {
            // dB alone (a backward without dX): the fused kernel (G in shared memory) on the
            // crate's GEMMs, G through device memory on cuBLAS; 2 T N K flops (G's product).
            group.throughput(units(1));
            group.bench_function(format!("{name}/db"), |bencher| {
                bencher.iter_custom(|iters| {
                    gpu.time(iters, |i| {
                        let db = db.slice_mut(..shape.adapter_len());
                        let mut grads = LayerGrads { dx: None, db, dbias: None, accumulate: Accumulate::NONE };
                        let (x, dy) = (xs[i % 2].as_view(), dys[i % 2].as_view());
                        kernels.backward(&shape, t, &x, &weights, &dy, &mut grads, &mut workspace).unwrap();
                    })
                })
            });
        }
    }
    if !baselines {
        return;
    }

    // What a bias (with dbias) and PEFT's miss_dropout add to the shared block's step on the
    // default engine, on the square layer, and what keeping X instead of S costs:
    // `shared+<engine>+bias`, `+dropout` and `+keeps-x`, beside `shared+<engine>` above.
    if n == k && r == 64 {
        let kernels = &gpu.kernels;
        let shape = LayerShape::new(Variant::Shared, Dims { k, n, r }).unwrap();
        let bias = device_bf16(s, n, 10, 0.1);
        let mut dbias = s.alloc_zeros::<f32>(n).unwrap();
        let extras = [
            ("bias", Some(bias.as_view()), None, true),
            ("dropout", None, Some(Dropout::new(0.1, 1).unwrap()), true),
            ("keeps-x", None, None, false),
        ];
        for (extra, bias, dropout, keeps_sums) in extras {
            let with_bias = bias.is_some();
            let weights = LayerWeights { w: w.as_view(), b: b.slice(..shape.adapter_len()), bias, dropout };
            group.throughput(units(2));
            group.bench_function(format!("shared+{}+{extra}/fwd_bwd", kernels.gemm_engine().label()), |bencher| {
                bencher.iter_custom(|iters| {
                    gpu.time(iters, |i| {
                        let (x, dy, dbias) = (&xs[i % 2], &dys[i % 2], with_bias.then_some(&mut dbias));
                        let sums = keeps_sums.then_some(&mut sums);
                        let io = StepBuffers { x, dy, sums, y: &mut y, dx: &mut dx, db: &mut db, dbias };
                        step(kernels, &shape, &weights, io, &mut workspace)
                    })
                })
            });
        }
    }

    // cuBLAS floors.
    let mut dw = s.alloc_zeros::<bf16>(n * k).unwrap();
    let linear = Linear { k, n };
    let floors: [(&str, u64); 3] = [("floor/fwd", 1), ("floor2/fwd_bwd", 2), ("floor3/fwd_bwd", 3)];
    for (name, gemms) in floors {
        group.throughput(units(gemms));
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                gpu.time(iters, |i| {
                    let (x, dy) = (xs[i % 2].as_view(), dys[i % 2].as_view());
                    linear.forward(&gpu.blas, t, &x, &w.as_view(), &mut y.as_view_mut()).unwrap();
                    if gemms >= 2 {
                        linear.input_grad(&gpu.blas, t, &dy, &w.as_view(), &mut dx.as_view_mut()).unwrap();
                    }
                    if gemms >= 3 {
                        linear.weight_grad(&gpu.blas, t, &dy, &x, &mut dw.as_view_mut()).unwrap();
                    }
                })
            })
        });
    }

    // LoRA at rank r/2: (K + N) r/2 parameters, N r for square W like BatCol and Shared.
    let q = r / 2;
    let lora = Lora::new(k, n, q).unwrap();
    let (a_lora, b_lora) = (device_bf16(s, q * k, 8, 0.01), device_bf16(s, n * q, 9, 0.01));
    let (mut h, mut dh) = (s.alloc_zeros::<bf16>(t * q).unwrap(), s.alloc_zeros::<bf16>(t * q).unwrap());
    let (mut da, mut db_lora) = (s.alloc_zeros::<bf16>(q * k).unwrap(), s.alloc_zeros::<bf16>(n * q).unwrap());
    println!(
        "memory {n}x{k} T{t} r{r} lora q={q}: kept between forward and backward {} B (X and H)",
        (t * k + t * q) * 2
    );
    for (pass, gemms) in [("fwd", 1), ("fwd_bwd", 2)] {
        group.throughput(units(gemms));
        group.bench_function(format!("lora/{pass}"), |bencher| {
            bencher.iter_custom(|iters| {
                gpu.time(iters, |i| {
                    let mut tensors = LoraTensors {
                        x: xs[i % 2].as_view(),
                        w: w.as_view(),
                        a: a_lora.as_view(),
                        b: b_lora.as_view(),
                        h: h.as_view_mut(),
                    };
                    lora.forward(&gpu.blas, t, &mut tensors, &mut y.as_view_mut()).unwrap();
                    if gemms == 2 {
                        let mut grads = LoraGrads {
                            dx: dx.as_view_mut(),
                            da: da.as_view_mut(),
                            db: db_lora.as_view_mut(),
                            dh: dh.as_view_mut(),
                        };
                        lora.backward(&gpu.blas, t, &mut tensors, &dys[i % 2].as_view(), &mut grads).unwrap();
                    }
                })
            })
        });
    }

    // The cuBLAS BatCol plan.
    let shape = LayerShape::new(Variant::BatCol, Dims { k, n, r }).unwrap();
    let plan = BatColCublasPlan::new(&shape).unwrap();
    let (mut w_prime, mut g) = (s.alloc_zeros::<bf16>(n * k).unwrap(), s.alloc_zeros::<bf16>(n * k).unwrap());
    let mut partials = s.alloc_zeros::<f32>(plan.partials_len()).unwrap();
    println!("memory {n}x{k} T{t} r{r} plan: transient {} B (W', G, dB's partial sums)", plan.transient_bytes());
    let b_col = b.slice(..shape.adapter_len());
    for (pass, gemms) in [("fwd", 1), ("fwd_bwd", 3)] {
        group.throughput(units(gemms));
        group.bench_function(format!("plan/{pass}"), |bencher| {
            bencher.iter_custom(|iters| {
                gpu.time(iters, |i| {
                    let x = xs[i % 2].as_view();
                    let mut buffers = PlanBuffers {
                        w_prime: w_prime.as_view_mut(),
                        g: g.as_view_mut(),
                        partials: partials.as_view_mut(),
                    };
                    plan.forward(
                        &gpu.kernels,
                        &gpu.blas,
                        t,
                        &x,
                        &w.as_view(),
                        &b_col,
                        &mut buffers,
                        &mut y.as_view_mut(),
                    )
                    .unwrap();
                    if gemms == 3 {
                        let dy = dys[i % 2].as_view();
                        let mut db_col = db.slice_mut(..shape.adapter_len());
                        plan.backward(
                            &gpu.kernels,
                            &gpu.blas,
                            t,
                            &x,
                            &w.as_view(),
                            &b_col,
                            &dy,
                            &mut buffers,
                            &mut dx.as_view_mut(),
                            &mut db_col,
                        )
                        .unwrap();
                    }
                })
            })
        });
    }
}

/// The plain products of a layer's passes, on each of the crate's GEMMs and on cuBLAS.
fn bench_products(c: &mut Criterion, gpu: &Gpu) {
    let s = &gpu.stream;
    let engines: Vec<(&str, Option<BoneKernels>)> = bench_support::engines_to_run(&gpu.kernels)
        .unwrap()
        .into_iter()
        .filter(|&engine| engine != GemmEngine::Cublas)
        .map(|engine| {
            let mut kernels = gpu.kernels.clone();
            kernels.set_gemm_engine(engine).unwrap();
            (engine.label(), Some(kernels))
        })
        .chain([("cublas", None)])
        .collect();
    // [m, n, k]: Llama-2-7B's square and MLP layers at T = 4096 and the paper's T = 512.
    for dims in [[4096, 4096, 4096], [512, 4096, 4096], [4096, 11008, 4096], [512, 11008, 4096], [4096, 4096, 11008]] {
        let [m, n, k] = dims;
        let operands = [device_bf16(s, m.max(n) * k, 11, 1.0), device_bf16(s, m.max(n) * k, 12, 1.0)];
        let mut out = s.alloc_zeros::<bf16>(m * n).unwrap();
        for which in [Product::Forward, Product::Input, Product::Weight] {
            let mut group = c.benchmark_group(format!("product/{}/{m}x{n}x{k}", which.name()));
            group.warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(500)).sample_size(10);
            group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
            for (name, kernels) in &engines {
                let (kernels, blas) = match kernels {
                    Some(kernels) => (kernels, None),
                    None => (&gpu.kernels, Some(&gpu.blas)),
                };
                group.bench_function(*name, |bencher| {
                    bencher.iter_custom(|iters| {
                        gpu.time(iters, |_| {
                            let (a, b) = (operands[0].slice(..m * k), operands[1].slice(..n * k));
                            product(kernels, blas, which, dims, (&a, &b), &mut out.as_view_mut()).unwrap()
                        })
                    })
                });
            }
            group.finish();
        }
    }
}

fn layers(c: &mut Criterion) {
    if device_count() == 0 || !kernels_built() {
        eprintln!(
            "SKIPPED benches/layers: needs a CUDA GPU and a build with nvcc (kernels built: {})",
            kernels_built()
        );
        return;
    }
    let stream = stream_on_device(0).expect("stream");
    let context = stream.context().clone();
    let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let gpu = Gpu {
        kernels: BoneKernels::new(stream.clone()).expect("kernels"),
        blas: RowMajorBlas::new(stream.clone()).expect("cuBLAS"),
        stream,
        start: context.new_event(timed).unwrap(),
        end: context.new_event(timed).unwrap(),
    };
    // The plain products first: ~35 s, the clearest measure of the crate's GEMMs.
    bench_products(c, &gpu);
    // Llama-2-7B's projections at the paper's batch (1 x 512) and at T = 4096, r = 64.
    let mut cases: Vec<((usize, usize, usize, usize), bool)> = Vec::new();
    for (n, k) in [(4096, 4096), (11008, 4096), (4096, 11008)] {
        for t in [512, 4096] {
            cases.push(((n, k, t, 64), true));
        }
    }
    // The r sweep on the square layer.
    for r in [16, 32, 128] {
        cases.push(((4096, 4096, 4096, r), true));
    }
    for (case, baselines) in cases {
        let (n, k, t, r) = case;
        let mut group = c.benchmark_group(format!("{n}x{k}/T{t}/r{r}"));
        // About 0.7 s per path: the 9 layers' ~280 paths fit one device call (benches/run_gpu.sh).
        group.warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(500)).sample_size(10);
        bench_layer(&mut group, &gpu, case, baselines);
        group.finish();
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
