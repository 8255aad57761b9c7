//! Compiles ../kernels/*.cu as C++ for the host (cpp/include stands in for CUDA's headers)
//! with the fiber runtime, and probes/*.cu (kernels that test the runtime itself), plus a
//! table of every `__global__` kernel found in them. The
//! kernel names are read from the preprocessed sources, so macro-made kernels count too.
//! Without a C++17 compiler (or POSIX ucontext) the crate builds empty and `launch` says why.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("../kernels").canonicalize().expect("the kernels directory beside host-kernels");
    let probes = manifest.join("probes");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed={}", kernels.display());
    println!("cargo::rerun-if-changed=cpp");
    println!("cargo::rerun-if-changed=probes");
    println!("cargo::rustc-check-cfg=cfg(bone_host_kernels_built)");

    let cuda_sources = |dir: &PathBuf| -> Vec<PathBuf> {
        let mut sources: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .collect();
        sources.sort();
        sources
    };
    let sources = [cuda_sources(&kernels), cuda_sources(&probes)].concat();
    // The marker separates the runtime's headers from the kernels in the preprocessed text.
    let mut unity = String::from("#include \"bone_host.h\"\nnamespace bone_host_kernel_sources_begin {}\n");
    for source in &sources {
        unity += &format!("#include \"{}\"\n", source.display());
    }
    let unity_path = out.join("kernel_sources.cpp");
    fs::write(&unity_path, &unity).expect("write the kernel sources file");

    let build = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(2)
            .include(manifest.join("cpp/include"))
            .include(&kernels)
            .define("BONE_KERNELS_ON_HOST", None)
            .flag_if_supported("-Wno-unknown-pragmas")
            .warnings(false);
        b
    };
    let expanded = match build().file(&unity_path).try_expand() {
        Ok(text) => String::from_utf8_lossy(&text).into_owned(),
        Err(e) => {
            println!(
                "cargo::warning=the C++ compiler could not preprocess the host kernels ({e}); their tests will say so"
            );
            return;
        }
    };
    let names = kernel_names(&expanded);
    assert!(!names.is_empty(), "no __global__ kernels found in {}", kernels.display());
    let entries: String = names.iter().map(|n| format!("    bone_host::entry(\"{n}\", &{n}),\n")).collect();
    let table = format!(
        "#include \"{}\"\n#include \"registry.h\"\n\
         static const bone_host::KernelEntry kernel_table[] = {{\n{entries}}};\n\
         extern \"C\" const bone_host::KernelEntry* bone_host_find_kernel(const char* name) {{\n\
         \x20   for (const auto& k : kernel_table) if (std::strcmp(k.name, name) == 0) return &k;\n\
         \x20   return nullptr;\n}}\n",
        unity_path.display()
    );
    let table_path = out.join("kernels_on_host.cpp");
    fs::write(&table_path, table).expect("write the kernel table");
    // The runtime needs its x86-64 context switch or POSIX ucontext; elsewhere the tests
    // say they skip.
    let compiled = build()
        .file(&table_path)
        .file(manifest.join("cpp/runtime.cpp"))
        .file(manifest.join("cpp/ptx_semantics.cpp"))
        .file(manifest.join("cpp/shared_banks.cpp"))
        .file(manifest.join("cpp/context.cpp"))
        .try_compile("bone_host_kernels");
    match compiled {
        Ok(()) => println!("cargo::rustc-cfg=bone_host_kernels_built"),
        Err(e) => println!("cargo::warning=the host kernels did not compile ({e}); their tests will say so"),
    }
}

/// The names of `extern "C" __global__` functions (`__global__` expands to
/// `__attribute__((used))`, bone_host.h) in the preprocessed kernels.
fn kernel_names(expanded: &str) -> Vec<String> {
    let kernels = expanded.split("bone_host_kernel_sources_begin").nth(1).unwrap_or("");
    let mut names = Vec::new();
    for piece in kernels.split("__attribute__((used))").skip(1) {
        let head = piece.split('(').next().unwrap_or("");
        if let Some(name) = head.split_whitespace().last() {
            names.push(name.to_string());
        }
    }
    names
}
