//! Every error kind, with its message: bad input is a typed error, never a panic.

mod common;

use bone_kernels::reference::{
    DEFAULT_MAX_CONDITION, backward, forward, forward_with_dropout, merge, unmerge, unmerge_adapter,
};
use bone_kernels::{BoneError, Dim, Dims, Dropout, LayerShape, Variant};
use common::layer;

fn shape_error(variant: Variant, k: usize, n: usize, r: usize) -> BoneError {
    LayerShape::new(variant, Dims { k, n, r }).expect_err("shape must be refused")
}

#[test]
fn zero_sizes_are_refused_with_the_dimension_named() {
    for (k, n, r, dim, text) in [
        (0, 8, 4, Dim::In, "K (in_features) must be at least 1, got 0"),
        (8, 0, 4, Dim::Out, "N (out_features) must be at least 1, got 0"),
        (8, 8, 0, Dim::Block, "r (block size) must be at least 1, got 0"),
    ] {
        let err = shape_error(Variant::BatCol, k, n, r);
        assert!(matches!(err, BoneError::ZeroDim { dim: d } if d == dim), "{err:?}");
        assert_eq!(err.to_string(), text);
    }
    let err = shape_error(Variant::Mini { mini_r: 0 }, 8, 8, 4);
    assert_eq!(err.to_string(), "mini_r must be at least 1, got 0");
    let shape = layer(Variant::Shared, 8, 8, 4);
    let err = forward(&shape, 0, &[], &[0.5; 64], &[0.5; 32], None).unwrap_err();
    assert_eq!(err.to_string(), "T (tokens) must be at least 1, got 0");
}

#[test]
fn bat_needs_both_dimensions_divisible_by_r() {
    let err = shape_error(Variant::BatCol, 64, 100, 16);
    assert!(matches!(err, BoneError::NotDivisible { dim: Dim::Out, value: 100, r: 16, .. }), "{err:?}");
    assert_eq!(err.to_string(), "N (out_features) = 100 is not a multiple of r = 16; BatCol cuts W into r x r blocks");
    let err = shape_error(Variant::BatRow, 70, 64, 16);
    assert_eq!(err.to_string(), "K (in_features) = 70 is not a multiple of r = 16; BatRow cuts W into r x r blocks");
    // The shared block takes any K.
    assert!(LayerShape::new(Variant::Shared, Dims { k: 70, n: 100, r: 16 }).is_ok());
}

#[test]
fn mini_needs_n_divisible_by_mini_r_and_shared_needs_r_at_most_k() {
    let err = shape_error(Variant::Mini { mini_r: 7 }, 64, 64, 16);
    assert!(matches!(err, BoneError::MiniNotDivisible { n: 64, mini_r: 7 }), "{err:?}");
    assert!(err.to_string().starts_with("N (out_features) = 64 is not a multiple of mini_r = 7"), "{err}");
    let err = shape_error(Variant::Shared, 8, 64, 16);
    assert_eq!(
        err.to_string(),
        "r (block size) = 16 exceeds K (in_features) = 8; the shared block needs r <= K (as PEFT)"
    );
}

#[test]
fn overflowing_sizes_are_refused() {
    let err = shape_error(Variant::Shared, usize::MAX / 2, 4, 1);
    assert!(matches!(err, BoneError::Overflow { what: "W [N, K]", .. }), "{err:?}");
    assert!(err.to_string().starts_with("W [N, K] = 4 x "), "{err}");
    let shape = layer(Variant::Shared, 8, 8, 4);
    let err = shape.check_tokens(usize::MAX / 4).unwrap_err();
    assert!(matches!(err, BoneError::Overflow { what: "X [T, K]", .. }), "{err:?}");
}

#[test]
fn sizes_beyond_32_bit_kernel_indexing_are_refused() {
    let shape = layer(Variant::BatCol, 65536, 65536, 64);
    let err = shape.check_kernel_indexing(None).unwrap_err();
    assert!(matches!(err, BoneError::TooLargeForKernels { what: "W [N, K]", count: 4294967296, .. }), "{err:?}");
    assert!(err.to_string().contains("more than the 2147483647 that the kernels' 32-bit indexing allows"), "{err}");
    let shape = layer(Variant::BatCol, 16384, 16384, 64);
    assert!(shape.check_kernel_indexing(Some(65536)).is_ok(), "the issue's largest shape fits");
    let err = shape.check_kernel_indexing(Some(1 << 17)).unwrap_err();
    assert!(matches!(err, BoneError::TooLargeForKernels { what: "X [T, K]", .. }), "{err:?}");
}

#[test]
fn buffer_lengths_must_match_the_shape() {
    let shape = layer(Variant::BatCol, 8, 12, 4);
    let (x, w, b, dy) = (vec![0.5; 2 * 8], vec![0.5; 96], vec![0.5; 48], vec![0.5; 2 * 12]);
    let err = forward(&shape, 2, &x[1..], &w, &b, None).unwrap_err();
    assert_eq!(err.to_string(), "buffer `X` has 15 elements, expected 16 ([T, K] = [2, 8])");
    let err = forward(&shape, 2, &x, &w[..95], &b, None).unwrap_err();
    assert_eq!(err.to_string(), "buffer `W` has 95 elements, expected 96 ([N, K] = [12, 8])");
    let err = forward(&shape, 2, &x, &w, &b[..47], None).unwrap_err();
    assert_eq!(err.to_string(), "buffer `B` has 47 elements, expected 48 ([N/r, r, r] = [3, 4, 4] for BatCol)");
    let err = forward(&shape, 2, &x, &w, &b, Some(&[0.5; 11])).unwrap_err();
    assert_eq!(err.to_string(), "buffer `bias` has 11 elements, expected 12 ([N] = [12])");
    let err = backward(&shape, 2, &x, &w, &b, &dy[2..]).unwrap_err();
    assert_eq!(err.to_string(), "buffer `dY` has 22 elements, expected 24 ([T, N] = [2, 12])");
    // A B made for another variant is refused by its length, and the message names the layout.
    let row = layer(Variant::BatRow, 8, 12, 4);
    let err = merge(&row, &w, &b).unwrap_err();
    assert_eq!(err.to_string(), "buffer `B` has 48 elements, expected 32 ([K/r, r, r] = [2, 4, 4] for BatRow)");
}

#[test]
fn unmerge_refuses_singular_ill_conditioned_and_non_finite_blocks() {
    let shape = layer(Variant::BatCol, 4, 4, 2);
    let w = vec![0.25; 16];
    // Block 1 is -I: I + B = 0.
    let singular = [0.1, 0.0, 0.0, 0.1, -1.0, 0.0, 0.0, -1.0];
    let err = unmerge(&shape, &w, &singular, DEFAULT_MAX_CONDITION).unwrap_err();
    assert!(matches!(err, BoneError::Singular { block: 1 }), "{err:?}");
    assert_eq!(err.to_string(), "I + B of adapter block 1 is singular; the merge cannot be undone");
    // I + B = diag(1e-6, 1): condition number 1e6.
    let ill = [-1.0 + 1e-6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let err = unmerge(&shape, &w, &ill, DEFAULT_MAX_CONDITION).unwrap_err();
    assert!(matches!(err, BoneError::IllConditioned { block: 0, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("I + B of adapter block 0 has condition number 1.000e6, above the limit 1.0e4"),
        "{err}"
    );
    // A limit that is not a number of at least 1, for either variant, before any block.
    let shared = layer(Variant::Shared, 4, 4, 2);
    for limit in [f64::NAN, 0.5, -1.0] {
        let err = unmerge(&shape, &w, &ill, limit).unwrap_err();
        assert!(matches!(err, BoneError::InvalidConditionLimit { .. }), "{err:?}");
        let err = unmerge_adapter(&shared, &[0.1; 8], limit).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("the condition-number limit for unmerging is {limit}; ")),
            "{err}"
        );
    }
    assert!(unmerge(&shape, &w, &singular[..4].repeat(2), f64::INFINITY).is_ok());
    assert!(unmerge(&shape, &w, &ill, 1e7).is_ok(), "a caller may accept a worse condition");
    let err = unmerge(&shape, &w, &[0.0, 0.0, 0.0, f64::NAN, 0.0, 0.0, 0.0, 0.0], DEFAULT_MAX_CONDITION).unwrap_err();
    assert_eq!(err.to_string(), "adapter block 0 holds NaN or infinity; the merge cannot be undone");
}

#[test]
fn dropout_needs_a_probability_below_one_and_the_shared_block() {
    for p in [-0.5, 1.0, f64::INFINITY] {
        let err = Dropout::new(p, 3).unwrap_err();
        assert_eq!(err.to_string(), format!("dropout probability p = {p} is outside [0, 1)"));
    }
    let dropout = Some(Dropout::new(0.2, 3).unwrap());
    for variant in [Variant::BatCol, Variant::BatRow] {
        let shape = layer(variant, 8, 8, 4);
        let err = forward_with_dropout(&shape, 1, &[0.5; 8], &[0.5; 64], &[0.5; 32], None, dropout).unwrap_err();
        assert!(matches!(err, BoneError::DropoutOnBat { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("dropout applies to the shared block and mini (PEFT's miss_dropout); PEFT gives {variant} none")
        );
    }
}

#[test]
fn gpu_errors_explain_themselves() {
    use bone_kernels::cuda::{device_count, stream_on_device};
    let err = BoneError::from(cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY));
    assert_eq!(err.to_string(), "CUDA driver error: CUDA_ERROR_OUT_OF_MEMORY");
    let err = BoneError::WrongContext { buffer: "W" };
    assert_eq!(err.to_string(), "buffer `W` lives in a different CUDA context than the handle's stream");
    let err = BoneError::UnsupportedByKernels("r = 24; the kernels take r in [8, 16, 32, 64, 128, 256]".into());
    assert_eq!(
        err.to_string(),
        "the GPU kernels do not support this yet: r = 24; the kernels take r in [8, 16, 32, 64, 128, 256]"
    );
    let err = BoneError::Misaligned { buffer: "X" };
    assert!(err.to_string().starts_with("device buffer `X` starts at an address that is not 16-byte aligned"), "{err}");
    let err = BoneError::WorkspaceStream;
    assert!(err.to_string().contains("Workspace::new(kernels.stream().clone())"), "{err}");
    let err = BoneError::Cublas("gemm: CUBLAS_STATUS_NOT_SUPPORTED".into());
    assert_eq!(err.to_string(), "cuBLAS: gemm: CUBLAS_STATUS_NOT_SUPPORTED");
    let err = stream_on_device(device_count()).unwrap_err();
    assert!(matches!(err, BoneError::NoDevice(_)), "{err:?}");
    assert!(err.to_string().starts_with("no usable CUDA device: "), "{err}");
}
