// Runs a kernel launch on the CPU: every block on one OS thread (blocks spread over the
// cores), every CUDA thread of a block as a fiber switched cooperatively. A fiber runs
// until it reaches __syncthreads or a collective (ldmatrix and mma per warp, wgmma per
// warpgroup), which sees the registers of all its lanes at once, as the hardware does;
// what each collective computes is in ptx_semantics.cpp. The lowest-numbered
// runnable thread always runs next, so warp 0 gets as far ahead of the rest as the
// barriers let it: a missing barrier shows as a read of data not yet written (or already
// overwritten) by the warps behind.
//
// Strictness, to fail where a GPU would misbehave silently:
//   - __syncthreads that some thread of the block never reaches (it exited, or waits at
//     a warp collective) is reported as a deadlock;
//   - the lanes of a warp must meet at the same collective, all 32 of them;
//   - ldmatrix row addresses must be 16-byte aligned;
//   - a 16-byte access (load8/store8, a cp.async source), or a pair of outputs stored at
//     once, must be aligned to its size and must not touch the launch's forbidden ranges
//     (the crate's emulator passes the guard bytes around its allocations), so a read
//     past a buffer fails even where the values read are thrown away; a cp.async must
//     land inside dynamic shared memory;
//   - cp.async copies land either as soon as they are issued or as late as
//     cp.async.wait_group allows (the launch chooses), so a stage read before its copy
//     was waited for, or refilled while still being read, gives wrong numbers;
//   - wgmma.mma_async is computed only when wgmma.wait_group retires it, writing the
//     accumulators then, so accumulators read before the wait give wrong numbers; its
//     operands are read both at issue and at retirement, and must be the same (the
//     hardware reads them at some time in between), so a stage still filling when the
//     product was issued, or refilled before it retired, is an error; an mma_async needs
//     a wgmma.fence since the last wait, and the warpgroup's 128 threads must agree on it;
//   - the cp.async copies a thread hands to an mbarrier (cp.async.mbarrier.arrive) land,
//     in the late mode, only when a wait on that barrier sees their phase complete, so a
//     stage read without waiting for its barrier gives wrong numbers; a thread waiting on
//     an mbarrier runs again only once the phase it waits for has completed (never, if no
//     one arrives: a deadlock); an mbarrier must be initialised first, and no copy may
//     land on one;
//   - a value a warp declares uniform must be the same on all 32 lanes.
// Not an error, but reported with the launch: the shared-memory bank traffic of the
// ldmatrix rows, cp.async destinations and vector accesses it sees (shared_banks.h).
#include <atomic>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bone_host.h"
#include "context.h"
#include "ptx_semantics.h"
#include "registry.h"
#include "shared_banks.h"

namespace bone_host {

thread_local const Coordinates* current = nullptr;

namespace {

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr size_t SHARED_ALIGN = 1024;

struct Copy {
    void* dst;
    const void* src;
    int bytes;
};

void land(const Copy& c) {
    std::memcpy(c.dst, c.src, size_t(c.bytes));
    std::memset(static_cast<char*>(c.dst) + c.bytes, 0, size_t(16 - c.bytes));
}

enum class State { Runnable, AtBarrier, AtCollective, AtMbarrier, Done };
enum class Op { Ldmatrix, LdmatrixTrans, MmaBf16, MmaF16, Uniform, ShflXor };

// An mbarrier: the arrivals a phase takes, those still missing from the current one, how
// many phases have completed, the copies handed to the current one, and those of completed
// phases, which land when a thread's wait sees its phase complete (no thread that did not
// wait may count on them).
struct Mbarrier {
    int count;
    int pending;
    unsigned completed;
    std::vector<Copy> copies;
    std::vector<Copy> done;
};

struct Fiber {
    Context context;
    std::vector<char> stack;
    Coordinates coordinates;
    State state;
    std::vector<Copy> open;                  // issued, not yet committed
    std::deque<std::vector<Copy>> committed;  // oldest first
    const void* waiting_on = nullptr;         // the mbarrier, while AtMbarrier
};

// What one lane brings to a collective, and what it gets back.
struct LaneIn {
    const void* address;
    uint32_t a[4];
    uint32_t b[2];
    float d[4];
};
struct LaneOut {
    uint32_t r[4];
    float d[4];
};

struct Warp {
    Op op;
    int arrived;
    LaneIn in[WARP];
    LaneOut out[WARP];
};

enum class GroupOp { Fence, Mma, Commit, Wait };

struct Warpgroup {
    GroupOp op;
    int arrived;
    int arg;  // wait_group's count, or the mma's transpose flags, type and width (trans_a | trans_b << 1 | f16 << 2 | n << 3)
    bool fenced;
    uint64_t desc_a[WARPGROUP], desc_b[WARPGROUP];
    float* d[WARPGROUP];
    std::vector<WgmmaOp> open;  // issued, not yet committed
    std::deque<std::vector<WgmmaOp>> committed;
};

struct Launch {
    const KernelEntry* kernel;
    void* const* args;
    dim3 grid, block;
    size_t shared_bytes;
    bool late_copies;
    int order;           // which runnable thread runs next: 0 the lowest-numbered, 1 the
                         // highest, 2 one drawn at random (from `seed` and the block)
    uint64_t seed;
    // Address ranges no vector access may touch, [begin, end) pairs sorted by begin and
    // disjoint.
    const uint64_t* forbidden;
    size_t forbidden_count;

    // Whether [p, p + bytes) overlaps a forbidden range: the first range ending after p
    // (ends ascend, as the ranges are sorted and disjoint) must begin at or past p + bytes.
    bool touches_forbidden(const void* p, size_t bytes) const {
        const uint64_t begin = reinterpret_cast<uintptr_t>(p), end = begin + bytes;
        size_t lo = 0, hi = forbidden_count;
        while (lo < hi) {
            const size_t mid = (lo + hi) / 2;
            if (forbidden[2 * mid + 1] <= begin) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo < forbidden_count && forbidden[2 * lo] < end;
    }
};

class BlockRunner;
thread_local BlockRunner* runner = nullptr;

// Runs the blocks an OS thread is given, one at a time; its fibers and their stacks are
// made once and reused.
class BlockRunner {
   public:
    explicit BlockRunner(const Launch& launch)
        : launch_(launch), fibers_(launch.block.x * launch.block.y * launch.block.z) {
        for (Fiber& f : fibers_) f.stack.resize(STACK_BYTES);
        warps_.resize((fibers_.size() + WARP - 1) / WARP);
        accesses_.resize(warps_.size());
        warpgroups_.resize((fibers_.size() + WARPGROUP - 1) / WARPGROUP);
        shared_storage_.resize(launch.shared_bytes + SHARED_ALIGN);
        const uintptr_t base = reinterpret_cast<uintptr_t>(shared_storage_.data());
        shared_ = shared_storage_.data() + (SHARED_ALIGN - base % SHARED_ALIGN) % SHARED_ALIGN;
    }

    // Runs block `index` (x fastest) to its end; returns the error, or "" on success.
    std::string run(unsigned index) {
        const dim3 g = launch_.grid, b = launch_.block;
        const dim3 block_idx{index % g.x, index / g.x % g.y, index / (g.x * g.y)};
        runner = this;
        error_.clear();
        at_barrier_ = 0;
        for (Warp& w : warps_) w.arrived = 0;
        for (WarpAccesses& a : accesses_) a = WarpAccesses{};
        mbarriers_.clear();
        for (Warpgroup& g : warpgroups_) {
            g.arrived = 0;
            g.fenced = false;
            g.open.clear();
            g.committed.clear();
        }
        std::memset(shared_, 0xFF, launch_.shared_bytes);  // NaN until written
        for (size_t i = 0; i < fibers_.size(); ++i) {
            Fiber& f = fibers_[i];
            const unsigned t = unsigned(i);
            f.coordinates = {{t % b.x, t / b.x % b.y, t / (b.x * b.y)}, block_idx, b, g};
            f.state = State::Runnable;
            f.open.clear();
            f.committed.clear();
            start_context(f.context, f.stack.data(), f.stack.size(), &BlockRunner::fiber_main);
        }
        // The lowest-numbered runnable thread (or the highest): warp 0 (or the last) runs
        // as far ahead of the others as the barriers allow, the order that exposes a
        // missing barrier where a later (or earlier) thread writes what it reads; or one
        // drawn at random, for the interleavings in between.
        uint64_t draws = launch_.seed ^ (uint64_t(index) + 1) * 0x9E3779B97F4A7C15ull;
        for (;;) {
            const size_t none = fibers_.size();
            size_t runnable = 0;
            for (const Fiber& f : fibers_) runnable += f.state == State::Runnable;
            // Which runnable thread, counted from the lowest (0) or the highest.
            size_t pick = 0;
            if (launch_.order == 2 && runnable > 0) {
                draws ^= draws << 13;
                draws ^= draws >> 7;
                draws ^= draws << 17;
                pick = size_t(draws % runnable);
            }
            size_t next = none;
            for (size_t i = 0; i < fibers_.size(); ++i) {
                const size_t candidate = launch_.order == 1 ? fibers_.size() - 1 - i : i;
                if (fibers_[candidate].state == State::Runnable && pick-- == 0) {
                    next = candidate;
                    break;
                }
            }
            if (next == none) {
                for (const Fiber& f : fibers_) {
                    if (f.state != State::Done) return deadlock();
                }
                for (WarpAccesses& a : accesses_) a.finish(traffic_);
                return "";
            }
            running_ = next;
            current = &fibers_[next].coordinates;
            switch_context(scheduler_, fibers_[next].context);
            if (!error_.empty()) return error_;
        }
    }

    void sync_threads() {
        Fiber& f = self();
        if (++at_barrier_ == fibers_.size()) {
            at_barrier_ = 0;
            for (Fiber& other : fibers_) other.state = State::Runnable;
            return;
        }
        f.state = State::AtBarrier;
        yield(f);
    }

    LaneOut collective(Op op, const LaneIn& in) {
        Fiber& f = self();
        const size_t warp = running_ / WARP, lane = running_ % WARP;
        if (warps_.size() * WARP != fibers_.size()) fail("a warp collective in a block whose size is not a multiple of 32");
        Warp& w = warps_[warp];
        if (w.arrived == 0) {
            w.op = op;
        } else if (w.op != op) {
            fail("the lanes of warp " + std::to_string(warp) + " meet at different collectives");
        }
        w.in[lane] = in;
        if (++w.arrived == WARP) {
            w.arrived = 0;
            compute(w);
            for (size_t l = 0; l < WARP; ++l) fibers_[warp * WARP + l].state = State::Runnable;
        } else {
            f.state = State::AtCollective;
            yield(f);
        }
        return w.out[lane];
    }

    void warpgroup_collective(GroupOp op, int arg, float* d, uint64_t desc_a, uint64_t desc_b) {
        Fiber& f = self();
        if (warpgroups_.size() * WARPGROUP != fibers_.size()) fail("wgmma in a block whose size is not a multiple of 128");
        const size_t group = running_ / WARPGROUP, lane = running_ % WARPGROUP;
        Warpgroup& g = warpgroups_[group];
        if (g.arrived == 0) {
            g.op = op;
            g.arg = arg;
        } else if (g.op != op || g.arg != arg) {
            fail("the threads of warpgroup " + std::to_string(group) + " meet at different wgmma operations");
        }
        g.d[lane] = d;
        g.desc_a[lane] = desc_a;
        g.desc_b[lane] = desc_b;
        if (++g.arrived == WARPGROUP) {
            g.arrived = 0;
            act(g);
            for (size_t l = 0; l < WARPGROUP; ++l) fibers_[group * WARPGROUP + l].state = State::Runnable;
        } else {
            f.state = State::AtCollective;
            yield(f);
        }
    }

    unsigned char* shared() { return shared_; }

    void mbarrier_init(const void* bar, int count) {
        if (count <= 0) fail("mbarrier.init with a count of " + std::to_string(count));
        const uint32_t at = shared_offset(bar);
        if (at % 8 != 0 || at + 8 > launch_.shared_bytes) fail("an mbarrier not 8-byte aligned inside shared memory");
        mbarriers_[at] = Mbarrier{count, count, 0, {}, {}};
    }

    // One arrival on `bar`, the landing of `copies` with it (cp.async.mbarrier.arrive).
    void mbarrier_arrive(const void* bar, std::vector<Copy> copies) {
        Mbarrier& b = mbarrier(bar);
        b.copies.insert(b.copies.end(), copies.begin(), copies.end());
        if (--b.pending > 0) return;
        b.done.insert(b.done.end(), b.copies.begin(), b.copies.end());
        b.copies.clear();
        b.pending = b.count;
        ++b.completed;
        for (Fiber& f : fibers_) {
            if (f.state == State::AtMbarrier && f.waiting_on == bar) f.state = State::Runnable;
        }
    }

    // The thread's copies not yet landed, handed to `bar` with its arrival.
    void copy_arrive(const void* bar) {
        Fiber& f = self();
        std::vector<Copy> copies = std::move(f.open);
        f.open.clear();
        for (std::vector<Copy>& group : f.committed) copies.insert(copies.end(), group.begin(), group.end());
        f.committed.clear();
        mbarrier_arrive(bar, std::move(copies));
    }

    // Returns once the phase of `bar` with this parity has completed: its count of
    // completed phases has the other parity.
    void mbarrier_wait(const void* bar, int parity) {
        Fiber& f = self();
        while (int(mbarrier(bar).completed & 1) == (parity & 1)) {
            f.state = State::AtMbarrier;
            f.waiting_on = bar;
            yield(f);
        }
        Mbarrier& b = mbarrier(bar);
        for (const Copy& c : b.done) land(c);
        b.done.clear();
    }

    uint32_t shared_offset(const void* p) {
        const auto* byte = static_cast<const unsigned char*>(p);
        if (byte < shared_ || byte > shared_ + launch_.shared_bytes) fail("a shared address outside dynamic shared memory");
        return uint32_t(byte - shared_);
    }

    void async_copy(const Copy& copy) {
        const uint32_t at = shared_offset(copy.dst);
        if (at + 16 > launch_.shared_bytes) fail("a cp.async copy past the end of dynamic shared memory");
        if (copy.bytes != 0 && launch_.touches_forbidden(copy.src, size_t(copy.bytes))) {
            fail("a cp.async copy reads " + describe(copy.src) + ", outside the buffers it was given");
        }
        const auto after = mbarriers_.lower_bound(at >= 8 ? at - 7 : 0);
        if (after != mbarriers_.end() && after->first < at + 16) fail("a cp.async copy onto an mbarrier");
        record(Access::Copy, at, 16);
        if (launch_.late_copies) {
            self().open.push_back(copy);
        } else {
            land(copy);
        }
    }

    void async_commit() {
        Fiber& f = self();
        f.committed.push_back(std::move(f.open));
        f.open.clear();
    }

    void async_wait(int newest_pending) {
        Fiber& f = self();
        while (f.committed.size() > size_t(newest_pending)) {
            for (const Copy& c : f.committed.front()) land(c);
            f.committed.pop_front();
        }
    }

    // `bytes`-byte accesses must be aligned to their size and stay out of forbidden ranges.
    void require_access(const void* p, int bytes) {
        // The messages are built only on failure: this runs for every emulated vector access.
        if (reinterpret_cast<uintptr_t>(p) % uintptr_t(bytes) != 0) {
            const std::string size = std::to_string(bytes);
            fail("a " + size + "-byte access at an address not " + size + "-byte aligned");
        }
        if (launch_.touches_forbidden(p, size_t(bytes))) {
            fail("a " + std::to_string(bytes) + "-byte access at " + describe(p) + ", outside the buffers it was given");
        }
        const auto* byte = static_cast<const unsigned char*>(p);
        const uintptr_t at = reinterpret_cast<uintptr_t>(p), storage = reinterpret_cast<uintptr_t>(shared_storage_.data());
        if (at + uintptr_t(bytes) <= storage || at >= storage + shared_storage_.size()) return;  // not shared memory
        if (byte < shared_ || byte + bytes > shared_ + launch_.shared_bytes) {
            fail("a " + std::to_string(bytes) + "-byte access past the launch's " + std::to_string(launch_.shared_bytes) +
                 " bytes of dynamic shared memory");
        }
        if (bytes != 4 && bytes != 8 && bytes != 16) {
            fail("a " + std::to_string(bytes) + "-byte shared access, which the bank count does not model");
        }
        record(Access::Vector, uint32_t(byte - shared_), bytes);
    }

    // The bank traffic of the blocks this runner has run to their end.
    const SharedTraffic& traffic() const { return traffic_; }

    static std::string describe(const void* p) {
        char text[32];
        std::snprintf(text, sizeof text, "%p", p);
        return text;
    }

    [[noreturn]] void fail(const std::string& message) {
        Fiber& f = self();
        const Coordinates& c = f.coordinates;
        error_ = "block (" + std::to_string(c.block_idx.x) + ", " + std::to_string(c.block_idx.y) + ", " +
                 std::to_string(c.block_idx.z) + ") thread " + std::to_string(running_) + ": " + message;
        f.state = State::Done;
        switch_context(f.context, scheduler_);
        __builtin_unreachable();  // the scheduler never resumes a failed fiber
    }

   private:
    Fiber& self() { return fibers_[running_]; }

    Mbarrier& mbarrier(const void* bar) {
        const auto found = mbarriers_.find(shared_offset(bar));
        if (found == mbarriers_.end()) fail("an mbarrier used before mbarrier.init");
        return found->second;
    }

    void yield(Fiber& f) { switch_context(f.context, scheduler_); }

    // One lane's access of shared memory, matched with its warp's other lanes'.
    void record(Access kind, uint32_t offset, int bytes) {
        accesses_[running_ / WARP].issue(int(running_ % WARP), kind, offset, bytes, traffic_);
    }

    static void fiber_main() {
        BlockRunner& r = *runner;
        r.launch_.kernel->invoke(r.launch_.kernel->kernel, r.launch_.args);
        Fiber& f = r.self();
        f.state = State::Done;
        switch_context(f.context, r.scheduler_);
    }

    void compute(Warp& w) {
        if (w.op == Op::ShflXor) {
            for (int l = 0; l < WARP; ++l) {
                if (w.in[l].a[0] != w.in[0].a[0] || w.in[0].a[0] >= uint32_t(WARP)) {
                    fail("shfl.sync.bfly with a lane mask that differs between lanes or exceeds the warp");
                }
                std::memcpy(w.out[l].d, w.in[l ^ int(w.in[0].a[0])].d, sizeof w.out[l].d);
            }
            return;
        }
        if (w.op == Op::Uniform) {
            for (int l = 0; l < WARP; ++l) {
                if (w.in[l].a[0] != w.in[0].a[0]) fail("a value declared warp-uniform differs between lanes");
                w.out[l].r[0] = w.in[0].a[0];
            }
            return;
        }
        for (const LaneIn& in : w.in) {
            if ((w.op == Op::Ldmatrix || w.op == Op::LdmatrixTrans) && reinterpret_cast<uintptr_t>(in.address) % 16 != 0) {
                fail("ldmatrix row address not 16-byte aligned");
            }
        }
        if (w.op == Op::MmaBf16 || w.op == Op::MmaF16) {
            MmaLane lanes[WARP];
            for (int l = 0; l < WARP; ++l) {
                std::memcpy(lanes[l].a, w.in[l].a, sizeof lanes[l].a);
                std::memcpy(lanes[l].b, w.in[l].b, sizeof lanes[l].b);
                std::memcpy(lanes[l].d, w.in[l].d, sizeof lanes[l].d);
            }
            mma_m16n8k16(lanes, w.op == Op::MmaF16);
            for (int l = 0; l < WARP; ++l) std::memcpy(w.out[l].d, lanes[l].d, sizeof lanes[l].d);
        } else {
            const void* rows[WARP];
            uint32_t out[WARP][4], offsets[WARP];
            bool present[WARP];
            for (int l = 0; l < WARP; ++l) {
                rows[l] = w.in[l].address;
                offsets[l] = shared_offset(rows[l]);
                present[l] = true;
            }
            traffic_.kinds[int(Access::Ldmatrix)].add(warp_access(offsets, present, 16));
            ldmatrix_x4(rows, w.op == Op::LdmatrixTrans, out);
            for (int l = 0; l < WARP; ++l) std::memcpy(w.out[l].r, out[l], sizeof out[l]);
        }
    }

    void act(Warpgroup& g) {
        switch (g.op) {
            case GroupOp::Fence:
                g.fenced = true;
                break;
            case GroupOp::Mma: {
                if (!g.fenced) fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
                WgmmaOp m{g.desc_a[0], g.desc_b[0], g.arg >> 3, g.arg & 1, (g.arg >> 1) & 1, ((g.arg >> 2) & 1) != 0, {}, {}};
                for (int l = 0; l < WARPGROUP; ++l) {
                    if (g.desc_a[l] != m.desc_a || g.desc_b[l] != m.desc_b) {
                        fail("the threads of a warpgroup give wgmma different descriptors");
                    }
                    m.d[l] = g.d[l];
                }
                const std::string error = wgmma_operands(m, shared_, launch_.shared_bytes, m.issued);
                if (!error.empty()) fail(error);
                g.open.push_back(std::move(m));
                break;
            }
            case GroupOp::Commit:
                g.committed.push_back(std::move(g.open));
                g.open.clear();
                break;
            case GroupOp::Wait:
                while (g.committed.size() > size_t(g.arg)) {
                    for (const WgmmaOp& m : g.committed.front()) {
                        // The hardware reads the operands at some time between issue and
                        // retirement: they must hold still over all of it.
                        std::vector<uint16_t> retired;
                        const std::string error = wgmma_operands(m, shared_, launch_.shared_bytes, retired);
                        if (!error.empty()) fail(error);
                        if (retired != m.issued) {
                            fail("a wgmma operand in shared memory changed between its mma_async and the wait that "
                                 "retired it");
                        }
                        wgmma_m64nNk16(m, retired);
                    }
                    g.committed.pop_front();
                }
                g.fenced = false;
                break;
        }
    }

    std::string deadlock() const {
        size_t done = 0, barrier = 0, collective = 0, mbarrier = 0;
        for (const Fiber& f : fibers_) {
            done += f.state == State::Done;
            barrier += f.state == State::AtBarrier;
            collective += f.state == State::AtCollective;
            mbarrier += f.state == State::AtMbarrier;
        }
        return "deadlock: " + std::to_string(barrier) + " thread(s) wait at __syncthreads, " +
               std::to_string(collective) + " at a warp collective, " + std::to_string(mbarrier) +
               " on an mbarrier, " + std::to_string(done) + " have exited";
    }

    const Launch& launch_;
    std::vector<Fiber> fibers_;
    std::vector<Warp> warps_;
    std::vector<WarpAccesses> accesses_;  // one a warp
    SharedTraffic traffic_;
    std::vector<Warpgroup> warpgroups_;
    std::vector<unsigned char> shared_storage_;
    unsigned char* shared_ = nullptr;  // 1 KiB aligned, within shared_storage_
    Context scheduler_;
    size_t running_ = 0;
    size_t at_barrier_ = 0;
    std::map<uint32_t, Mbarrier> mbarriers_;  // by offset in shared memory
    std::string error_;
};

}  // namespace

void sync_threads() { runner->sync_threads(); }

void async_copy(void* dst, const void* src, int bytes) {
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || (bytes != 0 && reinterpret_cast<uintptr_t>(src) % 16 != 0)) {
        runner->fail("cp.async of 16 bytes with an address not 16-byte aligned");
    }
    runner->async_copy({dst, src, bytes});
}

void require_access(const void* p, int bytes) { runner->require_access(p, bytes); }

void async_commit() { runner->async_commit(); }

void async_wait(int newest_pending) { runner->async_wait(newest_pending); }

int warp_uniform(int value) {
    LaneIn in{};
    in.a[0] = uint32_t(value);
    return int(runner->collective(Op::Uniform, in).r[0]);
}

void shfl_xor4(float (&v)[4], int lane_mask) {
    LaneIn in{};
    in.a[0] = uint32_t(lane_mask);
    std::memcpy(in.d, v, sizeof in.d);
    const LaneOut out = runner->collective(Op::ShflXor, in);
    std::memcpy(v, out.d, sizeof out.d);
}

void mbarrier_init(const void* bar, int count) { runner->mbarrier_init(bar, count); }

void mbarrier_arrive(const void* bar) { runner->mbarrier_arrive(bar, {}); }

void mbarrier_wait(const void* bar, int parity) { runner->mbarrier_wait(bar, parity); }

void copy_arrive(const void* bar) { runner->copy_arrive(bar); }

void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans) {
    LaneIn in{};
    in.address = p;
    const LaneOut out = runner->collective(trans ? Op::LdmatrixTrans : Op::Ldmatrix, in);
    for (int i = 0; i < 4; ++i) r[i] = out.r[i];
}

unsigned char* dynamic_shared() { return runner->shared(); }

uint32_t shared_offset(const void* p) { return runner->shared_offset(p); }

void wgmma_fence() { runner->warpgroup_collective(GroupOp::Fence, 0, nullptr, 0, 0); }

void wgmma_commit() { runner->warpgroup_collective(GroupOp::Commit, 0, nullptr, 0, 0); }

void wgmma_wait(int newest_pending) { runner->warpgroup_collective(GroupOp::Wait, newest_pending, nullptr, 0, 0); }

void wgmma_m64nNk16(float* d, int n, bool f16, uint64_t desc_a, uint64_t desc_b, int trans_a, int trans_b) {
    if (n != 64 && n != 128 && n != 256) runner->fail("wgmma m64nNk16 is modelled for N = 64, 128 and 256");
    const int arg = trans_a | (trans_b << 1) | (int(f16) << 2) | (n << 3);
    runner->warpgroup_collective(GroupOp::Mma, arg, d, desc_a, desc_b);
}

void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool f16) {
    LaneIn in{};
    for (int i = 0; i < 4; ++i) in.a[i] = a[i];
    in.b[0] = b0;
    in.b[1] = b1;
    for (int i = 0; i < 4; ++i) in.d[i] = d[i];
    const LaneOut out = runner->collective(f16 ? Op::MmaF16 : Op::MmaBf16, in);
    for (int i = 0; i < 4; ++i) d[i] = out.d[i];
}

}  // namespace bone_host

namespace {
int report(char* error, size_t capacity, const std::string& message) {
    if (capacity > 0) std::snprintf(error, capacity, "%s", message.c_str());
    return 1;
}
}  // namespace

// Runs `name` over grid x block, with `shared_bytes` of dynamic shared memory per block and
// the kernel arguments `args` (each a pointer to the argument's bytes, `arg_sizes` long),
// blocks spread over the cores; no vector access may touch the `forbidden_count` ranges
// [forbidden[2i], forbidden[2i + 1]) (sorted, disjoint). Returns 0, with the shared-memory
// bank traffic in `traffic`, or 1 with the reason in `error`.
extern "C" int bone_host_launch(const char* name, const uint32_t* grid, const uint32_t* block, size_t shared_bytes,
                                void* const* args, const size_t* arg_sizes, size_t arg_count, int late_copies,
                                int order, uint64_t seed, const uint64_t* forbidden, size_t forbidden_count,
                                bone_host::SharedTraffic* traffic, char* error, size_t error_capacity) {
    using namespace bone_host;
    const KernelEntry* kernel = bone_host_find_kernel(name);
    if (kernel == nullptr) return report(error, error_capacity, std::string("no kernel named ") + name);
    if (arg_count != kernel->arg_count) {
        return report(error, error_capacity,
                      std::string(name) + " takes " + std::to_string(kernel->arg_count) + " argument(s), given " +
                          std::to_string(arg_count));
    }
    for (size_t i = 0; i < arg_count; ++i) {
        if (arg_sizes[i] != kernel->arg_sizes[i]) {
            return report(error, error_capacity,
                          std::string(name) + ": argument " + std::to_string(i) + " is " +
                              std::to_string(kernel->arg_sizes[i]) + " bytes, given " + std::to_string(arg_sizes[i]));
        }
    }
    const Launch launch{kernel,       args, {grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]},
                        shared_bytes, late_copies != 0, order, seed, forbidden, forbidden_count};
    const unsigned blocks = grid[0] * grid[1] * grid[2];
    if (blocks == 0 || block[0] * block[1] * block[2] == 0) return report(error, error_capacity, "empty launch");
    std::atomic<unsigned> next{0};
    std::mutex results_lock;
    std::string failure;
    SharedTraffic total;
    auto work = [&] {
        BlockRunner runner_for_thread(launch);
        for (unsigned index; (index = next.fetch_add(1)) < blocks;) {
            std::string e = runner_for_thread.run(index);
            if (!e.empty()) {
                const std::lock_guard<std::mutex> lock(results_lock);
                if (failure.empty()) failure = std::string(name) + ": " + e;
                next.store(blocks);
            }
        }
        const std::lock_guard<std::mutex> lock(results_lock);
        total.add(runner_for_thread.traffic());
    };
    const unsigned workers = std::max(1u, std::min(blocks, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < workers; ++i) threads.emplace_back(work);
    work();
    for (std::thread& t : threads) t.join();
    if (!failure.empty()) return report(error, error_capacity, failure);
    *traffic = total;
    return 0;
}
