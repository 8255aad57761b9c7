#include "shared_banks.h"

#include <algorithm>

namespace bone_host {

namespace {
constexpr int BANKS = 32;
constexpr int PHASE_BYTES = BANKS * 4;
}  // namespace

Traffic warp_access(const uint32_t (&offsets)[WARP], const bool (&present)[WARP], int bytes) {
    Traffic t;
    t.instructions = 1;
    const int lanes_per_phase = PHASE_BYTES / bytes, words_per_lane = bytes / 4;
    for (int first = 0; first < WARP; first += lanes_per_phase) {
        uint32_t words[BANKS];
        int count = 0;
        for (int lane = first; lane < first + lanes_per_phase; ++lane) {
            if (!present[lane]) continue;
            for (int w = 0; w < words_per_lane; ++w) words[count++] = offsets[lane] / 4 + uint32_t(w);
        }
        if (count == 0) continue;
        std::sort(words, words + count);
        count = int(std::unique(words, words + count) - words);
        int per_bank[BANKS] = {};
        for (int i = 0; i < count; ++i) ++per_bank[words[i] % BANKS];
        t.wavefronts += uint64_t(*std::max_element(per_bank, per_bank + BANKS));
        t.ideal += 1;
    }
    return t;
}

void WarpAccesses::issue(int lane, Access kind, uint32_t offset, int bytes, SharedTraffic& traffic) {
    const uint64_t index = next_[lane]++ - base_;
    if (index == pending_.size()) pending_.push_back(Pending{kind, bytes, 0, false, {}, {}});
    Pending& p = pending_[index];  // a lane is never more than one access ahead of the others' latest
    if (p.kind != kind || p.bytes != bytes) p.mixed = true;
    p.offsets[lane] = offset;
    p.present[lane] = true;
    ++p.arrived;
    while (!pending_.empty() && pending_.front().arrived == WARP) {
        count(pending_.front(), traffic);
        pending_.pop_front();
        ++base_;
    }
}

void WarpAccesses::finish(SharedTraffic& traffic) {
    for (const Pending& p : pending_) count(p, traffic);
    pending_.clear();
    base_ = 0;
    std::fill(next_, next_ + WARP, 0);
}

void WarpAccesses::count(const Pending& p, SharedTraffic& traffic) {
    if (p.mixed) {
        traffic.unmatched += uint64_t(p.arrived);
        return;
    }
    traffic.kinds[int(p.kind)].add(warp_access(p.offsets, p.present, p.bytes));
}

}  // namespace bone_host
