//! Per-launch GPU times of a pass, for the benches' breakdown (`bench_support::time_launches`):
//! [`Timed`] wraps a pass's [`Launcher`] and marks the stream (a CUDA event) before and after
//! every launch, so that each launch's time is read back once the pass has run. A handle
//! with a [`LaunchTimer`] routes its passes through it; others never do.

use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};

use super::launch::{Arg, Launcher};
use super::params::BoneGemm;
use super::split::{Product, ProductRunner};
use crate::error::Result;

/// Where a launch starts and ends on its stream.
pub(crate) trait Clock {
    type Mark;
    fn mark(&self) -> Result<Self::Mark>;
}

impl Clock for Arc<CudaStream> {
    type Mark = CudaEvent;
    fn mark(&self) -> Result<CudaEvent> {
        Ok(self.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?)
    }
}

/// One launch: what ran (the kernel, or a GEMM's instantiation and engine) and its marks.
pub(crate) type Marked<M> = (String, M, M);

/// The launches a timed handle's passes have marked, in order.
#[derive(Default)]
pub(crate) struct LaunchTimer {
    launches: Mutex<Vec<Marked<CudaEvent>>>,
}

impl LaunchTimer {
    pub(crate) fn launches(&self) -> &Mutex<Vec<Marked<CudaEvent>>> {
        &self.launches
    }

    /// The launches marked so far, emptied.
    pub(crate) fn take(&self) -> Vec<Marked<CudaEvent>> {
        std::mem::take(&mut *self.launches.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// `inner` (a [`Launcher`], or a library GEMM's [`ProductRunner`]), each launch marked on
/// `clock` before and after, into `launches`; the crate's GEMMs and fused kernel are named
/// for the engine they run on (`engine`: GemmEngine::label).
pub(crate) struct Timed<'a, L, C: Clock> {
    pub inner: L,
    pub clock: &'a C,
    pub engine: &'a str,
    pub launches: &'a Mutex<Vec<Marked<C::Mark>>>,
}

impl<L, C: Clock> Timed<'_, L, C> {
    fn record(&self, name: String, start: C::Mark) -> Result<()> {
        let end = self.clock.mark()?;
        self.launches.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((name, start, end));
        Ok(())
    }

    fn marked(&self, name: impl FnOnce() -> String, launch: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = self.clock.mark()?;
        launch()?;
        self.record(name(), start)
    }
}

/// A GEMM call's name in the breakdown: instantiation, m x n x k (+ the appended k2), batches.
fn gemm_name(kernel: &str, p: &BoneGemm, batches: usize, engine: &str) -> String {
    let appended = if p.k2 > 0 { format!("+{}", p.k2) } else { String::new() };
    format!("{kernel} {}x{}x{}{appended} x{batches} on {engine}", p.m, p.n, p.k)
}

impl<L: Launcher, C: Clock> Launcher for Timed<'_, L, C> {
    fn gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        self.marked(|| gemm_name(kernel, params, batches, self.engine), || self.inner.gemm(kernel, params, batches))
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.marked(|| kernel.to_string(), || self.inner.elementwise(kernel, elements, args))
    }

    fn fused(&self, kernel: &str, grid: (u32, u32), args: &[Arg]) -> Option<Result<()>> {
        let start = match self.clock.mark() {
            Ok(start) => start,
            Err(err) => return Some(Err(err)),
        };
        // None: nothing launched (a library GEMM takes the unfused sequence), nothing recorded.
        let launched = self.inner.fused(kernel, grid, args)?;
        Some(launched.and_then(|()| self.record(format!("{kernel} on {}", self.engine), start)))
    }

    fn cuts_reductions(&self) -> bool {
        self.inner.cuts_reductions()
    }
}

/// On a library GEMM the marks go around each library call (a `BoneGemm` may be two), and
/// `engine` names the crate's GEMM that runs the short two-part products.
impl<R: ProductRunner, C: Clock> ProductRunner for Timed<'_, R, C> {
    fn product(&self, p: &Product) -> Result<()> {
        let [m, n, k] = p.shape;
        let name = || format!("cublas {m}x{n}x{k} x{} beta={}", p.batches, p.beta);
        self.marked(name, || self.inner.product(p))
    }

    fn elementwise(&self, kernel: &str, elements: usize, args: &[Arg]) -> Result<()> {
        self.marked(|| kernel.to_string(), || self.inner.elementwise(kernel, elements, args))
    }

    fn own_gemm(&self, kernel: &str, params: &BoneGemm, batches: usize) -> Result<()> {
        let name = || gemm_name(kernel, params, batches, self.engine);
        self.marked(name, || self.inner.own_gemm(kernel, params, batches))
    }
}
