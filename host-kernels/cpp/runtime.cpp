// Runs a kernel launch on the CPU: every block on one OS thread (blocks spread over the
// cores), every CUDA thread of a block as a fiber switched cooperatively. A fiber runs
// until it reaches __syncthreads or a warp collective (ldmatrix, mma); the collectives
// see the registers of all 32 lanes at once, as the hardware does. The lowest-numbered
// runnable thread always runs next, so warp 0 gets as far ahead of the rest as the
// barriers let it: a missing barrier shows as a read of data not yet written (or already
// overwritten) by the warps behind.
//
// Strictness, to fail where a GPU would misbehave silently:
//   - __syncthreads that some thread of the block never reaches (it exited, or waits at
//     a warp collective) is reported as a deadlock;
//   - the lanes of a warp must meet at the same collective, all 32 of them;
//   - ldmatrix row addresses must be 16-byte aligned;
//   - cp.async copies land either as soon as they are issued or as late as
//     cp.async.wait_group allows (the launch chooses), so a stage read before its copy
//     was waited for, or refilled while still being read, gives wrong numbers;
//   - wgmma.mma_async is computed only when wgmma.wait_group retires it, reading shared
//     memory then and writing the accumulators then, so accumulators read before the
//     wait, or a stage refilled before it, give wrong numbers; an mma_async needs a
//     wgmma.fence since the last wait, and the warpgroup's 128 threads must agree on it.
#include <ucontext.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bone_host.h"
#include "registry.h"

namespace bone_host {

thread_local const Coordinates* current = nullptr;

namespace {

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr int WARP = 32;
constexpr int WARPGROUP = 128;
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

enum class State { Runnable, AtBarrier, AtCollective, Done };
enum class Op { Ldmatrix, LdmatrixTrans, Mma };

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    Coordinates coordinates;
    State state;
    std::vector<Copy> open;                  // issued, not yet committed
    std::deque<std::vector<Copy>> committed;  // oldest first
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

// One recorded wgmma.mma_async m64nNk16: its width, descriptors and each thread's accumulators.
struct PendingMma {
    uint64_t desc_a, desc_b;
    int n, trans_a, trans_b;
    float* d[WARPGROUP];
};

enum class GroupOp { Fence, Mma, Commit, Wait };

struct Warpgroup {
    GroupOp op;
    int arrived;
    int arg;  // wait_group's count, or the mma's transpose flags and width (trans_a | trans_b << 1 | n << 2)
    bool fenced;
    uint64_t desc_a[WARPGROUP], desc_b[WARPGROUP];
    float* d[WARPGROUP];
    std::vector<PendingMma> open;
    std::deque<std::vector<PendingMma>> committed;
};

struct Launch {
    const KernelEntry* kernel;
    void* const* args;
    dim3 grid, block;
    size_t shared_bytes;
    bool late_copies;
};

uint16_t element(const void* row, int index) {
    uint16_t v;
    std::memcpy(&v, static_cast<const char*>(row) + 2 * index, 2);
    return v;
}

float bf16_bits_to_float(uint32_t bits) {
    const uint32_t u = (bits & 0xffffu) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8i..8i+7 give the rows of matrix
// i; lane l receives, in register i, row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i
// (of its transpose with .trans), the lower column in the low half.
void ldmatrix(Warp& w, bool trans) {
    for (int i = 0; i < 4; ++i) {
        for (int l = 0; l < WARP; ++l) {
            const int row = l / 4, col = 2 * (l % 4);
            uint32_t lo, hi;
            if (!trans) {
                lo = element(w.in[8 * i + row].address, col);
                hi = element(w.in[8 * i + row].address, col + 1);
            } else {
                lo = element(w.in[8 * i + col].address, row);
                hi = element(w.in[8 * i + col + 1].address, row);
            }
            w.out[l].r[i] = lo | (hi << 16);
        }
    }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, D = A B + C with the PTX ISA's
// fragment layouts (g = lane / 4, q = lane % 4):
//   A (16 x 16): a[0] = A[g][2q..], a[1] = A[g+8][2q..], a[2] = A[g][2q+8..], a[3] = A[g+8][2q+8..]
//   B (16 x 8, k x n): b0 = B[2q..2q+1][g], b1 = B[2q+8..2q+9][g]
//   C, D (16 x 8): d[0..1] = C[g][2q..2q+1], d[2..3] = C[g+8][2q..2q+1]
// The products of bf16 values are exact in double; the sum is rounded once to f32.
void mma(Warp& w) {
    double a[16][16], b[16][8], c[16][8];
    for (int l = 0; l < WARP; ++l) {
        const int g = l / 4, q = l % 4;
        const int a_rows[4] = {g, g + 8, g, g + 8}, a_cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
        for (int reg = 0; reg < 4; ++reg) {
            a[a_rows[reg]][a_cols[reg]] = bf16_bits_to_float(w.in[l].a[reg]);
            a[a_rows[reg]][a_cols[reg] + 1] = bf16_bits_to_float(w.in[l].a[reg] >> 16);
        }
        for (int reg = 0; reg < 2; ++reg) {
            b[2 * q + 8 * reg][g] = bf16_bits_to_float(w.in[l].b[reg]);
            b[2 * q + 8 * reg + 1][g] = bf16_bits_to_float(w.in[l].b[reg] >> 16);
        }
        for (int e = 0; e < 4; ++e) c[g + 8 * (e / 2)][2 * q + e % 2] = w.in[l].d[e];
    }
    for (int l = 0; l < WARP; ++l) {
        const int g = l / 4, q = l % 4;
        for (int e = 0; e < 4; ++e) {
            const int i = g + 8 * (e / 2), j = 2 * q + e % 2;
            double sum = c[i][j];
            for (int k = 0; k < 16; ++k) sum += a[i][k] * b[k][j];
            w.out[l].d[e] = float(sum);
        }
    }
}

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
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack.data();
            f.context.uc_stack.ss_size = f.stack.size();
            f.context.uc_link = nullptr;
            makecontext(&f.context, &BlockRunner::fiber_main, 0);
        }
        // Always the lowest-numbered runnable thread: warp 0 runs as far ahead of the
        // others as the barriers allow, the order that exposes a missing barrier.
        for (;;) {
            size_t next = 0;
            while (next < fibers_.size() && fibers_[next].state != State::Runnable) ++next;
            if (next == fibers_.size()) {
                for (const Fiber& f : fibers_) {
                    if (f.state != State::Done) return deadlock();
                }
                return "";
            }
            running_ = next;
            current = &fibers_[next].coordinates;
            swapcontext(&scheduler_, &fibers_[next].context);
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

    uint32_t shared_offset(const void* p) {
        const auto* byte = static_cast<const unsigned char*>(p);
        if (byte < shared_ || byte > shared_ + launch_.shared_bytes) fail("a shared address outside dynamic shared memory");
        return uint32_t(byte - shared_);
    }

    void async_copy(const Copy& copy) {
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

    [[noreturn]] void fail(const std::string& message) {
        Fiber& f = self();
        const Coordinates& c = f.coordinates;
        error_ = "block (" + std::to_string(c.block_idx.x) + ", " + std::to_string(c.block_idx.y) + ", " +
                 std::to_string(c.block_idx.z) + ") thread " + std::to_string(running_) + ": " + message;
        f.state = State::Done;
        swapcontext(&f.context, &scheduler_);
        __builtin_unreachable();  // the scheduler never resumes a failed fiber
    }

   private:
    Fiber& self() { return fibers_[running_]; }

    void yield(Fiber& f) { swapcontext(&f.context, &scheduler_); }

    static void fiber_main() {
        BlockRunner& r = *runner;
        r.launch_.kernel->invoke(r.launch_.kernel->kernel, r.launch_.args);
        Fiber& f = r.self();
        f.state = State::Done;
        swapcontext(&f.context, &r.scheduler_);
    }

    void compute(Warp& w) {
        for (const LaneIn& in : w.in) {
            if (w.op != Op::Mma && reinterpret_cast<uintptr_t>(in.address) % 16 != 0) {
                fail("ldmatrix row address not 16-byte aligned");
            }
        }
        if (w.op == Op::Mma) {
            mma(w);
        } else {
            ldmatrix(w, w.op == Op::LdmatrixTrans);
        }
    }

    void act(Warpgroup& g) {
        switch (g.op) {
            case GroupOp::Fence:
                g.fenced = true;
                break;
            case GroupOp::Mma: {
                if (!g.fenced) fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
                PendingMma m{g.desc_a[0], g.desc_b[0], g.arg >> 2, g.arg & 1, (g.arg >> 1) & 1, {}};
                for (int l = 0; l < WARPGROUP; ++l) {
                    if (g.desc_a[l] != m.desc_a || g.desc_b[l] != m.desc_b) {
                        fail("the threads of a warpgroup give wgmma different descriptors");
                    }
                    m.d[l] = g.d[l];
                }
                g.open.push_back(m);
                break;
            }
            case GroupOp::Commit:
                g.committed.push_back(std::move(g.open));
                g.open.clear();
                break;
            case GroupOp::Wait:
                while (g.committed.size() > size_t(g.arg)) {
                    for (const PendingMma& m : g.committed.front()) perform(m);
                    g.committed.pop_front();
                }
                g.fenced = false;
                break;
        }
    }

    // Element (mn, k) of an operand in the no-swizzle canonical layout: 8 x 8 core matrices
    // of 8 lines of 16 bytes, LBO bytes apart along K and SBO bytes apart along M or N; a
    // line holds 8 consecutive k (K-major) or, transposed, 8 consecutive mn.
    float operand(uint64_t desc, int trans, int mn, int k) {
        const uint64_t start = (desc & 0x3FFF) << 4, lbo = ((desc >> 16) & 0x3FFF) << 4,
                       sbo = ((desc >> 32) & 0x3FFF) << 4;
        if ((desc >> 62) != 0 || ((desc >> 49) & 7) != 0) {
            fail("only wgmma's no-swizzle layout with base offset 0 is modelled");
        }
        const uint64_t line = trans ? k % 8 : mn % 8, column = trans ? mn % 8 : k % 8;
        const uint64_t offset = start + (mn / 8) * sbo + (k / 8) * lbo + line * 16 + column * 2;
        if (offset + 2 > launch_.shared_bytes) fail("a wgmma operand reaches outside dynamic shared memory");
        uint16_t bits;
        std::memcpy(&bits, shared_ + offset, 2);
        return bf16_bits_to_float(bits);
    }

    // D[64 x n] += A[64 x 16] B[n x 16]^T. Thread l of the warpgroup holds, in d[4j + e],
    // row 16 (l / 32) + (l % 32) / 4 + 8 (e / 2), column 8 j + 2 (l % 4) + e % 2.
    void perform(const PendingMma& m) {
        static thread_local float a[64][16], b[256][16];
        for (int k = 0; k < 16; ++k) {
            for (int mn = 0; mn < 64; ++mn) a[mn][k] = operand(m.desc_a, m.trans_a, mn, k);
            for (int mn = 0; mn < m.n; ++mn) b[mn][k] = operand(m.desc_b, m.trans_b, mn, k);
        }
        for (int l = 0; l < WARPGROUP; ++l) {
            const int row0 = 16 * (l / 32) + (l % 32) / 4, col0 = 2 * (l % 4);
            for (int j = 0; j < m.n / 8; ++j) {
                for (int e = 0; e < 4; ++e) {
                    const int row = row0 + 8 * (e / 2), col = col0 + 8 * j + e % 2;
                    double sum = m.d[l][4 * j + e];
                    for (int k = 0; k < 16; ++k) sum += double(a[row][k]) * double(b[col][k]);
                    m.d[l][4 * j + e] = float(sum);
                }
            }
        }
    }

    std::string deadlock() const {
        size_t done = 0, barrier = 0, collective = 0;
        for (const Fiber& f : fibers_) {
            done += f.state == State::Done;
            barrier += f.state == State::AtBarrier;
            collective += f.state == State::AtCollective;
        }
        return "deadlock: " + std::to_string(barrier) + " thread(s) wait at __syncthreads, " +
               std::to_string(collective) + " at a warp collective, " + std::to_string(done) + " have exited";
    }

    const Launch& launch_;
    std::vector<Fiber> fibers_;
    std::vector<Warp> warps_;
    std::vector<Warpgroup> warpgroups_;
    std::vector<unsigned char> shared_storage_;
    unsigned char* shared_ = nullptr;  // 1 KiB aligned, within shared_storage_
    ucontext_t scheduler_;
    size_t running_ = 0;
    size_t at_barrier_ = 0;
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

void async_commit() { runner->async_commit(); }

void async_wait(int newest_pending) { runner->async_wait(newest_pending); }

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

void wgmma_m64nNk16(float* d, int n, uint64_t desc_a, uint64_t desc_b, int trans_a, int trans_b) {
    if (n != 128 && n != 256) runner->fail("wgmma m64nNk16 is modelled for N = 128 and 256");
    runner->warpgroup_collective(GroupOp::Mma, trans_a | (trans_b << 1) | (n << 2), d, desc_a, desc_b);
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    LaneIn in{};
    for (int i = 0; i < 4; ++i) in.a[i] = a[i];
    in.b[0] = b0;
    in.b[1] = b1;
    for (int i = 0; i < 4; ++i) in.d[i] = d[i];
    const LaneOut out = runner->collective(Op::Mma, in);
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
// blocks spread over the cores. Returns 0, or 1 with
// the reason in `error`.
extern "C" int bone_host_launch(const char* name, const uint32_t* grid, const uint32_t* block, size_t shared_bytes,
                                void* const* args, const size_t* arg_sizes, size_t arg_count, int late_copies,
                                char* error, size_t error_capacity) {
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
                        shared_bytes, late_copies != 0};
    const unsigned blocks = grid[0] * grid[1] * grid[2];
    if (blocks == 0 || block[0] * block[1] * block[2] == 0) return report(error, error_capacity, "empty launch");
    std::atomic<unsigned> next{0};
    std::mutex failure_lock;
    std::string failure;
    auto work = [&] {
        BlockRunner runner_for_thread(launch);
        for (unsigned index; (index = next.fetch_add(1)) < blocks;) {
            std::string e = runner_for_thread.run(index);
            if (!e.empty()) {
                const std::lock_guard<std::mutex> lock(failure_lock);
                if (failure.empty()) failure = std::string(name) + ": " + e;
                next.store(blocks);
            }
        }
    };
    const unsigned workers = std::max(1u, std::min(blocks, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < workers; ++i) threads.emplace_back(work);
    work();
    for (std::thread& t : threads) t.join();
    return failure.empty() ? 0 : report(error, error_capacity, failure);
}
