//! A CPU emulator of the kernels, for the crate's own tests: it runs the exact launch
//! sequence of every variant's forward and backward (every offset, stride, layout, batch
//! count and workspace region) over emulated device memory, and the results are checked
//! against the f64 oracle. Each allocation is separate and every access is bounds-checked,
//! so a launch that reads or writes outside what it was given fails here, without a GPU.
//!
//! It emulates what each kernel computes (from its contract in kernels/), not how: the
//! tensor-core fragment arithmetic is checked separately (scripts/check_gemm_fragments.py)
//! and on the GPU (tests/gpu_training.rs).

use std::cell::RefCell;
use std::collections::BTreeMap;

use half::bf16;

use super::baseline::{Operand, Output};
use super::launch::{Arg, Launcher, gemm_kind};
use super::params::{BoneGemm, BoneLayer};
use super::split::{Product, ProductRunner};
use crate::error::Result;

#[derive(Default)]
pub(crate) struct Emulator {
    /// Allocations by start address.
    memory: RefCell<BTreeMap<u64, Vec<u8>>>,
}

/// Element types in emulated memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ty {
    Bf16,
    F32,
}

impl Ty {
    fn size(self) -> u64 {
        match self {
            Ty::Bf16 => 2,
            Ty::F32 => 4,
        }
    }

    /// The value stored little-endian at the start of `bytes`.
    fn decode(self, bytes: &[u8]) -> f64 {
        match self {
            Ty::Bf16 => bf16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            Ty::F32 => f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        }
    }

    /// Stores `value`, rounded to this type (through f32, as the kernels round), at the start of `bytes`.
    fn encode(self, value: f64, bytes: &mut [u8]) {
        match self {
            Ty::Bf16 => bytes[..2].copy_from_slice(&bf16::from_f32(value as f32).to_le_bytes()),
            Ty::F32 => bytes[..4].copy_from_slice(&(value as f32).to_le_bytes()),
        }
    }
}

impl Emulator {
    /// `bytes` of memory filled with NaN bit patterns (0xFF), 256-byte aligned like the real
    /// workspace, with a gap after it so that neighbouring allocations never touch.
    pub fn alloc(&self, bytes: usize) -> u64 {
        let mut memory = self.memory.borrow_mut();
        let start = memory.iter().next_back().map_or(1 << 20, |(a, v)| a + v.len() as u64 + 4096).next_multiple_of(256);
        memory.insert(start, vec![0xFF; bytes]);
        start
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

    fn locate(&self, address: u64, bytes: u64) -> (u64, usize) {
        let memory = self.memory.borrow();
        let (&start, data) =
            memory.range(..=address).next_back().unwrap_or_else(|| panic!("address {address:#x} is not allocated"));
        let offset = address - start;
        assert!(
            offset + bytes <= data.len() as u64,
            "access at {address:#x} (+{bytes}) beyond the allocation at {start:#x} of {} bytes",
            data.len()
        );
        (start, offset as usize)
    }

    pub fn read(&self, ty: Ty, base: u64, index: u64) -> f64 {
        let address = base + index * ty.size();
        let (start, offset) = self.locate(address, ty.size());
        ty.decode(&self.memory.borrow()[&start][offset..])
    }

    pub fn write(&self, ty: Ty, base: u64, index: u64, value: f64) {
        let address = base + index * ty.size();
        let (start, offset) = self.locate(address, ty.size());
        ty.encode(value, &mut self.memory.borrow_mut().get_mut(&start).expect("located")[offset..]);
    }
}

fn ptr(args: &[Arg], i: usize) -> u64 {
    match args[i] {
        Arg::Ptr(p) => p,
        other => panic!("argument {i} should be a pointer, is {other:?}"),
    }
}

fn int(args: &[Arg], i: usize) -> i64 {
    match args[i] {
        Arg::I32(v) => v.into(),
        other => panic!("argument {i} should be an int, is {other:?}"),
    }
}

fn layer(args: &[Arg]) -> BoneLayer {
    match args[0] {
        Arg::Layer(l) => l,
        other => panic!("argument 0 should be the layer, is {other:?}"),
    }
}

/// The B type a kernel name ends in.
fn b_type(kernel: &str) -> Ty {
    if kernel.ends_with("_b_f32") { Ty::F32 } else { Ty::Bf16 }
}

/// A copy of the allocation holding `address`, read as elements of `ty` from `address` on;
/// indexing past the allocation panics.
struct Snapshot {
    bytes: Vec<u8>,
    offset: usize,
    ty: Ty,
}

impl Snapshot {
    fn take(emulator: &Emulator, ty: Ty, address: u64) -> Self {
        let (start, offset) = emulator.locate(address, 0);
        Snapshot { bytes: emulator.memory.borrow()[&start].clone(), offset, ty }
    }

    fn at(&self, index: u64) -> usize {
        let at = self.offset + (index * self.ty.size()) as usize;
        assert!(at + self.ty.size() as usize <= self.bytes.len(), "element {index} is beyond its allocation");
        at
    }

    fn get(&self, index: u64) -> f64 {
        self.ty.decode(&self.bytes[self.at(index)..])
    }

    fn set(&mut self, index: u64, value: f64) {
        let at = self.at(index);
        self.ty.encode(value, &mut self.bytes[at..]);
    }

    fn store(self, emulator: &Emulator, address: u64) {
        let (start, _) = emulator.locate(address, 0);
        emulator.memory.borrow_mut().insert(start, self.bytes);
    }
}

impl Launcher for Emulator {
    fn gemm(&self, kernel: &str, p: &BoneGemm, batches: usize) -> Result<()> {
        let (a_k_major, b_k_major, out_f32) = gemm_kind(kernel);
        let out = if out_f32 { Ty::F32 } else { Ty::Bf16 };
        let mut pairs = vec![(p.a as u64, p.lda, p.stride_a, p.b as u64, p.ldb, p.stride_b, p.k)];
        if p.k2 > 0 {
            pairs.push((p.a2 as u64, p.lda2, p.stride_a2, p.b2 as u64, p.ldb2, p.stride_b2, p.k2));
        }
        // The kernel's contract (params.h): 16-byte aligned operands, leading dimensions and
        // strides in multiples of 8 elements, and each operand's contiguous extent too
        // (16-byte chunks are loaded whole or zero-filled).
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
        let operands: Vec<_> = pairs
            .iter()
            .map(|&(a, lda, sa, b, ldb, sb, k)| {
                (
                    Snapshot::take(self, Ty::Bf16, a),
                    lda as u64,
                    sa as u64,
                    Snapshot::take(self, Ty::Bf16, b),
                    ldb as u64,
                    sb as u64,
                    k as u64,
                )
            })
            .collect();
        let bias = (!p.bias.is_null()).then(|| Snapshot::take(self, Ty::Bf16, p.bias as u64));
        let mut c = Snapshot::take(self, out, p.c as u64);
        assert!(p.accumulate == 0 || out == Ty::F32, "accumulate is for f32 outputs");
        for z in 0..batches as u64 {
            for row in 0..p.m as u64 {
                for col in 0..p.n as u64 {
                    let mut acc = 0.0;
                    for (a, lda, sa, b, ldb, sb, k_extent) in &operands {
                        for k in 0..*k_extent {
                            let a_index = z * sa + if a_k_major { row * lda + k } else { k * lda + row };
                            let b_index = z * sb + if b_k_major { col * ldb + k } else { k * ldb + col };
                            acc += a.get(a_index) * b.get(b_index);
                        }
                    }
                    acc += bias.as_ref().map_or(0.0, |bias| bias.get(col));
                    let c_index = z * p.stride_c as u64 + row * p.ldc as u64 + col;
                    if p.accumulate != 0 {
                        acc += c.get(c_index);
                    }
                    c.set(c_index, acc);
                }
            }
        }
        c.store(self, p.c as u64);
        Ok(())
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        let expect = |count: i64| assert_eq!(elements as i64, count, "{kernel}: launched over {elements} elements");
        let base = kernel.split("_b_").next().expect("a name");
        match base {
            "bone_chunk_sum" => {
                let (l, tokens, x, s) = (layer(args), int(args, 1), ptr(args, 2), ptr(args, 3));
                let (r, k) = (l.r as i64, l.k as i64);
                expect(tokens * r);
                for t in 0..tokens {
                    for j in 0..r {
                        let sum = (j..k).step_by(r as usize).map(|c| self.read(Ty::Bf16, x, (t * k + c) as u64)).sum();
                        self.write(Ty::Bf16, s, (t * r + j) as u64, sum);
                    }
                }
            }
            "bone_shared_blocks" => {
                let (l, b, full, full_t) = (layer(args), ptr(args, 1), ptr(args, 2), ptr(args, 3));
                let (r, n) = (l.r as u64, l.n as u64);
                expect((r * n) as i64);
                let mini = l.variant == super::params::BoneVariant_BONE_MINI as i32;
                for j in 0..r {
                    for col in 0..n {
                        let index = if mini { j * l.mini_r as u64 + col % l.mini_r as u64 } else { j * n + col };
                        let v = self.read(b_type(kernel), b, index);
                        self.write(Ty::Bf16, full, j * n + col, v);
                        self.write(Ty::Bf16, full_t, col * r + j, v);
                    }
                }
            }
            "bone_tiled_identity" => {
                let (rows, cols, r, e) = (int(args, 0), int(args, 1), int(args, 2), ptr(args, 3));
                expect(rows * cols);
                for idx in 0..rows * cols {
                    let (a, b) = (idx / cols, idx % cols);
                    self.write(Ty::Bf16, e, idx as u64, if a % r == b % r { 1.0 } else { 0.0 });
                }
            }
            "bone_bias_grad" => {
                let (tokens, n, dy, dbias) = (int(args, 0), int(args, 1), ptr(args, 2), ptr(args, 3));
                expect(n);
                for col in 0..n {
                    let sum = (0..tokens).map(|t| self.read(Ty::Bf16, dy, (t * n + col) as u64)).sum();
                    self.write(Ty::F32, dbias, col as u64, sum);
                }
            }
            "bone_mini_fold" => {
                let (l, full, db) = (layer(args), ptr(args, 1), ptr(args, 2));
                let (r, n, mini_r) = (l.r as i64, l.n as i64, l.mini_r as i64);
                expect(r * mini_r);
                for j in 0..r {
                    for m in 0..mini_r {
                        let sum =
                            (m..n).step_by(mini_r as usize).map(|c| self.read(Ty::F32, full, (j * n + c) as u64)).sum();
                        self.write(Ty::F32, db, (j * mini_r + m) as u64, sum);
                    }
                }
            }
            "bone_bat_blocks" => {
                let (l, blocks, b, plus, plain) = (layer(args), int(args, 1), ptr(args, 2), ptr(args, 3), ptr(args, 4));
                let r = l.r as i64;
                expect(blocks * r * r);
                for idx in 0..blocks * r * r {
                    let v = self.read(b_type(kernel), b, idx as u64);
                    let diagonal = (idx / r % r) == idx % r;
                    self.write(Ty::Bf16, plus, idx as u64, v + if diagonal { 1.0 } else { 0.0 });
                    self.write(Ty::Bf16, plain, idx as u64, v);
                }
            }
            "bone_row_stack" => {
                let (l, b, stack) = (layer(args), ptr(args, 1), ptr(args, 2));
                let (r, k) = (l.r as i64, l.k as i64);
                expect(k * r);
                for c in 0..r {
                    for col in 0..k {
                        let (i, j) = (col / r, col % r);
                        let v = self.read(b_type(kernel), b, ((i * r + c) * r + j) as u64);
                        self.write(Ty::Bf16, stack, (c * k + col) as u64, v);
                    }
                }
            }
            "bone_block_one_hot" => {
                let (l, onehot) = (layer(args), ptr(args, 1));
                let (r, k) = (l.r as i64, l.k as i64);
                expect(k * r);
                for q in 0..k {
                    for a in 0..r {
                        self.write(Ty::Bf16, onehot, (q * r + a) as u64, if q / (k / r) == a { 1.0 } else { 0.0 });
                    }
                }
            }
            "bone_add_bias" => {
                let (rows, cols, ldc, bias, c) = (int(args, 0), int(args, 1), int(args, 2), ptr(args, 3), ptr(args, 4));
                expect(rows * cols);
                for row in 0..rows {
                    for col in 0..cols {
                        let index = (row * ldc + col) as u64;
                        let sum = self.read(Ty::Bf16, c, index) + self.read(Ty::Bf16, bias, col as u64);
                        self.write(Ty::Bf16, c, index, sum);
                    }
                }
            }
            "bone_sum_chunks" => {
                let (count, len, partials, out) = (int(args, 0), int(args, 1), ptr(args, 2), ptr(args, 3));
                expect(len);
                for i in 0..len {
                    let sum = (0..count).map(|c| self.read(Ty::F32, partials, (c * len + i) as u64)).sum();
                    self.write(Ty::F32, out, i as u64, sum);
                }
            }
            "bone_to_bf16" => {
                let (count, input, output) = (int(args, 0), ptr(args, 1), ptr(args, 2));
                expect(count);
                for i in 0..count as u64 {
                    let v = self.read(Ty::F32, input, i);
                    self.write(Ty::Bf16, output, i, v);
                }
            }
            other => panic!("the emulator has no twin for kernel {other}"),
        }
        Ok(())
    }
}

/// The emulator as a library GEMM: one product `C = op(A) op(B) + beta C` at a time.
impl ProductRunner for Emulator {
    fn product(&self, p: &Product) -> Result<()> {
        let [m, n, k] = p.shape.map(|v| v as u64);
        let out_ty = if p.out.f32 { Ty::F32 } else { Ty::Bf16 };
        let (a, b) = (Snapshot::take(self, Ty::Bf16, p.a.address), Snapshot::take(self, Ty::Bf16, p.b.address));
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
}
