//! Compiles `kernels/*.cu` into one fatbin (SASS for sm_80, sm_89, sm_90a plus
//! compute_80 PTX) embedded in the crate. Without nvcc the build still succeeds:
//! the crate is then built without kernels and its GPU entry points return
//! `BoneError::KernelsNotBuilt`. With nvcc, a kernel that fails to compile fails
//! the build, and so does a register spill or a serialized wgmma pipeline when
//! `BONE_KERNELS_DENY_SPILLS=1` (CI).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [&str; 4] = [
    "arch=compute_80,code=sm_80",
    "arch=compute_89,code=sm_89",
    "arch=compute_90a,code=sm_90a",
    "arch=compute_80,code=compute_80",
];

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    let settings = ["BONE_KERNELS_DENY_SPILLS", "BONE_KERNELS_VERBOSE", "BONE_KERNELS_NO_COMPRESS"];
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"].into_iter().chain(settings) {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(bone_kernels_built)");

    let Some(nvcc) = find_nvcc() else {
        println!(
            "cargo::warning=nvcc not found ($NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH): building without CUDA kernels; \
             GPU entry points will return BoneError::KernelsNotBuilt (see README, 'GPU kernels')"
        );
        return;
    };
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernel_dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("kernels");
    let sources = kernel_sources(&kernel_dir);

    // One translation unit including every kernel file: one fatbin, one module load,
    // and a name clash between files is a compile error rather than a surprise.
    let unity = out_dir.join("bone_kernels_all.cu");
    let includes: String = sources.iter().map(|s| format!("#include \"{}\"\n", s.display())).collect();
    fs::write(&unity, includes).expect("write the unity source");

    let fatbin = out_dir.join("bone_kernels.fatbin");
    let mut cmd = Command::new(&nvcc);
    cmd.args(["-fatbin", "-O3", "-std=c++17", "-Xptxas", "-v", "-lineinfo"]).arg("-I").arg(&kernel_dir);
    // Compressed (the driver inflates it at load): every test and bench binary embeds the
    // image. BONE_KERNELS_NO_COMPRESS=1 embeds it as nvcc wrote it.
    if env::var("BONE_KERNELS_NO_COMPRESS").is_err() {
        cmd.arg("-Xfatbin=-compress-all");
    }
    for target in TARGETS {
        cmd.arg("-gencode").arg(target);
    }
    cmd.arg("-o").arg(&fatbin).arg(&unity);
    let output = cmd.output().unwrap_or_else(|e| panic!("failed to run {}: {e}", nvcc.display()));
    let report = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("nvcc failed to compile the kernels:\n{report}\n{}", String::from_utf8_lossy(&output.stdout));
    }
    check_ptxas_report(&report);

    let version = nvcc_version(&nvcc);
    println!("cargo::rustc-cfg=bone_kernels_built");
    println!("cargo::rustc-env=BONE_NVCC_VERSION={version}");
    if verbose() {
        println!("cargo::warning=compiled {} kernel file(s) with {version}", sources.len());
    }
}

fn verbose() -> bool {
    env::var("BONE_KERNELS_VERBOSE").is_ok_and(|v| v == "1")
}

/// `$NVCC`, then `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`, then `nvcc` on PATH.
fn find_nvcc() -> Option<PathBuf> {
    if let Ok(path) = env::var("NVCC") {
        return Some(PathBuf::from(path));
    }
    let homes = ["CUDA_HOME", "CUDA_PATH"].into_iter().filter_map(|var| env::var(var).ok());
    let candidates = homes.map(|home| Path::new(&home).join("bin").join("nvcc"));
    let on_path = env::var_os("PATH").into_iter().flat_map(|p| env::split_paths(&p).collect::<Vec<_>>());
    candidates.chain(on_path.map(|dir| dir.join("nvcc"))).find(|p| p.is_file())
}

fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut sources: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "cu")).collect();
    sources.sort();
    sources
}

fn nvcc_version(nvcc: &Path) -> String {
    let output = Command::new(nvcc).arg("--version").output().expect("nvcc --version");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find(|l| l.contains("release")).unwrap_or("nvcc (unknown version)").trim().to_string()
}

/// Reads ptxas's `-v` report: one line per (kernel, architecture); spills, and ptxas's
/// "Potential Performance Loss" notes (C7514, C7515, C7518: it serialized a kernel's wgmma pipeline),
/// are warnings, or errors with `BONE_KERNELS_DENY_SPILLS=1`.
fn check_ptxas_report(report: &str) {
    let deny = env::var("BONE_KERNELS_DENY_SPILLS").is_ok_and(|v| v == "1");
    let mut current = String::new();
    let mut spills = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.replacen("' for '", " ", 1).trim_end_matches('\'').to_string();
        } else if line.contains("bytes spill stores") {
            let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            if numbers.get(1).copied().unwrap_or(0) > 0 || numbers.get(2).copied().unwrap_or(0) > 0 {
                spills.push(format!("{current}: {}", line.trim()));
            }
        } else if line.contains("Potential Performance Loss") {
            spills.push(line.trim_start_matches("ptxas info    : ").trim().to_string());
        } else if line.contains("Used") && line.contains("registers") && verbose() {
            println!("cargo::warning=ptxas {current}: {}", line.trim_start_matches("ptxas info    : ").trim());
        }
    }
    for spill in &spills {
        println!("cargo::warning=register spill or serialized wgmma in {spill}");
    }
    if deny && !spills.is_empty() {
        panic!(
            "{} kernel(s) spill registers or serialize wgmma (BONE_KERNELS_DENY_SPILLS=1):\n{}",
            spills.len(),
            spills.join("\n")
        );
    }
}
