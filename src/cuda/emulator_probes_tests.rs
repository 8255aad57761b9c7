//! The host runtime's own strictness, on the probe kernels of
//! host-kernels/probes/strictness_probes.cu: what the GEMM tests rely on it to catch (a
//! stage read before its mbarrier's phase completed, a hand-over that never happens, an
//! mbarrier overwritten or used uninitialised, a "warp-uniform" value that is not, a
//! wgmma operand changed while its product is in flight, a missing block barrier in one
//! thread order or the other, a 16-byte read or copy past a buffer) fails here as it would
//! misbehave on a GPU; and its count of shared-memory bank conflicts, which the kernels'
//! layouts are held to.

use std::ops::Range;

use bone_host_kernels::{KernelArg, Landing, Schedule, SharedTraffic, Wavefronts, launch};

use super::emulator::host_kernels_or_skip;

/// Runs probe `name` on one block of `threads` threads with `shared` bytes of dynamic
/// shared memory, lowest-numbered thread first.
fn run(name: &str, threads: u32, shared: usize, args: &[KernelArg], landing: Landing) -> Result<SharedTraffic, String> {
    run_in(name, (threads, shared), args, (landing, Schedule::LowestFirst), &[])
}

/// Runs probe `name` in `order`, no vector access allowed in `forbidden`.
fn run_in(
    name: &str,
    (threads, shared): (u32, usize),
    args: &[KernelArg],
    order: (Landing, Schedule),
    forbidden: &[Range<u64>],
) -> Result<SharedTraffic, String> {
    // SAFETY: each probe reads and writes only the buffers passed, at the lengths its
    // comment states, which the callers below provide.
    unsafe { launch(name, [1, 1, 1], [threads, 1, 1], shared, args, order, forbidden) }
}

/// What a probe's cp.async or 16-byte load reads: 16-byte aligned, as device memory is (an
/// array of f32 on the stack need not be).
#[repr(align(16))]
struct Aligned16<T>(T);

/// `ranges` as offsets in bytes from `base`, made addresses.
fn at(base: u64, ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    ranges.iter().map(|r| base + r.start..base + r.end).collect()
}

/// What thread 0 of the stage hand-over probe reads, once the phase completed or one
/// arrival before; `forbidden` in bytes from the start of the 16 copied.
fn handover(wait: bool, landing: Landing, forbidden: &[Range<u64>]) -> Result<[f32; 4], String> {
    let src = Aligned16([1.5_f32, -2.0, 3.25, 4.0]);
    let mut out = [0.0_f32; 4];
    let (src_ptr, out_ptr, wait) = (src.0.as_ptr() as u64, out.as_mut_ptr() as u64, i32::from(wait));
    let args = [(&src_ptr).into(), (&out_ptr).into(), (&wait).into()];
    run_in("bone_probe_stage_handover", (64, 32), &args, (landing, Schedule::LowestFirst), &at(src_ptr, forbidden))?;
    Ok(out)
}

/// The eighth of the eight bf16 a 16-byte load reads at `offset` elements into a row of
/// 24 holding 1.0 .. 24.0 (16-byte aligned); `forbidden` in bytes from the row's start.
fn vector_load(offset: i32, forbidden: &[Range<u64>]) -> Result<f32, String> {
    let row = Aligned16::<[u16; 24]>(std::array::from_fn(|i| half::bf16::from_f32(i as f32 + 1.0).to_bits()));
    let (src, mut out) = (row.0.as_ptr() as u64, [0.0_f32; 1]);
    let out_ptr = out.as_mut_ptr() as u64;
    let args = [(&src).into(), (&offset).into(), (&out_ptr).into()];
    run_in("bone_probe_vector_load", (32, 0), &args, (Landing::Early, Schedule::LowestFirst), &at(src, forbidden))?;
    Ok(out[0])
}

#[test]
fn a_stage_read_after_its_mbarrier_holds_the_copy_and_one_read_before_does_not() {
    if !host_kernels_or_skip("a_stage_read_after_its_mbarrier_holds_the_copy_and_one_read_before_does_not") {
        return;
    }
    for landing in [Landing::Early, Landing::Late] {
        assert_eq!(handover(true, landing, &[]).unwrap(), [1.5, -2.0, 3.25, 4.0], "{landing:?}");
    }
    // Issued and handed to the barrier, the copy lands only when the phase completes.
    assert!(
        handover(false, Landing::Late, &[]).unwrap().iter().all(|v| v.is_nan()),
        "a read before the phase saw the copy"
    );
}

#[test]
fn a_missing_barrier_shows_in_one_thread_order_or_the_other() {
    if !host_kernels_or_skip("a_missing_barrier_shows_in_one_thread_order_or_the_other") {
        return;
    }
    // Thread 0 writes what thread 32 reads: lowest-first runs the write first either way;
    // highest-first runs the read first, and without the barrier it reads shared memory's
    // initial NaN.
    let read = |barrier: bool, schedule: Schedule| {
        let mut out = [0.0_f32; 1];
        let (out_ptr, barrier) = (out.as_mut_ptr() as u64, i32::from(barrier));
        let args = [(&out_ptr).into(), (&barrier).into()];
        run_in("bone_probe_write_then_read", (64, 4), &args, (Landing::Early, schedule), &[]).unwrap();
        out[0]
    };
    for schedule in [Schedule::LowestFirst, Schedule::HighestFirst, Schedule::Random(7), Schedule::Random(8)] {
        assert_eq!(read(true, schedule), 1.5, "{schedule:?}");
    }
    assert_eq!(read(false, Schedule::LowestFirst), 1.5);
    assert!(read(false, Schedule::HighestFirst).is_nan(), "highest-first read the cell after its write");
}

#[test]
fn a_phase_no_one_completes_is_a_deadlock() {
    if !host_kernels_or_skip("a_phase_no_one_completes_is_a_deadlock") {
        return;
    }
    let count = 1_i32;
    let err = run("bone_probe_wait_forever", 32, 8, &[(&count).into()], Landing::Late).unwrap_err();
    assert!(err.contains("deadlock") && err.contains("32 on an mbarrier"), "{err}");
}

#[test]
fn misused_mbarriers_and_uniform_values_are_errors() {
    if !host_kernels_or_skip("misused_mbarriers_and_uniform_values_are_errors") {
        return;
    }
    let src = Aligned16([0.0_f32; 4]);
    let src_ptr = src.0.as_ptr() as u64;
    let err = run("bone_probe_copy_onto_barrier", 32, 32, &[(&src_ptr).into()], Landing::Early).unwrap_err();
    assert!(err.contains("cp.async copy onto an mbarrier"), "{err}");
    let err = run("bone_probe_uninitialised_barrier", 32, 8, &[], Landing::Early).unwrap_err();
    assert!(err.contains("used before mbarrier.init"), "{err}");
    let mut out = [0_i32; 32];
    let out_ptr = out.as_mut_ptr() as u64;
    let err = run("bone_probe_divergent_uniform", 32, 0, &[(&out_ptr).into()], Landing::Early).unwrap_err();
    assert!(err.contains("differs between lanes"), "{err}");
}

#[test]
fn a_misaligned_16_byte_access_is_an_error() {
    if !host_kernels_or_skip("a_misaligned_16_byte_access_is_an_error") {
        return;
    }
    assert_eq!(vector_load(8, &[]).unwrap(), 16.0, "the eighth element from offset 8");
    let err = vector_load(4, &[]).unwrap_err();
    assert!(err.contains("16-byte access at an address not 16-byte aligned"), "{err}");
}

#[test]
fn a_vector_read_or_copy_outside_its_memory_is_an_error() {
    if !host_kernels_or_skip("a_vector_read_or_copy_outside_its_memory_is_an_error") {
        return;
    }
    // The row's last eight elements forbidden: a buffer of 16 elements and the guard after
    // it, as the emulator lays them out.
    let guard = 32..48;
    assert_eq!(vector_load(8, std::slice::from_ref(&guard)).unwrap(), 16.0, "the last element before the guard");
    let err = vector_load(16, std::slice::from_ref(&guard)).unwrap_err();
    assert!(err.contains("16-byte access at") && err.contains("outside the buffers it was given"), "{err}");
    // A range ending where the access begins does not touch it.
    assert_eq!(vector_load(16, std::slice::from_ref(&(0..32))).unwrap(), 24.0);
    let err = vector_load(8, &[16..40, 32..48]).unwrap_err();
    assert!(err.contains("overlap"), "{err}");

    // The hand-over probe's cp.async reads its source's 16 bytes: forbidden from the last
    // of them on, it fails; from the byte after, it copies.
    let copied = handover(true, Landing::Late, std::slice::from_ref(&(16..32))).unwrap();
    assert_eq!(copied, [1.5, -2.0, 3.25, 4.0]);
    let err = handover(true, Landing::Late, std::slice::from_ref(&(15..32))).unwrap_err();
    assert!(err.contains("cp.async copy reads") && err.contains("outside the buffers it was given"), "{err}");

    // A copy's 16 bytes must land inside dynamic shared memory (24 bytes here).
    let src = Aligned16([0.0_f32; 4]);
    let src_ptr = src.0.as_ptr() as u64;
    let copy_to =
        |offset: i32| run("bone_probe_copy_to", 32, 24, &[(&src_ptr).into(), (&offset).into()], Landing::Early);
    copy_to(0).unwrap();
    let err = copy_to(16).unwrap_err();
    assert!(err.contains("cp.async copy past the end of dynamic shared memory"), "{err}");
    // So must a vector access: the bank probe's odd lanes store their pair before copying,
    // the first at byte 16 of 16 (on a GPU, a fault; here it would land in the runtime's
    // own memory).
    let err = bank_pattern_in(16, 16, true).unwrap_err();
    assert!(err.contains("8-byte access past the launch's 16 bytes of dynamic shared memory"), "{err}");
}

#[test]
fn a_wgmma_operand_changed_before_its_wait_is_an_error() {
    if !host_kernels_or_skip("a_wgmma_operand_changed_before_its_wait_is_an_error") {
        return;
    }
    let run_probe =
        |change: i32| run("bone_probe_operand_changes_in_flight", 128, 16384, &[(&change).into()], Landing::Early);
    run_probe(0).unwrap();
    let err = run_probe(1).unwrap_err();
    assert!(err.contains("changed between its mma_async and the wait that retired it"), "{err}");
}

/// The bank traffic of the bank-pattern probe: one warp's accesses at lane * `pitch` bytes.
fn bank_pattern(pitch: i32, diverge: bool) -> SharedTraffic {
    bank_pattern_in(32 * pitch as usize, pitch, diverge).unwrap()
}

/// `bone_probe_bank_pattern` with `shared_bytes` of dynamic shared memory.
fn bank_pattern_in(shared_bytes: usize, pitch: i32, diverge: bool) -> Result<SharedTraffic, String> {
    let src = Aligned16([0.0_f32; 4]);
    let (src_ptr, diverge) = (src.0.as_ptr() as u64, i32::from(diverge));
    let args = [(&src_ptr).into(), (&pitch).into(), (&diverge).into()];
    run("bone_probe_bank_pattern", 32, shared_bytes, &args, Landing::Late)
}

#[test]
fn bank_conflicts_are_counted_as_the_hardware_serves_the_banks() {
    if !host_kernels_or_skip("bank_conflicts_are_counted_as_the_hardware_serves_the_banks") {
        return;
    }
    let one = |wavefronts, ideal| Wavefronts { instructions: 1, wavefronts, ideal };
    // 16-byte rows side by side: each phase of 8 lanes covers the 32 banks once. The
    // 8-byte pairs 16 bytes apart: lanes l and l + 8 share banks, two passes a half-warp.
    let packed = bank_pattern(16, false);
    assert_eq!((packed.ldmatrix, packed.copies, packed.vectors), (one(4, 4), one(4, 4), one(4, 2)));
    // 128 bytes apart: every lane of a phase in banks 0..3 (0..1 for the pairs), a pass each.
    let strided = bank_pattern(128, false);
    assert_eq!((strided.ldmatrix, strided.copies, strided.vectors), (one(32, 4), one(32, 4), one(32, 2)));
    assert_eq!(strided.conflicts(), 28 + 28 + 30);
    // 144 bytes apart, as a 64-element bf16 row padded by 8: the rows' 16-byte groups are
    // 9 l mod 8, all different in a phase.
    let padded = bank_pattern(144, false);
    assert_eq!((padded.ldmatrix, padded.copies, padded.vectors), (one(4, 4), one(4, 4), one(4, 2)));
    assert_eq!(padded.unmatched, 0);
    // Lanes whose n-th accesses differ are not matched into warp-wide ones, and say so.
    let diverged = bank_pattern(16, true);
    assert_eq!((diverged.copies.instructions, diverged.vectors.instructions, diverged.unmatched), (0, 0, 64));
    assert_eq!(diverged.ldmatrix, one(4, 4), "ldmatrix is a collective, matched by the runtime");
    // A copy by one lane of the warp: one phase with a lane, one pass.
    let src = Aligned16([0.0_f32; 4]);
    let (src_ptr, offset) = (src.0.as_ptr() as u64, 0_i32);
    let alone = run("bone_probe_copy_to", 32, 16, &[(&src_ptr).into(), (&offset).into()], Landing::Early).unwrap();
    assert_eq!((alone.copies, alone.unmatched), (one(1, 1), 0));
}
