//! A call's setup passes (the reshuffles of B into GEMM operands, S, the tiling matrices)
//! in one launch: `bone_setup_*` runs each job asked for on its own run of blocks
//! (struct BoneSetup in kernels/params.h). They are microseconds of work each, so one
//! launch instead of two or three takes launch gaps off every step at small T.

use std::ffi::c_void;
use std::ptr::null_mut;

use super::call::Call;
use super::launch::{Arg, Launcher};
use super::params::{BONE_BIAS_COLUMNS, BONE_MERGE_THREADS, BoneSetup};
use crate::error::Result;

/// The jobs of one setup launch, added one by one; none at first.
pub(super) struct Setup(BoneSetup);

/// `cols` columns, and after them the bias columns (BONE_BIAS_COLUMNS: one that carries the
/// bias, zeros so that a product's K stays a multiple of 8) where `bias` (an address, 0:
/// none) rides in an appended product: the width of S, Bfull^T, E and BatRow's R.
pub(super) fn bias_width(cols: usize, bias: u64) -> usize {
    cols + if bias == 0 { 0 } else { BONE_BIAS_COLUMNS as usize }
}

/// Room for `cols` columns and the bias columns: a workspace region sized before a call's
/// bias is known.
pub(super) fn room_for_bias(cols: usize) -> usize {
    cols + BONE_BIAS_COLUMNS as usize
}

/// A device address as the struct's pointer type (never dereferenced on the host).
fn address(device: u64) -> *mut c_void {
    device as *mut c_void
}

impl Setup {
    pub(super) fn new(call: &Call) -> Self {
        Setup(BoneSetup {
            layer: call.layer,
            tokens: call.tokens as i32,
            x: address(call.x).cast_const(),
            s: null_mut(),
            s_saved: null_mut(),
            dropout: call.dropout,
            b: address(call.b).cast_const(),
            full: null_mut(),
            full_t: null_mut(),
            bias: std::ptr::null(),
            bat_blocks: null_mut(),
            bat_block_count: 0,
            stack: null_mut(),
            onehot: null_mut(),
            tiling: null_mut(),
            tiling_rows: 0,
            tiling_cols: 0,
            ones: null_mut(),
            ones_rows: 0,
        })
    }

    /// S `[T, r]`: the sums of X's r-wide chunks.
    pub(super) fn block_sums(mut self, s: u64) -> Self {
        self.0.s = address(s);
        self
    }

    /// S written a second time, `[T, r]` at `saved` (0: not), for the caller to keep.
    pub(super) fn saved_block_sums(mut self, saved: u64) -> Self {
        self.0.s_saved = address(saved);
        self
    }

    /// Bfull `[r, N]` and Bfull^T `[N, r]` (shared block, mini).
    pub(super) fn shared_blocks(mut self, full: u64, full_t: u64) -> Self {
        (self.0.full, self.0.full_t) = (address(full), address(full_t));
        self
    }

    /// The bias (0: none) carried through an appended product, in BONE_BIAS_COLUMNS more
    /// columns of its operands: S `[T, r + 8]` takes a column of ones, Bfull^T `[N, r + 8]`
    /// and E `[rows, cols + 8]` the bias in that column ([`Setup::ones`] puts the ones in
    /// a matrix a GEMM fills).
    pub(super) fn bias_columns(mut self, bias: u64) -> Self {
        self.0.bias = address(bias).cast_const();
        self
    }

    /// The first `count` Bat blocks B_j, `[count, r, r]`, in the activations' type.
    pub(super) fn bat_blocks(mut self, count: usize, blocks: u64) -> Self {
        (self.0.bat_block_count, self.0.bat_blocks) = (count as i32, address(blocks));
        self
    }

    /// BatRow's blocks side by side, `[r, K]`.
    pub(super) fn row_stack(mut self, stack: u64) -> Self {
        self.0.stack = address(stack);
        self
    }

    /// BatCol's routing matrix `[K, r]`.
    pub(super) fn one_hot(mut self, onehot: u64) -> Self {
        self.0.onehot = address(onehot);
        self
    }

    /// E `[rows, cols]`, 1 where row mod r == column mod r.
    pub(super) fn tiling(mut self, rows: usize, cols: usize, e: u64) -> Self {
        (self.0.tiling, self.0.tiling_rows, self.0.tiling_cols) = (address(e), rows as i32, cols as i32);
        self
    }

    /// The bias columns (a one, then zeros) of `rows` rows of `[rows, r + 8]` at `m`,
    /// whose first r columns a GEMM writes.
    pub(super) fn ones(mut self, rows: usize, m: u64) -> Self {
        (self.0.ones, self.0.ones_rows) = (address(m), rows as i32);
        self
    }

    /// Threads of the launch: each job's elements rounded up to whole blocks, as the kernel
    /// assigns them.
    fn threads(&self) -> usize {
        let p = &self.0;
        let (r, k, n) = (p.layer.r as usize, p.layer.k as usize, p.layer.n as usize);
        let widened = |cols: usize| bias_width(cols, p.bias as u64);
        let jobs = [
            (!p.s.is_null(), p.tokens as usize * 32), // a warp per row of S
            (!p.full.is_null(), widened(r) * n),
            (!p.bat_blocks.is_null(), p.bat_block_count as usize * r * r),
            (!p.stack.is_null(), k * r),
            (!p.onehot.is_null(), k * r),
            (!p.tiling.is_null(), p.tiling_rows as usize * widened(p.tiling_cols as usize)),
            (!p.ones.is_null(), p.ones_rows as usize * BONE_BIAS_COLUMNS as usize),
        ];
        let block = BONE_MERGE_THREADS as usize;
        jobs.iter().filter(|(asked, _)| *asked).map(|(_, elements)| elements.div_ceil(block) * block).sum()
    }

    pub(super) fn launch(self, launcher: &impl Launcher, call: &Call) -> Result<()> {
        let threads = self.threads();
        if threads == 0 {
            return Ok(());
        }
        launcher.elementwise(&call.adapter_pass("bone_setup"), threads, &[Arg::Setup(self.0)])
    }
}
