// Switching between fibers. On x86-64 (System V) a hand-written switch saves only what
// the ABI makes callee-saved: rbx, rbp, r12-r15 and the SSE and x87 control words.
// glibc's swapcontext also saves the signal mask with a system call, about 30 times
// slower, and the host runtime switches on every lane of every warp collective.
// Elsewhere: POSIX ucontext.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(_WIN32)

extern "C" void bone_host_switch_context(void** save_sp, void* load_sp);

namespace bone_host {

struct Context {
    void* sp = nullptr;
};

// Prepares `context` to start `entry` (which must never return) on `stack`.
inline void start_context(Context& context, char* stack, size_t bytes, void (*entry)()) {
    // Top of the stack, 16-byte aligned; below it the frame bone_host_switch_context
    // restores: (low to high) control words, r15, r14, r13, r12, rbx, rbp, the return
    // address (entry) and padding, so that entry starts as if called (rsp + 8 aligned).
    auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15));
    uint64_t* sp = top;
    *--sp = 0;
    *--sp = reinterpret_cast<uint64_t>(entry);
    for (int i = 0; i < 6; ++i) *--sp = 0;
    *--sp = 0x1F80ull | (0x037Full << 32);  // MXCSR and the x87 control word at their defaults
    context.sp = sp;
}

inline void switch_context(Context& from, Context& to) { bone_host_switch_context(&from.sp, to.sp); }

}  // namespace bone_host

#else

#include <ucontext.h>

namespace bone_host {

struct Context {
    ucontext_t uc;
};

inline void start_context(Context& context, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&context.uc);
    context.uc.uc_stack.ss_sp = stack;
    context.uc.uc_stack.ss_size = bytes;
    context.uc.uc_link = nullptr;
    makecontext(&context.uc, entry, 0);
}

inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

}  // namespace bone_host

#endif
