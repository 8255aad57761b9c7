//! Where each GEMM engine reads its operands from, on inputs that make every output an
//! exact copy of one input element: B = 0, X and dY holding a single 1 per row (a
//! permutation). Then Y = X W^T copies columns of W and dX = dY W copies rows of W, for
//! every variant (BatRow's X~ is X, BatCol's W' is W: their batched, strided and slab
//! products are exercised too), and the shared block's dB = S^T dY counts tokens, all
//! exact in bf16, f16 and f32; dX added onto -dX (`Accumulate`) is exactly 0. A wrong
//! shared-memory layout, descriptor or fragment mapping shows as outputs taken from the
//! wrong place;
//! on failure the test says which element of W each wrong output holds, which names the
//! permutation. Skips with a printed notice where there is no GPU.

mod common;

use bone_kernels::cuda::{Accumulate, ActivationElement, Element, LayerGrads, LayerWeights, Workspace};
use bone_kernels::{LayerShape, Variant};
use common::{gemm_engines, gpu_or_skip, layer, random_vec};
use half::{bf16, f16};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A [rows, cols] matrix with a single 1 per row, at column `(row * 7 + 3) % cols`.
fn one_hot<TX: Element>(rows: usize, cols: usize) -> (Vec<TX>, Vec<usize>) {
    let hot: Vec<usize> = (0..rows).map(|row| (row * 7 + 3) % cols).collect();
    let mut values = vec![TX::from_f64(0.0); rows * cols];
    for (row, &col) in hot.iter().enumerate() {
        values[row * cols + col] = TX::from_f64(1.0);
    }
    (values, hot)
}

/// Up to five wrong outputs, each with the (row, column) of W that holds its value.
fn describe(wrong: &[(usize, usize, f64)], w: &[f64], k: usize) -> String {
    wrong
        .iter()
        .take(5)
        .map(|&(row, col, got)| {
            let sources: Vec<(usize, usize)> =
                (0..w.len()).filter(|&i| w[i] == got).take(3).map(|i| (i / k, i % k)).collect();
            format!("[{row}, {col}] = {got} (found at W {sources:?})")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The layout check on `t` tokens (at least K and N: every column of X and dY is hot).
fn check_layout<TX: ActivationElement>(kernels: &bone_kernels::cuda::BoneKernels, shape: &LayerShape, t: usize) {
    let (k, n, r) = (shape.k(), shape.n(), shape.r());
    let stream = kernels.stream().clone();
    let mut rng = StdRng::seed_from_u64(41);
    // Distinct random values make the source of every output identifiable.
    let w_device: Vec<TX> = random_vec(&mut rng, n * k, 1.0).iter().map(|&v| TX::from_f64(v)).collect();
    let w: Vec<f64> = w_device.iter().map(|v| v.to_f64()).collect();
    let (x, x_hot) = one_hot::<TX>(t, k);
    let (dy, dy_hot) = one_hot::<TX>(t, n);
    let (x_dev, w_dev, dy_dev) =
        (stream.clone_htod(&x).unwrap(), stream.clone_htod(&w_device).unwrap(), stream.clone_htod(&dy).unwrap());
    let b_dev = stream.clone_htod(&vec![0f32; shape.adapter_len()]).unwrap();
    let weights = LayerWeights { w: w_dev.as_view(), b: b_dev.as_view(), bias: None, dropout: None };
    let mut workspace = Workspace::new(stream.clone());
    let label = format!("{} {:?} {} N={n} K={k} T={t}", shape.variant(), kernels.gemm_engine(), TX::KERNEL_SUFFIX);

    // Y[row, col] = W[col, x_hot[row]].
    let mut y_dev = stream.clone_htod(&vec![TX::from_f64(f64::NAN); t * n]).unwrap();
    kernels.forward(shape, t, &x_dev.as_view(), &weights, &mut y_dev.as_view_mut(), &mut workspace).unwrap();
    let y = stream.clone_dtoh(&y_dev).unwrap();
    let wrong: Vec<_> = (0..t * n)
        .map(|i| (i / n, i % n, y[i].to_f64()))
        .filter(|&(row, col, got)| got != w[col * k + x_hot[row]])
        .collect();
    assert!(wrong.is_empty(), "{label}: {} of {} Y elements wrong: {}", wrong.len(), t * n, describe(&wrong, &w, k));

    // dX[row, col] = W[dy_hot[row], col]; dB[j, col] = #{row : x_hot[row] % r == j, dy_hot[row] == col}.
    let mut dx_dev = stream.clone_htod(&vec![TX::from_f64(f64::NAN); t * k]).unwrap();
    let mut db_dev = stream.clone_htod(&vec![f32::NAN; shape.adapter_len()]).unwrap();
    let (dx, db) = (Some(dx_dev.as_view_mut()), db_dev.as_view_mut());
    let mut grads = LayerGrads { dx, db, dbias: None, accumulate: Accumulate::NONE };
    kernels.backward(shape, t, &x_dev.as_view(), &weights, &dy_dev.as_view(), &mut grads, &mut workspace).unwrap();
    let dx = stream.clone_dtoh(&dx_dev).unwrap();
    let wrong: Vec<_> = (0..t * k)
        .map(|i| (i / k, i % k, dx[i].to_f64()))
        .filter(|&(row, col, got)| got != w[dy_hot[row] * k + col])
        .collect();
    assert!(wrong.is_empty(), "{label}: {} of {} dX elements wrong: {}", wrong.len(), t * k, describe(&wrong, &w, k));

    // Adding to what dX holds reads each element from its own place: onto -dX, exactly 0.
    let negated: Vec<TX> = dx.iter().map(|v| TX::from_f64(-v.to_f64())).collect();
    stream.memcpy_htod(&negated, &mut dx_dev).unwrap();
    let accumulate = Accumulate { dx: true, ..Accumulate::NONE };
    let mut grads = LayerGrads { dx: Some(dx_dev.as_view_mut()), db: db_dev.as_view_mut(), dbias: None, accumulate };
    kernels.backward(shape, t, &x_dev.as_view(), &weights, &dy_dev.as_view(), &mut grads, &mut workspace).unwrap();
    let summed = stream.clone_dtoh(&dx_dev).unwrap();
    let wrong: Vec<usize> = (0..t * k).filter(|&i| summed[i].to_f64() != 0.0).collect();
    let first = wrong.first().map(|&i| (i / k, i % k, summed[i].to_f64()));
    assert!(wrong.is_empty(), "{label}: dX added onto -dX: {} of {} not 0, first {first:?}", wrong.len(), t * k);
    if !matches!(shape.variant(), Variant::Shared) {
        println!("{label}: every output read from the right place");
        return;
    }
    let db = stream.clone_dtoh(&db_dev).unwrap();
    let mut want = vec![0f32; r * n];
    for row in 0..t {
        want[(x_hot[row] % r) * n + dy_hot[row]] += 1.0;
    }
    let wrong: Vec<usize> = (0..r * n).filter(|&i| db[i] != want[i]).collect();
    let shown: Vec<String> =
        wrong.iter().take(5).map(|&i| format!("[{}, {}] = {} want {}", i / n, i % n, db[i], want[i])).collect();
    assert!(wrong.is_empty(), "{label}: {} of {} dB elements wrong: {}", wrong.len(), r * n, shown.join("; "));
    println!("{label}: every output read from the right place");
}

#[test]
fn gpu_every_gemm_engine_reads_its_operands_from_the_right_place() {
    let Some(mut kernels) = gpu_or_skip("gpu_every_gemm_engine_reads_its_operands_from_the_right_place") else {
        return;
    };
    // N = 128 and K = 384: 128-wide tiles for Y, 256-wide for dX (wgmma); N = 264 and 320:
    // ragged wide tiles; BatRow and BatCol: their batched r-wide products and BatCol's slabs.
    let shapes = [
        layer(Variant::Shared, 384, 128, 32),
        layer(Variant::Shared, 384, 264, 64),
        layer(Variant::BatRow, 384, 320, 64),
        layer(Variant::BatCol, 384, 256, 64),
    ];
    // And many tiles: Y's 8192 x 2048 outputs are 512 tiles of 128 x 256, so that the
    // warp-specialised engine's persistent blocks (one per SM) each take several in turn,
    // their stages and phases running on across tiles.
    let many_tiles = layer(Variant::Shared, 256, 2048, 64);
    for engine in gemm_engines(&kernels) {
        kernels.set_gemm_engine(engine).unwrap();
        for shape in &shapes {
            check_layout::<bf16>(&kernels, shape, shape.k().max(shape.n()));
            check_layout::<f16>(&kernels, shape, shape.k().max(shape.n()));
        }
        check_layout::<bf16>(&kernels, &many_tiles, 8192);
    }
}
