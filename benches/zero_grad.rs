//! `zero_grad` per tensor, foreach (multi-tensor), with a grad arena, and set_to_none, over
//! the standard parameter sets in f32 and f16, on the CPU and on a CUDA GPU when there is
//! one. `cargo bench --bench zero_grad` (see `benches/common` for narrowing a run).

mod common;

use common::cases::{ZeroCase, ZeroImpl};
use common::params::make_params;
use criterion::{criterion_group, criterion_main, Criterion};

fn zero_grad(c: &mut Criterion) {
    for device in common::devices() {
        for (set, dtype) in common::cases(device) {
            let params = make_params(&set.shapes(), dtype, device, 0).expect("parameters");
            let mut group = c.benchmark_group(common::group_name("zero_grad", device, set, dtype));
            // The arena rebinds the grads: last.
            for imp in [
                ZeroImpl::PerTensor,
                ZeroImpl::Foreach,
                ZeroImpl::SetToNone,
                ZeroImpl::Arena,
            ] {
                let case = ZeroCase::new(&params, imp).expect("zero case");
                common::configure(&mut group, set, case.bytes());
                group.bench_function(imp.name(), |b| {
                    b.iter_custom(|iters| {
                        let mut setup = || case.setup();
                        let setup: common::Setup<'_> = if case.needs_setup() {
                            Some(&mut setup)
                        } else {
                            None
                        };
                        common::timed(device, iters, setup, &mut || case.run())
                    })
                });
                case.setup().expect("grads back");
            }
            group.finish();
        }
    }
}

criterion_group!(benches, zero_grad);
criterion_main!(benches);
