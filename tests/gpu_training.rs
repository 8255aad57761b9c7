//! The GPU forward and backward of every variant against the f64 oracle, on fresh random
//! bf16 or f16 data, outputs poisoned with NaN before each launch. Skips with a printed notice
//! where there is no GPU.
//!
//! Small layers are checked whole for every T and r; the Llama-sized layers check Y and
//! dX on a sample of token rows (each row depends only on its own input row) and dB
//! against the full oracle where that is affordable on the CPU. Every case also runs the
//! backward adding to its outputs (`Accumulate::ALL`) and checks the sums.

mod common;

use bone_kernels::cuda::{
    Accumulate, ActivationElement, AdapterElement, BoneKernels, Element, GemmEngine, LayerGrads, LayerWeights,
    Workspace,
};
use bone_kernels::reference::{backward_with_dropout, forward, forward_with_dropout};
use bone_kernels::{BoneError, Dropout, LayerShape, Variant};
use common::{fresh_rng, gemm_engines, gpu_or_skip, layer, random_vec, rel_err};
use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use rand::RngExt;
use rand::rngs::StdRng;
use std::cell::OnceCell;

const TOLERANCE: f64 = 1e-2;

/// The values in the device's type, and exactly what those hold.
fn rounded<TX: Element>(values: &[f64]) -> (Vec<TX>, Vec<f64>) {
    let rounded: Vec<TX> = values.iter().map(|&v| TX::from_f64(v)).collect();
    let exact = rounded.iter().map(|v| v.to_f64()).collect();
    (rounded, exact)
}

fn rows(values: &[f64], width: usize, picked: &[usize]) -> Vec<f64> {
    picked.iter().flat_map(|&row| values[row * width..(row + 1) * width].iter().copied()).collect()
}

/// One layer size's random activations, weight, upstream gradient and bias, on the host
/// (exactly as the device holds them) and on the device, with the token rows Y and dX are
/// compared on: shared by the variants checked on them (on Llama's layers generating them
/// costs seconds of host time per case).
struct Inputs<TX: ActivationElement> {
    tokens: usize,
    n: usize,
    k: usize,
    x: Vec<f64>,
    w: Vec<f64>,
    dy: Vec<f64>,
    bias: Vec<f64>,
    x_dev: CudaSlice<TX>,
    w_dev: CudaSlice<TX>,
    dy_dev: CudaSlice<TX>,
    bias_dev: CudaSlice<TX>,
    /// Sampled token rows (all of them for small T); each row depends only on its own input
    /// row (and, with dropout, its mask).
    picked: Vec<usize>,
    /// X W^T (+ bias) on the picked rows and on the first rows ([`Rows`]), without and with
    /// the bias, once computed.
    y_base: [[OnceCell<Vec<f64>>; 2]; 2],
}

impl<TX: ActivationElement> Inputs<TX> {
    fn new(kernels: &BoneKernels, rng: &mut StdRng, tokens: usize, n: usize, k: usize) -> Self {
        let stream = kernels.stream();
        let (x_host, x) = rounded::<TX>(&random_vec(rng, tokens * k, 1.0));
        let (w_host, w) = rounded::<TX>(&random_vec(rng, n * k, (3.0 / k as f64).sqrt()));
        let (dy_host, dy) = rounded::<TX>(&random_vec(rng, tokens * n, 1.0));
        let (bias_host, bias) = rounded::<TX>(&random_vec(rng, n, 0.5));
        let picked =
            if tokens <= 16 { (0..tokens).collect() } else { (0..8).map(|_| rng.random_range(0..tokens)).collect() };
        Inputs {
            tokens,
            n,
            k,
            x,
            w,
            dy,
            bias,
            x_dev: stream.clone_htod(&x_host).unwrap(),
            w_dev: stream.clone_htod(&w_host).unwrap(),
            dy_dev: stream.clone_htod(&dy_host).unwrap(),
            bias_dev: stream.clone_htod(&bias_host).unwrap(),
            picked,
            y_base: Default::default(),
        }
    }

    /// The token rows Y and dX are compared on: the sampled ones, or, with dropout, the
    /// first ones (the oracle draws a mask for rows 0, 1, .. of what it is given, and the
    /// kernels for the rows' places in X).
    fn rows(&self, first: bool) -> Vec<usize> {
        if first { (0..self.tokens.min(8)).collect() } else { self.picked.clone() }
    }

    /// X W^T (+ bias) on those rows: the shared-block oracle with B = 0 is one plain
    /// product (cheap on big layers).
    fn y_base(&self, first: bool, with_bias: bool) -> &[f64] {
        self.y_base[usize::from(first)][usize::from(with_bias)].get_or_init(|| {
            let plain = layer(Variant::Shared, self.k, self.n, 16);
            let picked = self.rows(first);
            let x_rows = rows(&self.x, self.k, &picked);
            let bias = with_bias.then_some(self.bias.as_slice());
            forward(&plain, picked.len(), &x_rows, &self.w, &vec![0.0; 16 * self.n], bias).unwrap()
        })
    }
}

struct Case {
    shape: LayerShape,
    bias: bool,
    /// Compare dB with the full oracle (costs T N K on the CPU).
    check_db: bool,
    /// Dropout on the adapter's input (shared block and mini only), a fresh seed each case.
    dropout: bool,
}

/// `case`'s variant on `inputs` (its own fresh random B), forward and backward, against the
/// oracle.
fn check<TX: ActivationElement, TB: AdapterElement>(
    kernels: &BoneKernels,
    workspace: &mut Workspace,
    case: &Case,
    inputs: &Inputs<TX>,
    rng: &mut StdRng,
) {
    let started = std::time::Instant::now();
    let (shape, t) = (&case.shape, inputs.tokens);
    let (k, n) = (shape.k(), shape.n());
    let dropout = case.dropout.then(|| Dropout::new(0.1, rng.random()).unwrap());
    assert_eq!((k, n), (inputs.k, inputs.n), "inputs made for another layer size");
    let label = format!(
        "{} T={t} N={n} K={k} r={} bias={} dropout={} X={} B={} engine={:?}",
        shape.variant(),
        shape.r(),
        case.bias,
        case.dropout,
        TX::KERNEL_SUFFIX,
        TB::KERNEL_SUFFIX,
        kernels.gemm_engine()
    );
    let stream = kernels.stream().clone();
    let (x, w, dy) = (&inputs.x, &inputs.w, &inputs.dy);
    let b_scale = if shape.variant().is_bat() { 0.5 / (shape.r() as f64).sqrt() } else { 0.5 / (k as f64).sqrt() };
    let b_host: Vec<TB> = random_vec(rng, shape.adapter_len(), b_scale).iter().map(|&v| TB::from_f64(v)).collect();
    let b: Vec<f64> = b_host.iter().map(|v| v.to_f64()).collect();

    let (x_dev, dy_dev) = (&inputs.x_dev, &inputs.dy_dev);
    let b_dev = stream.clone_htod(&b_host).unwrap();
    let bias = case.bias.then(|| inputs.bias_dev.as_view());
    let weights = LayerWeights { w: inputs.w_dev.as_view(), b: b_dev.as_view(), bias, dropout };
    let mut y_dev = stream.clone_htod(&vec![TX::from_f64(f64::NAN); t * n]).unwrap();
    kernels.forward(shape, t, &x_dev.as_view(), &weights, &mut y_dev.as_view_mut(), workspace).unwrap();
    let y_gpu: Vec<f64> = stream.clone_dtoh(&y_dev).unwrap().iter().map(|v| v.to_f64()).collect();

    let mut dx_dev = stream.clone_htod(&vec![TX::from_f64(f64::NAN); t * k]).unwrap();
    let mut db_dev = stream.clone_htod(&vec![f32::NAN; shape.adapter_len()]).unwrap();
    let mut dbias_dev = stream.clone_htod(&vec![f32::NAN; n]).unwrap();
    let mut run_backward = |dx_dev: &mut _, db_dev: &mut _, dbias_dev: &mut _, accumulate| {
        let mut grads = LayerGrads {
            dx: Some(CudaSlice::as_view_mut(dx_dev)),
            db: CudaSlice::as_view_mut(db_dev),
            dbias: Some(CudaSlice::as_view_mut(dbias_dev)),
            accumulate,
        };
        kernels.backward(shape, t, &x_dev.as_view(), &weights, &dy_dev.as_view(), &mut grads, workspace).unwrap();
    };
    run_backward(&mut dx_dev, &mut db_dev, &mut dbias_dev, Accumulate::NONE);
    let dx_gpu: Vec<f64> = stream.clone_dtoh(&dx_dev).unwrap().iter().map(|v| v.to_f64()).collect();
    let db_first: Vec<f32> = stream.clone_dtoh(&db_dev).unwrap();
    let dbias_gpu: Vec<f64> = stream.clone_dtoh(&dbias_dev).unwrap().iter().map(|&v| v.into()).collect();

    // dB is promised bitwise reproducible.
    stream.memcpy_htod(&vec![f32::NAN; shape.adapter_len()], &mut db_dev).unwrap();
    run_backward(&mut dx_dev, &mut db_dev, &mut dbias_dev, Accumulate::NONE);
    let db_second: Vec<f32> = stream.clone_dtoh(&db_dev).unwrap();
    assert!(
        db_first.iter().zip(&db_second).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{label}: dB not bitwise reproducible"
    );

    // Accumulation: each output adds its gradient to what it holds, here another element's
    // gradient (the values rotated by one), so that neither term alone passes.
    let db_gpu: Vec<f64> = db_first.iter().map(|&v| v.into()).collect();
    let rotated = |v: &[f64]| -> Vec<f64> { v.iter().cycle().skip(1).take(v.len()).copied().collect() };
    let held = [rotated(&dx_gpu), rotated(&db_gpu), rotated(&dbias_gpu)];
    stream.memcpy_htod(&held[0].iter().map(|&v| TX::from_f64(v)).collect::<Vec<_>>(), &mut dx_dev).unwrap();
    stream.memcpy_htod(&held[1].iter().map(|&v| v as f32).collect::<Vec<_>>(), &mut db_dev).unwrap();
    stream.memcpy_htod(&held[2].iter().map(|&v| v as f32).collect::<Vec<_>>(), &mut dbias_dev).unwrap();
    run_backward(&mut dx_dev, &mut db_dev, &mut dbias_dev, Accumulate::ALL);
    let summed: Vec<Vec<f64>> = vec![
        stream.clone_dtoh(&dx_dev).unwrap().iter().map(|v| v.to_f64()).collect(),
        stream.clone_dtoh(&db_dev).unwrap().iter().map(|&v| v.into()).collect(),
        stream.clone_dtoh(&dbias_dev).unwrap().iter().map(|&v| v.into()).collect(),
    ];
    // dX is rounded to 16 bits once more; dB and dbias add in f32.
    for (i, (name, own, tolerance)) in
        [("dX", &dx_gpu, TOLERANCE), ("dB", &db_gpu, 1e-5), ("dbias", &dbias_gpu, 1e-5)].into_iter().enumerate()
    {
        let want: Vec<f64> = held[i].iter().zip(own).map(|(h, g)| h + g).collect();
        let err = rel_err(&summed[i], &want);
        assert!(err < tolerance, "{label}: accumulated {name}, relative error {err:.2e}");
    }

    // Y and dX on the sampled rows.
    let picked = &inputs.rows(case.dropout);
    let (x_rows, dy_rows) = (rows(x, k, picked), rows(dy, n, picked));
    let bias_ref = case.bias.then_some(inputs.bias.as_slice());
    let y_ref = forward_with_dropout(shape, picked.len(), &x_rows, w, &b, bias_ref, dropout).unwrap();
    let y_base = inputs.y_base(case.dropout, case.bias);
    let y_got = rows(&y_gpu, n, picked);
    let y_err = rel_err(&y_got, &y_ref);
    assert!(y_err < TOLERANCE, "{label}: Y relative error {y_err:.2e}");
    let own_got: Vec<f64> = y_got.iter().zip(y_base).map(|(y, base)| y - base).collect();
    let own_ref: Vec<f64> = y_ref.iter().zip(y_base).map(|(y, base)| y - base).collect();
    let own_err = rel_err(&own_got, &own_ref);
    assert!(own_err < TOLERANCE, "{label}: the adapter's own contribution Y - X W^T, relative error {own_err:.2e}");
    let grads_rows = backward_with_dropout(shape, picked.len(), &x_rows, w, &b, &dy_rows, dropout).unwrap();
    let dx_err = rel_err(&rows(&dx_gpu, k, picked), &grads_rows.dx);
    assert!(dx_err < TOLERANCE, "{label}: dX relative error {dx_err:.2e}");

    let dbias_ref: Vec<f64> = (0..n).map(|col| (0..t).map(|row| dy[row * n + col]).sum()).collect();
    let dbias_err = rel_err(&dbias_gpu, &dbias_ref);
    assert!(dbias_err < 1e-5, "{label}: dbias relative error {dbias_err:.2e}");
    let db_err = if case.check_db {
        let full = backward_with_dropout(shape, t, x, w, &b, dy, dropout).unwrap();
        let err = rel_err(&db_gpu, &full.db);
        assert!(err < TOLERANCE, "{label}: dB relative error {err:.2e}");
        format!("{err:.1e}")
    } else {
        "not checked".to_string()
    };
    // The errors seen, for the record (relative, against the f64 oracle), and the case's
    // time (GPU and host together: the runner's time box is per test binary).
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{label}: ok; Y {y_err:.1e}, adapter's own {own_err:.1e}, dX {dx_err:.1e}, dB {db_err}, dbias {dbias_err:.1e} \
         ({seconds:.1} s)"
    );
}

fn variants(r: usize) -> [Variant; 4] {
    [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: r }]
}

#[test]
fn gpu_every_variant_matches_the_oracle_on_small_layers() {
    let Some(mut kernels) = gpu_or_skip("gpu_every_variant_matches_the_oracle_on_small_layers") else { return };
    let mut rng = fresh_rng("gpu_every_variant_matches_the_oracle_on_small_layers");
    let mut workspace = Workspace::new(kernels.stream().clone());
    let engines = gemm_engines(&kernels);
    let mut index = 0;
    for r in [8, 16, 32, 64, 128] {
        for variant in variants(r) {
            for tokens in [1, 7, 128, 1000, 4096] {
                index += 1;
                // Every GEMM engine in turn: this crate's (mma.sync, wgmma, warp-specialised wgmma) and cuBLAS.
                kernels.set_gemm_engine(engines[index % engines.len()]).unwrap();
                // Dropout on every other shared-block and mini case.
                let dropout = !variant.is_bat() && index % 2 == 0;
                let case = Case { shape: layer(variant, 384, 256, r), bias: index % 3 == 0, check_db: true, dropout };
                let inputs = Inputs::<bf16>::new(&kernels, &mut rng, tokens, 256, 384);
                check::<bf16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
                check::<bf16, bf16>(&kernels, &mut workspace, &case, &inputs, &mut rng);
                let inputs = Inputs::<f16>::new(&kernels, &mut rng, tokens, 256, 384);
                check::<f16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
            }
        }
    }
    // r = 256 on a layer whose K and N it divides.
    for variant in variants(256) {
        for tokens in [1, 128, 1000] {
            index += 1;
            kernels.set_gemm_engine(engines[index % engines.len()]).unwrap();
            let dropout = !variant.is_bat() && index % 2 == 0;
            let case = Case { shape: layer(variant, 512, 512, 256), bias: index % 3 == 0, check_db: true, dropout };
            let inputs = Inputs::<bf16>::new(&kernels, &mut rng, tokens, 512, 512);
            check::<bf16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
        }
    }
}

#[test]
fn gpu_the_shared_block_takes_k_not_a_multiple_of_r() {
    let Some(kernels) = gpu_or_skip("gpu_the_shared_block_takes_k_not_a_multiple_of_r") else { return };
    let mut rng = fresh_rng("gpu_the_shared_block_takes_k_not_a_multiple_of_r");
    let mut workspace = Workspace::new(kernels.stream().clone());
    // K = 392 = 6 x 64 + 8: the last chunk of X is zero-padded, as PEFT does.
    for variant in [Variant::Shared, Variant::Mini { mini_r: 32 }] {
        for tokens in [1, 300] {
            let case = Case { shape: layer(variant, 392, 256, 64), bias: true, check_db: true, dropout: tokens > 1 };
            let inputs = Inputs::<bf16>::new(&kernels, &mut rng, tokens, 256, 392);
            check::<bf16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
        }
    }
}

#[test]
fn gpu_every_variant_matches_the_oracle_on_llama_layers() {
    let Some(mut kernels) = gpu_or_skip("gpu_every_variant_matches_the_oracle_on_llama_layers") else { return };
    let mut rng = fresh_rng("gpu_every_variant_matches_the_oracle_on_llama_layers");
    let mut workspace = Workspace::new(kernels.stream().clone());
    let engines = gemm_engines(&kernels);
    for (l, (n, k)) in [(4096, 4096), (11008, 4096), (4096, 11008)].into_iter().enumerate() {
        for (i, tokens) in [1, 128, 4096].into_iter().enumerate() {
            // One set of inputs for the four variants (B is each variant's own).
            let inputs = Inputs::<bf16>::new(&kernels, &mut rng, tokens, n, k);
            // The engines in turn over the nine (layer, T). With all four (native, wgmma,
            // wgmma-ws, cuBLAS) each runs at least two, and cuBLAS, the default, three:
            // T = 1, 128 (dB checked) and 4096.
            kernels.set_gemm_engine(engines[(l + 3 * i + 3) % engines.len()]).unwrap();
            for variant in variants(64) {
                let check_db = tokens * n * k <= 6_000_000_000 && tokens <= 128;
                // Mini with dropout, the shared block without.
                let dropout = matches!(variant, Variant::Mini { .. });
                let case = Case { shape: layer(variant, k, n, 64), bias: tokens % 2 == 1, check_db, dropout };
                check::<bf16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
            }
        }
    }
    // r = 128, bf16 B and f16 activations on one large layer, on each of the crate's GEMMs
    // (Y and dX; dB at r = 128 is checked whole on the small layers, and here would cost
    // minutes of f64 oracle).
    let (bf16_inputs, f16_inputs) = (
        Inputs::<bf16>::new(&kernels, &mut rng, 128, 4096, 4096),
        Inputs::<f16>::new(&kernels, &mut rng, 128, 4096, 4096),
    );
    for engine in engines.into_iter().filter(|&e| e != GemmEngine::Cublas) {
        kernels.set_gemm_engine(engine).unwrap();
        for variant in variants(128) {
            let case = Case { shape: layer(variant, 4096, 4096, 128), bias: true, check_db: false, dropout: false };
            check::<bf16, bf16>(&kernels, &mut workspace, &case, &bf16_inputs, &mut rng);
            check::<f16, f32>(&kernels, &mut workspace, &case, &f16_inputs, &mut rng);
        }
    }
}

#[test]
fn gpu_batcol_grads_walk_many_k_tiles_on_each_of_the_crates_gemms() {
    // At 4096 x 4096 the fused dB kernel's blocks each take 4 K tiles (32 x 32 tiles in 256
    // blocks), and T = 200 is 4 steps of 64 tokens a K tile: the warp-specialised kernel's
    // 4-stage ring wraps within and across K tiles. dB is checked whole.
    let test = "gpu_batcol_grads_walk_many_k_tiles_on_each_of_the_crates_gemms";
    let Some(mut kernels) = gpu_or_skip(test) else { return };
    let mut rng = fresh_rng(test);
    let mut workspace = Workspace::new(kernels.stream().clone());
    let inputs = Inputs::<bf16>::new(&kernels, &mut rng, 200, 4096, 4096);
    for engine in gemm_engines(&kernels).into_iter().filter(|&e| e != GemmEngine::Cublas) {
        kernels.set_gemm_engine(engine).unwrap();
        let case = Case { shape: layer(Variant::BatCol, 4096, 4096, 64), bias: false, check_db: true, dropout: false };
        check::<bf16, f32>(&kernels, &mut workspace, &case, &inputs, &mut rng);
    }
}

#[test]
fn gpu_bad_input_is_refused_before_any_launch() {
    let Some(kernels) = gpu_or_skip("gpu_bad_input_is_refused_before_any_launch") else { return };
    let stream = kernels.stream().clone();
    let mut workspace = Workspace::new(stream.clone());
    let (t, k, n) = (4, 64, 32);
    let x = stream.alloc_zeros::<bf16>(t * k + 8).unwrap();
    let w = stream.alloc_zeros::<bf16>(n * k).unwrap();
    let b = stream.alloc_zeros::<f32>(n * 16).unwrap();
    let mut y = stream.alloc_zeros::<bf16>(t * n).unwrap();
    let weights = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout: None };
    let run =
        |shape: &LayerShape,
         x: cudarc::driver::CudaView<bf16>,
         y: &mut cudarc::driver::CudaSlice<bf16>,
         ws: &mut Workspace| { kernels.forward(shape, t, &x, &weights, &mut y.as_view_mut(), ws).unwrap_err() };
    // Unsupported block size.
    let err = run(&layer(Variant::Shared, k, n, 24), x.slice(..t * k), &mut y, &mut workspace);
    assert!(matches!(err, BoneError::UnsupportedByKernels(_)), "{err}");
    // A B shaped for another variant (BatRow wants [K/r, r, r] = 4 x 16 x 16).
    let err = run(&layer(Variant::BatRow, k, n, 16), x.slice(..t * k), &mut y, &mut workspace);
    assert!(matches!(err, BoneError::LengthMismatch { buffer: "B", .. }), "{err}");
    // A view too short, and one misaligned.
    let err = run(&layer(Variant::BatCol, k, n, 16), x.slice(..t * k - 1), &mut y, &mut workspace);
    assert!(matches!(err, BoneError::LengthMismatch { buffer: "X", .. }), "{err}");
    let err = run(&layer(Variant::BatCol, k, n, 16), x.slice(1..t * k + 1), &mut y, &mut workspace);
    assert!(matches!(err, BoneError::Misaligned { buffer: "X" }), "{err}");
    // An output view that does not start 16-byte aligned (the GEMMs store outputs in pairs).
    let mut y_long = stream.alloc_zeros::<bf16>(t * n + 8).unwrap();
    let shape = layer(Variant::BatCol, k, n, 16);
    let mut y_view = y_long.slice_mut(1..t * n + 1);
    let err = kernels.forward(&shape, t, &x.slice(..t * k), &weights, &mut y_view, &mut workspace).unwrap_err();
    assert!(matches!(err, BoneError::Misaligned { buffer: "Y" }), "{err}");
    // K not a multiple of 8 (the shared block allows any K on the CPU).
    let odd = layer(Variant::Shared, 60, n, 16);
    let err = kernels.forward(&odd, t, &x.slice(..t * 60), &weights, &mut y.as_view_mut(), &mut workspace).unwrap_err();
    assert!(matches!(err, BoneError::UnsupportedByKernels(_)), "{err}");
    // Dropout on a Bat variant (PEFT gives them none).
    let dropout = Some(Dropout::new(0.1, 1).unwrap());
    let dropped = LayerWeights { w: w.as_view(), b: b.as_view(), bias: None, dropout };
    let err = kernels
        .forward(
            &layer(Variant::BatCol, k, n, 16),
            t,
            &x.slice(..t * k),
            &dropped,
            &mut y.as_view_mut(),
            &mut workspace,
        )
        .unwrap_err();
    assert!(matches!(err, BoneError::DropoutOnBat { variant: "BatCol" }), "{err}");
    // A workspace ordered on another stream.
    let mut other = Workspace::new(stream.context().new_stream().unwrap());
    let err = run(&layer(Variant::BatCol, k, n, 16), x.slice(..t * k), &mut y, &mut other);
    assert!(matches!(err, BoneError::WorkspaceStream), "{err}");
}
