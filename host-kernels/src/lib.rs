//! bone-kernels' CUDA sources, compiled for and run on the CPU, so that the crate's tests
//! execute the real kernels (not a re-implementation of them) without a GPU.
//!
//! Each CUDA thread is a fiber; a block's fibers run on one OS thread and switch at
//! `__syncthreads` and at the warp collectives (`ldmatrix`, `mma.sync`), which see all 32
//! lanes' registers at once, with the PTX ISA's fragment layouts, and the warpgroup
//! collectives of `wgmma` (its product is computed when `wgmma.wait_group` retires it;
//! its shared-memory operands, read at issue and at retirement, must not have changed). `cp.async` copies land as soon as they are
//! issued or as late as `cp.async.wait_group` allows ([`Landing`]), and a block's threads
//! run lowest- or highest-numbered first, or in a seeded random order ([`Schedule`]);
//! copies handed to an
//! mbarrier (`cp.async.mbarrier.arrive`) land, late, when its phase completes, and a
//! thread waiting on an mbarrier sleeps until the phase it asked for has completed.
//! A barrier some thread never reaches (`__syncthreads` or an mbarrier phase), lanes of a
//! warp at different collectives, misaligned `ldmatrix`/`cp.async` addresses, an mbarrier
//! used uninitialised or overwritten by a copy, a warp-uniform value that is not, and a
//! 16-byte access (or a `cp.async` source) touching the launch's forbidden ranges are
//! errors. probes/ holds kernels that show each of these (the crate's
//! `emulator_probes_tests`).
//!
//! Each launch also reports its shared-memory bank traffic ([`SharedTraffic`]): the
//! wavefronts each warp-wide `ldmatrix`, `cp.async` and 4-, 8- or 16-byte access of shared
//! memory took against the fewest it could, so a layout whose accesses conflict in the
//! banks shows without a GPU.
//!
//! What it does not model: scalar accesses are not checked against the forbidden ranges
//! (a stray scalar write shows only in the caller's guard bytes, a stray scalar read only
//! where its value reaches an output), timing, and instructions the kernels do not use.

#[cfg(bone_host_kernels_built)]
use std::ffi::{CString, c_char, c_void};
use std::ops::Range;

/// When `cp.async` copies reach shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// At issue: a stage refilled while another warp still reads it shows.
    Early,
    /// At the `cp.async.wait_group` that must complete them, or when the mbarrier phase
    /// they were handed to completes: a stage read before its wait shows.
    Late,
}

/// Which runnable thread of a block runs next, at every switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The lowest-numbered: a missing barrier shows where a thread reads what a higher one
    /// writes.
    LowestFirst,
    /// The highest-numbered: a missing barrier shows where a thread reads what a lower one
    /// writes (and warp-specialised kernels' computing warps run before their loaders).
    HighestFirst,
    /// One drawn at random from this seed (and the block's index): the interleavings in
    /// between, different for every seed and the same for one.
    Random(u64),
}

impl Schedule {
    /// The runtime's (order, seed).
    #[cfg(bone_host_kernels_built)]
    fn encoded(self) -> (i32, u64) {
        match self {
            Schedule::LowestFirst => (0, 0),
            Schedule::HighestFirst => (1, 0),
            Schedule::Random(seed) => (2, seed),
        }
    }
}

/// Warp-wide shared-memory accesses of one kind over a launch: how many, the wavefronts
/// (passes through the 32 banks) they took, and the fewest they could have taken (one per
/// phase of 128 bytes' worth of lanes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Wavefronts {
    pub instructions: u64,
    pub wavefronts: u64,
    pub ideal: u64,
}

impl Wavefronts {
    /// The wavefronts bank conflicts added.
    pub fn conflicts(&self) -> u64 {
        self.wavefronts - self.ideal
    }
}

impl std::ops::AddAssign for Wavefronts {
    fn add_assign(&mut self, other: Self) {
        self.instructions += other.instructions;
        self.wavefronts += other.wavefronts;
        self.ideal += other.ideal;
    }
}

/// A launch's shared-memory bank traffic, as far as the runtime sees it: `ldmatrix` rows,
/// `cp.async` destinations, and the vector accesses (`load8`, `store8`, paired stores) that
/// land in shared memory; plain scalar accesses are not seen. The lanes' per-thread
/// accesses are matched into warp-wide ones by order (a lane's n-th with every other
/// lane's n-th); `unmatched` counts the lanes' accesses where that failed (their kinds or
/// sizes differed: code diverging around shared memory), which are in no other count.
///
/// The runtime writes it whole: its layout is the C++ `bone_host::SharedTraffic`'s
/// (cpp/shared_banks.h, ten u64 in this order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SharedTraffic {
    pub ldmatrix: Wavefronts,
    pub copies: Wavefronts,
    pub vectors: Wavefronts,
    pub unmatched: u64,
}

impl SharedTraffic {
    /// The wavefronts bank conflicts added, over every kind.
    pub fn conflicts(&self) -> u64 {
        self.ldmatrix.conflicts() + self.copies.conflicts() + self.vectors.conflicts()
    }
}
const _: () = assert!(size_of::<SharedTraffic>() == 10 * size_of::<u64>(), "the C++ layout it mirrors");

impl std::ops::AddAssign for SharedTraffic {
    fn add_assign(&mut self, other: Self) {
        self.ldmatrix += other.ldmatrix;
        self.copies += other.copies;
        self.vectors += other.vectors;
        self.unmatched += other.unmatched;
    }
}

/// One kernel argument: its bytes, as the kernel's parameter holds them.
pub struct KernelArg<'a>(pub &'a [u8]);

impl<'a, T: Copy> From<&'a T> for KernelArg<'a> {
    fn from(value: &'a T) -> Self {
        // SAFETY: any initialised `Copy` value's bytes may be read; the slice borrows `value`.
        KernelArg(unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) })
    }
}

#[cfg(bone_host_kernels_built)]
unsafe extern "C" {
    fn bone_host_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: usize,
        args: *const *const c_void,
        arg_sizes: *const usize,
        arg_count: usize,
        late_copies: i32,
        order: i32,
        seed: u64,
        forbidden: *const u64,
        forbidden_count: usize,
        traffic: *mut SharedTraffic,
        error: *mut c_char,
        error_capacity: usize,
    ) -> i32;
}

/// Whether the kernels were compiled for the host (a C++17 compiler and POSIX ucontext
/// were found).
pub fn available() -> bool {
    cfg!(bone_host_kernels_built)
}

/// Runs kernel `name` over `grid` x `block` threads, with `shared_bytes` of dynamic shared
/// memory per block (starting as NaN), to completion. No 16-byte access, pair store or
/// `cp.async` source may touch the address ranges in `forbidden` (a caller's guard bytes).
/// Returns the launch's shared-memory bank traffic.
///
/// Returns an error for an unknown kernel, arguments whose count or sizes differ from the
/// kernel's parameters, overlapping forbidden ranges, a deadlock, a misaligned collective,
/// an access to a forbidden range, or when the host kernels were not built.
///
/// # Safety
/// As for a CUDA launch: every address among `args` must cover what the kernel reads and
/// writes at this grid and these arguments (here, in host memory), and nothing else may
/// touch that memory while it runs.
#[cfg(bone_host_kernels_built)]
pub unsafe fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: usize,
    args: &[KernelArg],
    (landing, schedule): (Landing, Schedule),
    forbidden: &[Range<u64>],
) -> Result<SharedTraffic, String> {
    let mut ranges = forbidden.to_vec();
    ranges.sort_by_key(|r| r.start);
    if let Some(pair) = ranges.windows(2).find(|pair| pair[0].end > pair[1].start) {
        return Err(format!("forbidden ranges {:?} and {:?} overlap", pair[0], pair[1]));
    }
    let bounds: Vec<u64> = ranges.iter().flat_map(|r| [r.start, r.end]).collect();
    let c_name = CString::new(name).map_err(|_| format!("kernel name {name:?} holds a NUL"))?;
    let pointers: Vec<*const c_void> = args.iter().map(|a| a.0.as_ptr().cast()).collect();
    let sizes: Vec<usize> = args.iter().map(|a| a.0.len()).collect();
    let mut error = vec![0u8; 1024];
    let mut traffic = SharedTraffic::default();
    let (order, seed) = schedule.encoded();
    // SAFETY: the pointer arrays hold `args.len()` entries each, `bounds` two per range,
    // every argument's bytes outlive the call, `traffic` has the layout the runtime writes,
    // `error` its stated capacity, and the caller vouches for the addresses
    // inside the arguments.
    let status = unsafe {
        bone_host_launch(
            c_name.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            shared_bytes,
            pointers.as_ptr(),
            sizes.as_ptr(),
            args.len(),
            i32::from(landing == Landing::Late),
            order,
            seed,
            bounds.as_ptr(),
            ranges.len(),
            &mut traffic,
            error.as_mut_ptr().cast(),
            error.len(),
        )
    };
    if status == 0 {
        return Ok(traffic);
    }
    let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
    Err(String::from_utf8_lossy(&error[..end]).into_owned())
}

/// Without a C++17 compiler there are no host kernels: every launch says so.
///
/// # Safety
/// Nothing runs; the signature matches the built version.
#[cfg(not(bone_host_kernels_built))]
pub unsafe fn launch(
    name: &str,
    _: [u32; 3],
    _: [u32; 3],
    _: usize,
    _: &[KernelArg],
    _: (Landing, Schedule),
    _: &[Range<u64>],
) -> Result<SharedTraffic, String> {
    Err(format!(
        "cannot run {name}: the host kernels were not built (no C++17 compiler was found; install g++ or clang++)"
    ))
}
