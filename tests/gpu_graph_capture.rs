//! A training step captured into a CUDA graph and replayed computes what the eager step
//! computes, bit for bit, and reads its inputs at replay: every call is stream-ordered,
//! allocates nothing once the workspace is sized (`Workspace::with_bytes`), copies nothing
//! to the host and never synchronises. As cudarc's own capture test does, the context
//! tracks no events (a wait on an event recorded before the capture would break it: one
//! stream does all the work here), and the capture is relaxed (cuBLAS may set itself up on
//! first use, which the eager step before the capture does). GPU only; on every engine.

mod common;

use bone_kernels::Variant;
use bone_kernels::cuda::{Accumulate, BoneKernels, LayerGrads, LayerWeights, Pass, Workspace};
use common::{bf16s, fresh_rng, gemm_engines, gpu_or_skip, layer, random_vec};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use half::bf16;
use std::sync::Arc;

/// One step's device buffers.
struct Step {
    x: CudaSlice<bf16>,
    w: CudaSlice<bf16>,
    b: CudaSlice<f32>,
    dy: CudaSlice<bf16>,
    y: CudaSlice<bf16>,
    dx: CudaSlice<bf16>,
    db: CudaSlice<f32>,
    sums: CudaSlice<bf16>,
}

impl Step {
    /// Forward then backward; the shared block keeps S between them instead of X.
    fn run(&mut self, kernels: &BoneKernels, variant: Variant, t: usize, workspace: &mut Workspace) {
        let shape = layer(variant, 1024, 1024, 64);
        let weights = LayerWeights { w: self.w.as_view(), b: self.b.as_view(), bias: None, dropout: None };
        let (x, dy) = (self.x.as_view(), self.dy.as_view());
        let mut y = self.y.as_view_mut();
        let mut grads = LayerGrads {
            dx: Some(self.dx.as_view_mut()),
            db: self.db.slice_mut(..shape.adapter_len()),
            dbias: None,
            accumulate: Accumulate::NONE,
        };
        if variant == Variant::Shared {
            let mut sums = self.sums.as_view_mut();
            kernels.forward_saving_block_sums(&shape, t, &x, &weights, &mut y, &mut sums, workspace).unwrap();
            let sums = self.sums.as_view();
            kernels.backward_from_block_sums(&shape, t, &sums, &weights, &dy, &mut grads, workspace).unwrap();
        } else {
            kernels.forward(&shape, t, &x, &weights, &mut y, workspace).unwrap();
            kernels.backward(&shape, t, &x, &weights, &dy, &mut grads, workspace).unwrap();
        }
    }

    /// Y, dX and dB as bits.
    fn outputs(&self, stream: &Arc<CudaStream>) -> Vec<u32> {
        let halves = |d: &CudaSlice<bf16>| stream.clone_dtoh(d).unwrap().into_iter().map(|v| u32::from(v.to_bits()));
        let floats = stream.clone_dtoh(&self.db).unwrap().into_iter().map(f32::to_bits);
        halves(&self.y).chain(halves(&self.dx)).chain(floats).collect()
    }

    fn poison(&mut self, stream: &Arc<CudaStream>) {
        stream.memcpy_htod(&vec![bf16::NAN; self.y.len()], &mut self.y).unwrap();
        stream.memcpy_htod(&vec![bf16::NAN; self.dx.len()], &mut self.dx).unwrap();
        stream.memcpy_htod(&vec![f32::NAN; self.db.len()], &mut self.db).unwrap();
    }
}

#[test]
fn gpu_a_step_replays_from_a_cuda_graph() {
    let test = "gpu_a_step_replays_from_a_cuda_graph";
    // The usual checks and notices; this test then makes its own context.
    let Some(probe) = gpu_or_skip(test) else { return };
    let engines = gemm_engines(&probe);
    drop(probe);
    let mut rng = fresh_rng(test);
    let context = CudaContext::new(0).unwrap();
    // SAFETY: every buffer below is made after this and used on `stream` alone, so no
    // use needs an event to order it against another stream.
    unsafe { context.disable_event_tracking() };
    let stream = context.new_stream().unwrap();
    let mut kernels = BoneKernels::new(stream.clone()).unwrap();
    let (n, k, r, t) = (1024, 1024, 64, 256);
    let up = |values: Vec<f64>| stream.clone_htod(&bf16s(&values)).unwrap();
    for engine in engines {
        kernels.set_gemm_engine(engine).unwrap();
        for variant in [Variant::Shared, Variant::BatCol, Variant::BatRow] {
            let case = format!("{variant} {engine:?}");
            let shape = layer(variant, k, n, r);
            let b: Vec<f32> = random_vec(&mut rng, shape.adapter_len(), 0.1).iter().map(|&v| v as f32).collect();
            let mut step = Step {
                x: up(random_vec(&mut rng, t * k, 1.0)),
                w: up(random_vec(&mut rng, n * k, (3.0 / k as f64).sqrt())),
                b: stream.clone_htod(&b).unwrap(),
                dy: up(random_vec(&mut rng, t * n, 1.0)),
                y: stream.alloc_zeros(t * n).unwrap(),
                dx: stream.alloc_zeros(t * k).unwrap(),
                db: stream.alloc_zeros(shape.adapter_len()).unwrap(),
                sums: stream.alloc_zeros(t * r).unwrap(),
            };
            let bytes = [Pass::Forward, Pass::Backward].map(|pass| kernels.workspace_bytes(&shape, t, pass).unwrap());
            let mut workspace = Workspace::with_bytes(stream.clone(), bytes[0].max(bytes[1])).unwrap();

            step.run(&kernels, variant, t, &mut workspace);
            let eager = step.outputs(&stream);
            step.poison(&stream);
            stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).unwrap();
            step.run(&kernels, variant, t, &mut workspace);
            let graph = stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");
            assert!(
                step.outputs(&stream).iter().take(t * n).all(|&v| bf16::from_bits(v as u16).is_nan()),
                "{case}: the capture ran the step instead of recording it"
            );
            graph.launch().unwrap();
            assert!(step.outputs(&stream) == eager, "{case}: the replayed step differs from the eager one");

            // New inputs in the same buffers: the replay reads them.
            stream.memcpy_htod(&bf16s(&random_vec(&mut rng, t * k, 1.0)), &mut step.x).unwrap();
            stream.memcpy_htod(&bf16s(&random_vec(&mut rng, t * n, 1.0)), &mut step.dy).unwrap();
            step.run(&kernels, variant, t, &mut workspace);
            let eager = step.outputs(&stream);
            step.poison(&stream);
            graph.launch().unwrap();
            assert!(step.outputs(&stream) == eager, "{case}: the replay on new inputs differs from the eager step");
            println!("{case}: the step replayed from a CUDA graph, bit for bit the eager step's, twice");
        }
    }
}
