//! The host work of issuing GPU work: for the 1000 mixed tensors, one fused step or one
//! foreach `zero_grad` call; for the quickstart's training step (batch 64), the eager
//! step against one replay of the captured step. The CPU time until the call returns
//! (the work is queued, not done); the device is synchronised between calls, outside
//! the timing. On the
//! emulator with kernel execution off (`GRADSTEP_EMU_EXECUTE=0`: launches validated and
//! counted, not run) everywhere, and on a CUDA GPU when there is one.
//!
//! `cargo bench --bench host_overhead`.

mod common;

use std::time::{Duration, Instant};

use common::cases::{OptName, StepCase, TrainCase, ZeroCase, ZeroImpl};
use common::params::make_params;
use common::timing::sync;
use common::ParamSet;
use criterion::{criterion_group, criterion_main, Criterion};
use gradstep::optim::Impl;
use gradstep::{DType, Device};

const TENSORS: usize = 1000;

/// The CPU time of `iters` calls of `f`, each issued onto an idle device.
fn issue_time(device: Device, iters: u64, f: &mut dyn FnMut() -> gradstep::Result<()>) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        sync(device).expect("synchronise");
        let t0 = Instant::now();
        f().expect("call");
        total += t0.elapsed();
    }
    sync(device).expect("synchronise");
    total
}

/// The fused steps and the foreach `zero_grad` of the 1000 mixed tensors on `device`.
fn issue_on(c: &mut Criterion, device: Device, label: &str) {
    let set = ParamSet::Mixed(TENSORS);
    let params = make_params(&set.shapes(), DType::F32, device, 0).expect("parameters");
    let mut group = c.benchmark_group(format!("issue/{label}/mixed1000/f32"));
    for opt in OptName::ALL {
        let mut case = StepCase::new(&params, opt, Impl::Fused).expect("step case");
        group.bench_function(format!("fused_{}", opt.name()), |b| {
            b.iter_custom(|iters| issue_time(device, iters, &mut || case.run()))
        });
    }
    let case = ZeroCase::new(&params, ZeroImpl::Foreach).expect("zero case");
    group.bench_function("zero_foreach", |b| {
        b.iter_custom(|iters| issue_time(device, iters, &mut || case.run()))
    });
    group.finish();

    let mut group = c.benchmark_group(format!("issue/{label}/quickstart-b64/f32"));
    let mut eager = TrainCase::new(device, DType::F32, 64, 0).expect("train case");
    group.bench_function("train_eager", |b| {
        b.iter_custom(|iters| issue_time(device, iters, &mut || eager.run()))
    });
    let mut graph = TrainCase::new(device, DType::F32, 64, 0).expect("train case");
    graph.capture().expect("capture");
    group.bench_function("train_graph_replay", |b| {
        b.iter_custom(|iters| issue_time(device, iters, &mut || graph.run()))
    });
    group.finish();
}

fn issue(c: &mut Criterion) {
    // The emulator with kernel execution off: the host work alone (planning, tables,
    // argument packing, the launch calls), on any machine. Read once, before the
    // emulator's first launch in this process.
    std::env::set_var("GRADSTEP_EMU_EXECUTE", "0");
    issue_on(c, Device::Emu(0), "emu-no-exec");
    if let Device::Cuda(ordinal) = Device::cuda_if_available(0) {
        issue_on(c, Device::Cuda(ordinal), "cuda");
    }
}

criterion_group!(benches, issue);
criterion_main!(benches);
