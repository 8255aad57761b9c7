//! The demo's training loop (examples/finetune), run briefly: the held-out loss must
//! fall for every Bone variant, LoRA and full fine-tuning.

#[allow(dead_code)] // the demo's CLI uses parts this test does not
#[path = "../examples/finetune/demo/mod.rs"]
mod demo;

use bone_kernels::Variant;
use demo::layer::Method;
use demo::task::Task;
use demo::train::{RunConfig, run};

#[test]
fn loss_falls_for_every_method() {
    let methods = [
        Method::Bone(Variant::BatCol),
        Method::Bone(Variant::BatRow),
        Method::Bone(Variant::Shared),
        Method::Bone(Variant::Mini { mini_r: 8 }),
        Method::Lora { rank: 2 },
        Method::Full,
    ];
    for method in methods {
        let config = RunConfig {
            task: Task::LowRank,
            method,
            width: 32,
            r: 4,
            tokens: 32,
            steps: 40,
            lr: 3e-3,
            seed: 3,
            gpu: None,
        };
        let mut steps = 0;
        let curve = run(&config, || steps += 1).unwrap();
        assert_eq!(steps, 40, "{}: on_step per step", method.name());
        let (first, last) = (curve.points[0].1, curve.final_loss());
        assert!(last < 0.97 * first, "{}: held-out loss {first:.4e} -> {last:.4e} did not fall by 3%", method.name());
    }
}
