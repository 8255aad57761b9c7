// The x86-64 fiber switch declared in context.h: pushes the callee-saved registers and
// control words, stores rsp in *save_sp (rdi), loads load_sp (rsi) and pops the same
// frame of the context resumed.
#if defined(__x86_64__) && !defined(_WIN32)
asm(R"(
    .text
    .globl bone_host_switch_context
    .hidden bone_host_switch_context
    .type bone_host_switch_context, @function
bone_host_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size bone_host_switch_context, .-bone_host_switch_context
)");
#endif
