//! One optimizer step, for-loop vs foreach vs fused, for SGD with momentum, Adam and AdamW,
//! over the standard parameter sets in f32 and f16, on the CPU and on a CUDA GPU when
//! there is one. `cargo bench --bench optim_step` (see `benches/common` for narrowing).

mod common;

use common::cases::{impl_name, OptName, StepCase, IMPLS};
use common::params::make_params;
use criterion::{criterion_group, criterion_main, Criterion};

fn optim_step(c: &mut Criterion) {
    for device in common::devices() {
        for (set, dtype) in common::cases(device) {
            let params = make_params(&set.shapes(), dtype, device, 0).expect("parameters");
            for opt in OptName::ALL {
                let name = format!("step_{}", opt.name());
                let mut group = c.benchmark_group(common::group_name(&name, device, set, dtype));
                for imp in IMPLS {
                    let mut case = StepCase::new(&params, opt, imp).expect("step case");
                    common::configure(&mut group, set, case.bytes());
                    group.bench_function(impl_name(imp), |b| {
                        b.iter_custom(|iters| {
                            common::timed(device, iters, None, &mut || case.run())
                        })
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group!(benches, optim_step);
criterion_main!(benches);
