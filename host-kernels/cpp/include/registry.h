// The table of kernels a host build holds, so that a launch can find one by name and
// check its arguments' count and sizes against the kernel's signature.
#pragma once
#include <cstddef>
#include <cstring>
#include <utility>

namespace bone_host {

struct KernelEntry {
    const char* name;
    void (*invoke)(void (*kernel)(), void* const* args);
    void (*kernel)();
    size_t arg_count;
    const size_t* arg_sizes;
};

template <typename T>
T load_arg(const void* p) {
    T value;
    std::memcpy(&value, p, sizeof(T));
    return value;
}

template <typename... A, size_t... I>
void invoke_kernel(void (*kernel)(A...), void* const* args, std::index_sequence<I...>) {
    kernel(load_arg<A>(args[I])...);
}

template <typename... A>
void invoke_erased(void (*kernel)(), void* const* args) {
    invoke_kernel(reinterpret_cast<void (*)(A...)>(kernel), args, std::index_sequence_for<A...>{});
}

template <typename... A>
constexpr size_t arg_sizes_of[] = {sizeof(A)..., 0};

template <typename... A>
KernelEntry entry(const char* name, void (*kernel)(A...)) {
    return {name, &invoke_erased<A...>, reinterpret_cast<void (*)()>(kernel), sizeof...(A), arg_sizes_of<A...>};
}

}  // namespace bone_host

// Defined in the generated translation unit that includes the kernels (build.rs).
extern "C" const bone_host::KernelEntry* bone_host_find_kernel(const char* name);
