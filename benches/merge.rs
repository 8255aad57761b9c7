//! GPU merge throughput (`W' = W + dW`, every variant) on Llama-2-7B's MLP shape,
//! timed with CUDA events. Prints a notice and measures nothing where there is no GPU.
//! Compare the bytes moved (read W + write W') with the device's memory bandwidth.

use std::time::Duration;

use bone_kernels::cuda::{BoneKernels, device_count, kernels_built, stream_on_device};
use bone_kernels::{Dims, LayerShape, Variant};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use half::bf16;

fn merge_benches(c: &mut Criterion) {
    if device_count() == 0 || !kernels_built() {
        eprintln!("SKIPPED benches/merge: needs a CUDA GPU and a build with nvcc (kernels built: {})", kernels_built());
        return;
    }
    let kernels = BoneKernels::new(stream_on_device(0).expect("stream")).expect("kernels");
    let stream = kernels.stream().clone();
    let context = stream.context().clone();
    let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let (start, end) = (context.new_event(timed).unwrap(), context.new_event(timed).unwrap());
    let mut group = c.benchmark_group("merge_bf16_w_f32_b");
    for variant in [Variant::BatCol, Variant::BatRow, Variant::Shared, Variant::Mini { mini_r: 64 }] {
        let layer = LayerShape::new(variant, Dims { k: 4096, n: 11008, r: 64 }).unwrap();
        let w_host: Vec<bf16> =
            (0..layer.weight_len()).map(|i| bf16::from_f32(((i * 7919) % 2003) as f32 / 2003.0 - 0.5)).collect();
        let b_host: Vec<f32> =
            (0..layer.adapter_len()).map(|i| ((i * 104729) % 1009) as f32 / 10090.0 - 0.05).collect();
        let w = stream.clone_htod(&w_host).unwrap();
        let b = stream.clone_htod(&b_host).unwrap();
        let mut out = stream.alloc_zeros::<bf16>(layer.weight_len()).unwrap();
        group.throughput(Throughput::Bytes((2 * layer.weight_len() * size_of::<bf16>()) as u64));
        group.bench_function(format!("{variant} 11008x4096 r64"), |bencher| {
            bencher.iter_custom(|iters| {
                start.record(&stream).unwrap();
                for _ in 0..iters {
                    kernels.merge(&layer, &w, &b, &mut out).unwrap();
                }
                end.record(&stream).unwrap();
                Duration::from_secs_f64(f64::from(start.elapsed_ms(&end).unwrap()) / 1e3)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, merge_benches);
criterion_main!(benches);
