//! The crate's GPU launch sequences on the CPU, for its own tests: every kernel launch
//! runs the real kernel source (kernels/*.cu), compiled for the host by the
//! `bone-host-kernels` dev-dependency (one fiber per CUDA thread, warp collectives for
//! ldmatrix and mma.sync, warpgroup collectives for wgmma, mbarriers, cp.async landing
//! early or late), over host memory laid out as
//! the device's would be. Each allocation sits between guard bytes (NaN patterns of its
//! own, see `Allocation`) that are checked after every launch, and that no 16-byte access
//! or cp.async may touch, even to read; it starts as NaN (0xFF bytes), so an element
//! nothing wrote fails the oracle comparison. Each launch must also take no more
//! shared-memory bank passes than it has to, as far as the runtime sees its accesses
//! (`bone_host_kernels::SharedTraffic`). Library GEMMs (the
//! cuBLAS engine) are emulated by a direct product.

use std::cell::RefCell;
use std::collections::BTreeMap;

use bone_host_kernels::{KernelArg, Landing, Schedule, SharedTraffic};
use cudarc::driver::LaunchConfig;
use half::{bf16, f16};
use rand::RngExt;

use super::baseline::{Half, Operand, Output};
use super::launch::{Arg, GemmKernels, GemmKind, Launcher, elementwise_config, gemm_kind};
use super::params::BoneGemm;
use super::split::{Product, ProductRunner};
use crate::error::Result;

/// Guard bytes on each side of an allocation.
const GUARD: usize = 4096;
/// Allocations start on this boundary, like cudaMalloc's.
const ALIGN: usize = 256;
/// SMs of the emulated GPU: few, so that each block of the persistent GEMM computes
/// several tiles, its pipeline's phases running on from one tile to the next.
const EMULATED_SMS: u32 = 3;

/// One host allocation standing in for device memory: `GUARD` bytes, the data (0xFF
/// bytes: NaN in every type), `GUARD` bytes. Only raw pointers reach it (the kernels write
/// through them).
///
/// The guards are NaN in every type too, so a stray read poisons what it feeds, but a
/// signalling NaN with a payload of this allocation's own (`guard_byte`): a stray write
/// of a value computed from another allocation's guard, or through any arithmetic (which
/// quiets a NaN), changes them. Plain 0xFF guards missed such writes: NaN arithmetic keeps
/// the first operand's payload, so a value computed from 0xFF guards wrote 0xFF again.
struct Allocation {
    storage: *mut [u8],
    data: *mut u8,
    len: usize,
    payload: u8,
}

impl Allocation {
    /// Allocation number `id` of `len` bytes.
    fn new(len: usize, id: usize) -> Self {
        let storage = Box::into_raw(vec![0xFF_u8; len + 2 * GUARD + ALIGN].into_boxed_slice());
        let base = storage.cast::<u8>();
        let data = base.wrapping_add(GUARD + (ALIGN - (base as usize + GUARD) % ALIGN) % ALIGN);
        // 1 to 63: bit 6, the quiet bit of a bf16 (and of an f32's upper half), stays clear.
        let allocation = Allocation { storage, data, len, payload: (id % 63 + 1) as u8 };
        for (from, count) in allocation.guards() {
            for i in 0..count {
                let byte = from.wrapping_add(i);
                // SAFETY: the guards lie inside `storage`, which this allocation owns.
                unsafe { *byte = allocation.guard_byte(byte) };
            }
        }
        allocation
    }

    /// The guard byte at `address`: 16-bit elements 0xFF80 | payload (a signalling NaN in
    /// bf16, a NaN in f16), so 32-bit ones 0xFF8p_FF8p (a signalling NaN in f32).
    fn guard_byte(&self, address: *const u8) -> u8 {
        if (address as usize).is_multiple_of(2) { 0x80 | self.payload } else { 0xFF }
    }

    /// The two guards, as (first byte, length).
    fn guards(&self) -> [(*mut u8, usize); 2] {
        [(self.data.wrapping_sub(GUARD), GUARD), (self.data.wrapping_add(self.len), GUARD)]
    }

    /// The two guards as address ranges, which the kernels' 16-byte accesses and cp.async
    /// sources may not touch.
    fn guard_ranges(&self) -> [std::ops::Range<u64>; 2] {
        self.guards().map(|(from, count)| from as u64..from as u64 + count as u64)
    }

    /// Whether the guard bytes on both sides still hold their pattern.
    fn guards_intact(&self) -> bool {
        self.guards().into_iter().all(|(from, count)| {
            (0..count).all(|i| {
                let byte = from.wrapping_add(i);
                // SAFETY: the guards lie inside `storage`, which this allocation owns.
                unsafe { *byte == self.guard_byte(byte) }
            })
        })
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: `storage` came from Box::into_raw and is freed once, here.
        drop(unsafe { Box::from_raw(self.storage) });
    }
}

/// How many cases a randomised test draws, and from which seed: `defaults`, or what the
/// environment variable `var` says as `<cases>[:<seed>]`.
pub(crate) fn random_cases(var: &str, defaults: (usize, u64)) -> (usize, u64) {
    let Ok(value) = std::env::var(var) else { return defaults };
    let (cases, seed) = value.split_once(':').unwrap_or((&value, ""));
    let cases = cases.parse().unwrap_or_else(|_| panic!("{var}={value}: expected <cases>[:<seed>]"));
    (cases, seed.parse().unwrap_or(defaults.1))
}

/// Whether the kernels were compiled for the host. Without a C++17 compiler they are not,
/// and the tests that run them print a notice and return, unless
/// `BONE_REQUIRE_HOST_KERNELS=1` (CI), which makes that a failure.
pub(crate) fn host_kernels_or_skip(test: &str) -> bool {
    if bone_host_kernels::available() {
        return true;
    }
    let required = std::env::var("BONE_REQUIRE_HOST_KERNELS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "BONE_REQUIRE_HOST_KERNELS=1 but the kernels were not compiled for the host (no C++17 compiler)"
    );
    eprintln!("SKIPPED {test}: the kernels were not compiled for the host (no C++17 compiler found)");
    false
}

pub(crate) struct Emulator {
    /// Allocations by data address.
    memory: RefCell<BTreeMap<u64, Allocation>>,
    /// When the GEMM's cp.async copies land.
    landing: Landing,
    /// Which of a block's runnable threads runs next.
    schedule: Schedule,
    /// Which GEMM kernels `gemm` runs, and, if set, the tile width it forces on them
    /// (instead of `GemmKernels::select`'s choice), so that tests reach every width.
    gemm_kernels: GemmKernels,
    tile_n: Option<u32>,
    /// The shared-memory bank traffic of every launch so far, by kernel.
    traffic: RefCell<BTreeMap<String, SharedTraffic>>,
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator::new(Landing::Late, GemmKernels::MmaSync)
    }
}

/// Element types in emulated memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ty {
    Bf16,
    F16,
    F32,
}

impl From<Half> for Ty {
    fn from(half: Half) -> Self {
        match half {
            Half::Bf16 => Ty::Bf16,
            Half::F16 => Ty::F16,
        }
    }
}

impl Ty {
    /// The kernel-name suffix of this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Ty::Bf16 => "bf16",
            Ty::F16 => "f16",
            Ty::F32 => "f32",
        }
    }

    /// `value` as this type holds it.
    pub fn round(self, value: f64) -> f64 {
        self.decode(&self.encode(value))
    }

    fn size(self) -> u64 {
        match self {
            Ty::Bf16 | Ty::F16 => 2,
            Ty::F32 => 4,
        }
    }

    /// The value stored little-endian at the start of `bytes`.
    fn decode(self, bytes: &[u8]) -> f64 {
        match self {
            Ty::Bf16 => bf16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            Ty::F16 => f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            Ty::F32 => f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        }
    }

    /// `value` rounded to this type (through f32, as the kernels round), little-endian.
    fn encode(self, value: f64) -> Vec<u8> {
        match self {
            Ty::Bf16 => bf16::from_f32(value as f32).to_le_bytes().to_vec(),
            Ty::F16 => f16::from_f32(value as f32).to_le_bytes().to_vec(),
            Ty::F32 => (value as f32).to_le_bytes().to_vec(),
        }
    }
}

impl Emulator {
    pub fn new(landing: Landing, gemm_kernels: GemmKernels) -> Self {
        Emulator {
            memory: RefCell::default(),
            landing,
            schedule: Schedule::LowestFirst,
            gemm_kernels,
            tile_n: None,
            traffic: RefCell::default(),
        }
    }

    /// The same emulator running each block's threads in `schedule`'s order.
    pub fn scheduled(self, schedule: Schedule) -> Self {
        Emulator { schedule, ..self }
    }

    /// The same emulator in a thread order drawn from `rng` (a test's seeded generator):
    /// lowest-first, highest-first or random, a third of the time each.
    pub fn in_drawn_order(self, rng: &mut impl RngExt) -> Self {
        let schedule = match rng.random_range(0..3) {
            0 => Schedule::LowestFirst,
            1 => Schedule::HighestFirst,
            _ => Schedule::Random(rng.random()),
        };
        self.scheduled(schedule)
    }

    /// The order this emulator runs each block's threads in.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Every GEMM on `tile_n`-wide tiles of `gemm_kernels`.
    pub fn with_tile_n(landing: Landing, gemm_kernels: GemmKernels, tile_n: u32) -> Self {
        Emulator { tile_n: Some(tile_n), ..Emulator::new(landing, gemm_kernels) }
    }

    /// The shared-memory bank traffic of every launch so far, summed by kernel.
    pub fn shared_traffic(&self) -> BTreeMap<String, SharedTraffic> {
        self.traffic.borrow().clone()
    }

    /// `bytes` of memory filled with NaN bit patterns (0xFF), 256-byte aligned.
    pub fn alloc(&self, bytes: usize) -> u64 {
        let mut memory = self.memory.borrow_mut();
        let allocation = Allocation::new(bytes, memory.len());
        let address = allocation.data as u64;
        memory.insert(address, allocation);
        address
    }

    pub fn upload(&self, ty: Ty, values: &[f64]) -> u64 {
        let address = self.alloc(values.len() * ty.size() as usize);
        for (i, &v) in values.iter().enumerate() {
            self.write(ty, address, i as u64, v);
        }
        address
    }

    pub fn download(&self, ty: Ty, address: u64, len: usize) -> Vec<f64> {
        (0..len as u64).map(|i| self.read(ty, address, i)).collect()
    }

    /// The bytes from `address` to the end of the allocation holding it.
    fn bytes_from(&self, address: u64) -> usize {
        let memory = self.memory.borrow();
        let (&start, allocation) =
            memory.range(..=address).next_back().unwrap_or_else(|| panic!("address {address:#x} is not allocated"));
        assert!(
            address - start <= allocation.len as u64,
            "address {address:#x} is beyond the allocation at {start:#x}"
        );
        allocation.len - (address - start) as usize
    }

    /// Checks that `bytes` bytes at `address` lie inside one allocation.
    fn check_range(&self, address: u64, bytes: u64) {
        assert!(bytes <= self.bytes_from(address) as u64, "access at {address:#x} (+{bytes}) beyond its allocation");
    }

    fn read_bytes(&self, address: u64, count: usize) -> Vec<u8> {
        self.check_range(address, count as u64);
        // SAFETY: the range lies inside a live allocation (checked above).
        unsafe { std::slice::from_raw_parts(address as *const u8, count) }.to_vec()
    }

    fn write_bytes(&self, address: u64, bytes: &[u8]) {
        self.check_range(address, bytes.len() as u64);
        // SAFETY: the range lies inside a live allocation (checked above), reached only
        // through raw pointers.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
    }

    pub fn read(&self, ty: Ty, base: u64, index: u64) -> f64 {
        ty.decode(&self.read_bytes(base + index * ty.size(), ty.size() as usize))
    }

    pub fn write(&self, ty: Ty, base: u64, index: u64, value: f64) {
        self.write_bytes(base + index * ty.size(), &ty.encode(value));
    }

    /// Runs `kernel` on the host over `config`'s grid, then checks every guard, and that no
    /// shared-memory access the runtime sees took more bank passes than it had to.
    fn launch(&self, kernel: &str, config: LaunchConfig, args: &[KernelArg]) {
        let (g, b, shared) = (config.grid_dim, config.block_dim, config.shared_mem_bytes as usize);
        let order = (self.landing, self.schedule);
        let guards: Vec<_> = self.memory.borrow().values().flat_map(Allocation::guard_ranges).collect();
        // SAFETY: the launch sequences under test pass addresses of this emulator's live
        // allocations; a kernel straying past them lands in guard bytes: the runtime fails
        // a vector access or copy there, and any write there shows below.
        let traffic = unsafe {
            bone_host_kernels::launch(kernel, [g.0, g.1, g.2], [b.0, b.1, b.2], shared, args, order, &guards)
        }
        .unwrap_or_else(|e| panic!("{e}"));
        for (address, allocation) in self.memory.borrow().iter() {
            assert!(allocation.guards_intact(), "{kernel} wrote outside the allocation at {address:#x}");
        }
        // The kernels' shared-memory layouts are meant to be free of bank conflicts: a
        // conflict costs no wrong answer, only time, so only this check shows it.
        assert!(
            traffic.conflicts() == 0 && traffic.unmatched == 0,
            "{kernel}: shared-memory bank conflicts (or accesses the runtime could not match into warp-wide ones): \
             {traffic:?}"
        );
        *self.traffic.borrow_mut().entry(kernel.to_owned()).or_default() += traffic;
    }
}

/// A copy of the allocation holding `address`, from `address` to its end, read as
/// elements of `ty`; indexing past the allocation panics.
struct Snapshot {
    bytes: Vec<u8>,
    ty: Ty,
}

impl Snapshot {
    fn take(emulator: &Emulator, ty: Ty, address: u64) -> Self {
        Snapshot { bytes: emulator.read_bytes(address, emulator.bytes_from(address)), ty }
    }

    fn at(&self, index: u64) -> usize {
        let at = (index * self.ty.size()) as usize;
        assert!(at + self.ty.size() as usize <= self.bytes.len(), "element {index} is beyond its allocation");
        at
    }

    fn get(&self, index: u64) -> f64 {
        self.ty.decode(&self.bytes[self.at(index)..])
    }

    fn set(&mut self, index: u64, value: f64) {
        let at = self.at(index);
        let encoded = self.ty.encode(value);
        self.bytes[at..at + encoded.len()].copy_from_slice(&encoded);
    }

    fn store(self, emulator: &Emulator, address: u64) {
        emulator.write_bytes(address, &self.bytes);
    }
}

impl Launcher for Emulator {
    fn gemm(&self, kernel: &str, p: &BoneGemm, batches: usize) -> Result<()> {
        let GemmKind { a_k_major, b_k_major, .. } = gemm_kind(kernel);
        let mut pairs = vec![(p.a as u64, p.lda, p.stride_a, p.b as u64, p.ldb, p.stride_b, p.k)];
        if p.k2 > 0 {
            pairs.push((p.a2 as u64, p.lda2, p.stride_a2, p.b2 as u64, p.ldb2, p.stride_b2, p.k2));
        }
        // The kernel's contract (params.h), which a CPU cannot enforce by faulting: 16-byte
        // aligned operands, leading dimensions and strides in multiples of 8 elements, and
        // each operand's contiguous extent too (16-byte chunks are loaded whole or not).
        for &(a, lda, sa, b, ldb, sb, k) in &pairs {
            assert!(a % 16 == 0 && b % 16 == 0, "{kernel}: operand not 16-byte aligned");
            assert!(
                [lda as i64, ldb as i64, sa, sb].iter().all(|v| v % 8 == 0),
                "{kernel}: ld or stride not a multiple of 8"
            );
            let a_extent = if a_k_major { k } else { p.m };
            let b_extent = if b_k_major { k } else { p.n };
            assert!(a_extent % 8 == 0 && b_extent % 8 == 0, "{kernel}: a contiguous extent is not a multiple of 8");
        }
        assert!(
            (p.c as u64).is_multiple_of(16) && [p.n as i64, p.ldc as i64, p.stride_c].iter().all(|v| v % 8 == 0),
            "{kernel}: C's pointer, n, ldc or stride breaks the contract (16-byte aligned, multiples of 8)"
        );
        assert!(p.split_k % 8 == 0, "{kernel}: split_k {}", p.split_k);
        let (name, config) = match self.tile_n {
            Some(tile_n) => self.gemm_kernels.with_tile_n(kernel, tile_n, p, batches, EMULATED_SMS),
            None => self.gemm_kernels.select(kernel, p, batches, EMULATED_SMS),
        };
        self.launch(&name, config, &[KernelArg::from(p)]);
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.launch(kernel, elementwise_config(kernel, elements), &kernel_args(args));
        Ok(())
    }

    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>> {
        let (name, config) = self.gemm_kernels.fused(kernel, grid);
        self.launch(&name, config, &kernel_args(args));
        Some(Ok(()))
    }
}

fn kernel_args(args: &[Arg]) -> Vec<KernelArg<'_>> {
    args.iter()
        .map(|arg| match arg {
            Arg::I32(v) => KernelArg::from(v),
            Arg::Ptr(address) => KernelArg::from(address),
            Arg::Layer(layer) => KernelArg::from(layer),
            Arg::Setup(setup) => KernelArg::from(setup),
            Arg::Dropout(dropout) => KernelArg::from(dropout),
        })
        .collect()
}

/// The emulator as a library GEMM: one product `C = op(A) op(B) + beta C` at a time.
impl ProductRunner for Emulator {
    fn product(&self, p: &Product) -> Result<()> {
        let [m, n, k] = p.shape.map(|v| v as u64);
        let half = Ty::from(p.half);
        let out_ty = if p.out.f32 { Ty::F32 } else { half };
        let (a, b) = (Snapshot::take(self, half, p.a.address), Snapshot::take(self, half, p.b.address));
        let mut c = Snapshot::take(self, out_ty, p.out.address);
        // op(A) is [m, k], op(B) is [k, n]; a transposed operand is stored the other way round.
        let at = |op: &Operand, z: u64, row: u64, col: u64| -> u64 {
            z * op.stride as u64 + if op.transposed { col * op.ld as u64 + row } else { row * op.ld as u64 + col }
        };
        let Output { ld: ldc, stride: stride_c, .. } = p.out;
        for z in 0..p.batches as u64 {
            for row in 0..m {
                for col in 0..n {
                    let sum: f64 = (0..k).map(|j| a.get(at(&p.a, z, row, j)) * b.get(at(&p.b, z, j, col))).sum();
                    let index = z * stride_c as u64 + row * ldc as u64 + col;
                    let old = if p.beta != 0.0 { f64::from(p.beta) * c.get(index) } else { 0.0 };
                    c.set(index, sum + old);
                }
            }
        }
        c.store(self, p.out.address);
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        Launcher::elementwise(self, kernel, elements, args)
    }

    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        Launcher::gemm(self, kernel, params, batches)
    }
}
