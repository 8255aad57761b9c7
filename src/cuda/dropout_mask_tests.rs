//! The kernels' dropout mask (kernels/dropout.cuh) against the trainer's
//! (`Dropout::factor`), element for element, with one element's random bits exactly at the
//! threshold: a mask that dropped there too would differ from the right one only at such
//! elements, one draw in 2^32, which random inputs never hit.

use super::emulator::{Ty, host_kernels_or_skip};
use super::emulator_tests::{ENGINES, emulator_for};
use super::launch::{Arg, Launcher};
use super::params::{BoneDropout, BoneLayer};
use crate::dropout::{Dropout, random_bits};
use crate::shape::{Dims, LayerShape};
use crate::variant::Variant;

#[test]
fn the_kernels_mask_is_the_trainers_even_at_the_threshold() {
    if !host_kernels_or_skip("the_kernels_mask_is_the_trainers_even_at_the_threshold") {
        return;
    }
    let (t, k, r, seed) = (3, 64, 16, 11);
    // p such that the first element drawing between 0.2 and 0.8 sits on the threshold.
    let draw = |i| f64::from(random_bits(seed, i)) / 2f64.powi(32);
    let at = (0..).find(|&i| (0.2..0.8).contains(&draw(i))).unwrap();
    let dropout = Dropout::new(draw(at), seed).unwrap();
    assert_eq!(dropout.threshold(), random_bits(seed, at));
    assert!(at < (t * k) as u64, "the element on the threshold lies in the layer");

    // dX = factor(t, k) U[t, k mod r] with U all ones: the mask itself, scaled.
    let emulator = emulator_for(ENGINES[0]);
    let layer = LayerShape::new(Variant::Shared, Dims { k, n: 64, r }).unwrap();
    let u = emulator.upload(Ty::Bf16, &vec![1.0; t * r]);
    let dx = emulator.alloc(t * k * 2);
    let args = [
        Arg::Layer(BoneLayer::new(&layer, Some(t)).unwrap()),
        Arg::I32(t as i32),
        Arg::Dropout(BoneDropout::of(Some(dropout))),
        Arg::I32(0),
        Arg::Ptr(u),
        Arg::Ptr(dx),
    ];
    emulator.elementwise("bone_dropped_tiles_x_bf16", t * k / 8, &args).unwrap();
    let got = emulator.download(Ty::Bf16, dx, t * k);
    for (i, &g) in got.iter().enumerate() {
        let want = dropout.factor(i as u64);
        assert_eq!(g == 0.0, want == 0.0, "element {i}: kernel {g}, trainer {want} (threshold at {at})");
        assert!((g - want).abs() <= want * 2f64.powi(-8), "element {i}: kernel {g}, trainer {want}");
    }
    assert_ne!(got[at as usize], 0.0, "bits equal to the threshold keep the element");
}
