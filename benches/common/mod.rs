//! What the criterion benches share: the devices, the (set, dtype) cases, and criterion
//! settings that keep `cargo bench` short for the large sets.
//!
//! Two environment variables narrow a run: `GRADSTEP_BENCH_SETS` (comma-separated set
//! names, e.g. `mixed1000,gpt2-124m`) and `GRADSTEP_BENCH_DTYPES` (`f32`, `f16`).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode, Throughput};
use gradstep::{DType, Device};

/// The public API the shared files below use (`gradstep bench` includes them with an
/// `api` module of its own).
#[allow(unused_imports)]
mod api {
    pub use gradstep::backend::CounterSnapshot;
    pub use gradstep::tensor::Rng;
    pub use gradstep::{graph, nn, optim, train, DType, Device, Error, Result, Tensor};
}

/// The benchmark cases of `gradstep bench`, one source for both.
#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/bench/cases.rs"]
pub mod cases;
/// The parameter sets of `gradstep bench` and `scripts/torch_bench.py`.
#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/bench/params.rs"]
pub mod params;
/// Timing with a synchronised device.
#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/bench/timing.rs"]
pub mod timing;

pub use params::ParamSet;
pub use timing::Setup;

/// The CPU, and the first CUDA GPU when there is one (never the emulator: it is not for
/// timing).
#[allow(dead_code)]
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if let d @ Device::Cuda(_) = Device::cuda_if_available(0) {
        v.push(d);
    }
    v
}

#[allow(dead_code)]
fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The (set, dtype) pairs of `gradstep bench` on `device` (the standard sets in f32 and
/// f16, but no f16 10x10M on the CPU), narrowed by the environment.
#[allow(dead_code)]
pub fn cases(device: Device) -> Vec<(ParamSet, DType)> {
    let sets = env_list("GRADSTEP_BENCH_SETS");
    let dtypes = env_list("GRADSTEP_BENCH_DTYPES");
    ParamSet::STANDARD
        .into_iter()
        .flat_map(|s| [(s, DType::F32), (s, DType::F16)])
        .filter(|&c| !(device == Device::Cpu && c == (ParamSet::TenBy10M, DType::F16)))
        .filter(|(s, _)| sets.as_ref().is_none_or(|v| v.contains(&s.name())))
        .filter(|(_, d)| {
            dtypes
                .as_ref()
                .is_none_or(|v| v.iter().any(|x| x == d.as_str()))
        })
        .collect()
}

/// Criterion settings for a group over `set`: few flat samples for the large sets.
#[allow(dead_code)]
pub fn configure(group: &mut BenchmarkGroup<'_, WallTime>, set: ParamSet, bytes: u64) {
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let large = set.numel() >= 10_000_000;
    group.warm_up_time(Duration::from_millis(if large { 500 } else { 300 }));
    group.measurement_time(Duration::from_secs(if large { 3 } else { 1 }));
    if bytes > 0 {
        group.throughput(Throughput::Bytes(bytes));
    }
}

/// `iters` synchronised calls of `f` (each after `setup`), for `iter_custom`.
#[allow(dead_code)]
pub fn timed(
    device: Device,
    iters: u64,
    setup: Setup<'_>,
    f: &mut dyn FnMut() -> gradstep::Result<()>,
) -> Duration {
    timing::timed_iters(device, iters, setup, f)
        .unwrap_or_else(|e| panic!("benchmark failed on {device}: {e}"))
}

/// The group name of a case: `zero/cpu/mixed1000/f32`.
#[allow(dead_code)]
pub fn group_name(what: &str, device: Device, set: ParamSet, dtype: DType) -> String {
    format!("{what}/{device}/{}/{}", set.name(), dtype.as_str())
}
