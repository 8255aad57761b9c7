//! Scratch device memory for the forward and backward passes, owned by the caller.
//!
//! What a call needs depends on the variant, T, K, N and r (see
//! [`BoneKernels::workspace_bytes`](super::BoneKernels::workspace_bytes)); it is never
//! proportional to N x K or T x N. A [`Workspace`] grows to the largest call it has
//! served (one stream-ordered allocation then) and is reused after that.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};

use crate::error::Result;

/// Alignment of every region carved out of the workspace (cp.async and ldmatrix want 16).
const ALIGN: usize = 256;

pub struct Workspace {
    stream: Arc<CudaStream>,
    buffer: Option<CudaSlice<u8>>,
}

impl Workspace {
    /// An empty workspace on `stream`; the first call that needs memory allocates it.
    pub fn new(stream: Arc<CudaStream>) -> Self {
        Workspace { stream, buffer: None }
    }

    /// A workspace of `bytes` allocated now (size it with `BoneKernels::workspace_bytes`).
    pub fn with_bytes(stream: Arc<CudaStream>, bytes: usize) -> Result<Self> {
        let mut workspace = Workspace::new(stream);
        workspace.reserve(bytes)?;
        Ok(workspace)
    }

    /// True when this workspace orders its memory on `stream`.
    pub(crate) fn is_on(&self, stream: &Arc<CudaStream>) -> bool {
        Arc::ptr_eq(&self.stream, stream) || *self.stream == **stream
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.buffer.as_ref().map_or(0, |b| b.len())
    }

    fn reserve(&mut self, bytes: usize) -> Result<()> {
        if self.bytes() < bytes {
            self.buffer = None; // free first: the old contents are not needed
            self.buffer = Some(self.stream.alloc_zeros::<u8>(bytes)?);
        }
        Ok(())
    }

    /// Device addresses of regions of the given byte sizes, each 256-byte aligned, valid
    /// until the workspace is next used. The guard orders the caller's kernels on this
    /// workspace's stream.
    pub(crate) fn regions(&mut self, sizes: &[usize]) -> Result<Vec<u64>> {
        self.reserve(total_bytes(sizes))?;
        let Some(buffer) = self.buffer.as_mut() else { return Ok(vec![0; sizes.len()]) };
        let (base, _record) = buffer.device_ptr_mut(&self.stream);
        let mut offset = 0;
        Ok(sizes
            .iter()
            .map(|size| {
                let address = base + offset as u64;
                offset += size.next_multiple_of(ALIGN);
                address
            })
            .collect())
    }
}

#[cfg(test)]
thread_local! {
    /// Whether this test thread sizes workspaces as a real run does ([`use_production_bounds`]).
    static PRODUCTION_BOUNDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A bound on one of a pass's transient buffers (BatCol's W' slab, the token chunks of
/// BatCol's dX accumulator and of BatRow's X~), in bytes or tokens: as given, or in the
/// crate's unit tests 1024 times less, so that the emulator's small layers take several
/// slabs and chunks.
pub(crate) fn bound(size: usize) -> usize {
    #[cfg(test)]
    if !PRODUCTION_BOUNDS.get() {
        return size >> 10;
    }
    size
}

/// Makes this test thread's bounds those of a real run (tests only).
#[cfg(test)]
pub(crate) fn use_production_bounds() {
    PRODUCTION_BOUNDS.set(true);
}

/// Bytes needed to hold regions of these sizes.
pub(crate) fn total_bytes(sizes: &[usize]) -> usize {
    sizes.iter().map(|s| s.next_multiple_of(ALIGN)).sum()
}
