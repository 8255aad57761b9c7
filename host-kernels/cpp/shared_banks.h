// Shared-memory bank traffic: how many wavefronts (passes through the 32 four-byte banks)
// each warp-wide access takes, against the fewest it could take. The kernels' answers do
// not depend on it, their speed does: an access whose lanes hit distinct words of one
// bank is served one word a pass. Counted for what the runtime sees per lane: ldmatrix
// rows, cp.async destinations, and the 4-, 8- and 16-byte accesses of require_access that
// land in shared memory (plain C++ loads and stores are not seen).
#pragma once
#include <cstdint>
#include <deque>

#include "ptx_semantics.h"

namespace bone_host {

// Warp-wide accesses of one kind over a launch.
struct Traffic {
    uint64_t instructions = 0;
    uint64_t wavefronts = 0;
    uint64_t ideal = 0;  // one wavefront per phase with an active lane

    void add(const Traffic& other) {
        instructions += other.instructions;
        wavefronts += other.wavefronts;
        ideal += other.ideal;
    }
};

enum class Access { Ldmatrix, Copy, Vector };
constexpr int ACCESS_KINDS = 3;

// Every kind's traffic, and the per-lane accesses that could not be matched into warp-wide
// ones (lanes of a warp whose n-th accesses differ in kind or size: diverged code). Handed
// to Rust as it is: host-kernels/src/lib.rs's SharedTraffic (repr(C)) mirrors it, ten u64.
struct SharedTraffic {
    Traffic kinds[ACCESS_KINDS];
    uint64_t unmatched = 0;

    void add(const SharedTraffic& other) {
        for (int i = 0; i < ACCESS_KINDS; ++i) kinds[i].add(other.kinds[i]);
        unmatched += other.unmatched;
    }
};
static_assert(sizeof(SharedTraffic) == 10 * sizeof(uint64_t), "the layout lib.rs mirrors");

// One warp-wide access of `bytes` (4, 8 or 16) per lane at shared-memory `offsets`, lanes
// where `present`. A warp is served in phases of 128 bytes' worth of lanes (32 lanes of 4
// bytes, 16 of 8, 8 of 16); in a phase, lanes reading one word share it, and distinct words
// in one bank take a wavefront each.
Traffic warp_access(const uint32_t (&offsets)[WARP], const bool (&present)[WARP], int bytes);

// Matches the per-lane accesses of one warp into warp-wide ones: a lane's n-th access is
// taken to be the same instruction as every other lane's n-th, as it is in code whose
// lanes do not diverge around shared-memory accesses.
class WarpAccesses {
   public:
    void issue(int lane, Access kind, uint32_t offset, int bytes, SharedTraffic& traffic);
    // Counts what is still pending (accesses some lanes never made) and starts over.
    void finish(SharedTraffic& traffic);

   private:
    struct Pending {
        Access kind;
        int bytes;
        int arrived;
        bool mixed;
        uint32_t offsets[WARP];
        bool present[WARP];
    };
    void count(const Pending& p, SharedTraffic& traffic);

    uint64_t base_ = 0;  // the sequence number of pending_.front()
    std::deque<Pending> pending_;
    uint64_t next_[WARP] = {};
};

}  // namespace bone_host
