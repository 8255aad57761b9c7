//! The emulator holds every launch to no shared-memory bank conflicts (`Emulator::launch`).
//! That check is only as good as what the runtime counts: here, a step of BatCol, BatRow and
//! the shared block (mini runs the shared block's kernels) on each of the crate's GEMM
//! engines must have had its tile copies, `ldmatrix` rows and G's paired accesses counted, in
//! every GEMM layout and in BatCol's fused dB kernel, and dbias's stores of its warps' sums
//! (the shared block runs with a bias).

use bone_host_kernels::SharedTraffic;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::emulator::{Ty, host_kernels_or_skip};
use super::emulator_tests::{check_on, emulator_for};
use super::handle::GemmEngine;
use crate::variant::Variant;

#[test]
fn every_gemm_layout_and_the_fused_kernel_have_their_shared_accesses_counted() {
    if !host_kernels_or_skip("every_gemm_layout_and_the_fused_kernel_have_their_shared_accesses_counted") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(31);
    for engine in [GemmEngine::Native, GemmEngine::Wgmma, GemmEngine::WgmmaWarpSpecialized] {
        let emulator = emulator_for(engine);
        for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared] {
            let with_bias = variant == Variant::Shared;
            check_on(&emulator, variant, (40, 256, 128, 64), (Ty::Bf16, Ty::F32), (with_bias, false), engine, &mut rng);
        }
        let traffic = emulator.shared_traffic();
        // What `what` counted over the kernels whose names start with `prefix` and hold `part`.
        let counted = |prefix: &str, part: &str, what: fn(&SharedTraffic) -> u64| -> u64 {
            traffic.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(part)).map(|(_, t)| what(t)).sum()
        };
        let family = if engine == GemmEngine::Native { "bone_gemm_" } else { "bone_wgmma_" };
        for layouts in ["_kk_", "_kt_", "_tt_"] {
            let copies = counted(family, layouts, |t| t.copies.instructions);
            assert!(copies > 0, "{engine:?}: no tile copy of {family}*{layouts}* counted");
            if engine == GemmEngine::Native {
                assert!(counted(family, layouts, |t| t.ldmatrix.instructions) > 0, "no ldmatrix of {layouts} counted");
            }
        }
        let fused = "bone_bat_col_grads_";
        for (what, count) in [
            ("tile copies", counted(fused, "", |t| t.copies.instructions)),
            ("ldmatrix rows", counted(fused, "", |t| t.ldmatrix.instructions)),
            ("paired stores and reads of G", counted(fused, "", |t| t.vectors.instructions)),
        ] {
            assert!(count > 0, "{engine:?}: none of the fused dB kernel's {what} counted");
        }
        assert!(counted("bone_bias_grad", "", |t| t.vectors.instructions) > 0, "no store of dbias's sums counted");
    }
}
