//! What the criterion benches share: the devices, the (set, dtype) cases, and criterion
//! settings that keep `cargo bench` short for the large sets.
//!
//! Two environment variables narrow a run: `GRADSTEP_BENCH_SETS` (comma-separated set
//! names, e.g. `mixed1000,gpt2-124m`) and `GRADSTEP_BENCH_DTYPES` (`f32`, `f16`).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode, Throughput};
use gradstep::bench::{timed_iters, BenchConfig, ParamSet, Setup};
use gradstep::{DType, Device};

/// The CPU, and the first CUDA GPU when there is one (never the emulator: it is not for
/// timing).
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if let d @ Device::Cuda(_) = Device::cuda_if_available(0) {
        v.push(d);
    }
    v
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The (set, dtype) pairs of `gradstep bench` on `device`, narrowed by the environment.
pub fn cases(device: Device) -> Vec<(ParamSet, DType)> {
    let cfg = BenchConfig::new(device, Vec::new());
    let sets = env_list("GRADSTEP_BENCH_SETS");
    let dtypes = env_list("GRADSTEP_BENCH_DTYPES");
    cfg.cases()
        .filter(|(s, _)| sets.as_ref().is_none_or(|v| v.contains(&s.name())))
        .filter(|(_, d)| {
            dtypes
                .as_ref()
                .is_none_or(|v| v.iter().any(|x| x == d.as_str()))
        })
        .collect()
}

/// Criterion settings for a group over `set`: few flat samples for the large sets.
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
pub fn timed(
    device: Device,
    iters: u64,
    setup: Setup<'_>,
    f: &mut dyn FnMut() -> gradstep::Result<()>,
) -> Duration {
    timed_iters(device, iters, setup, f)
        .unwrap_or_else(|e| panic!("benchmark failed on {device}: {e}"))
}

/// The group name of a case: `zero/cpu/mixed1000/f32`.
pub fn group_name(what: &str, device: Device, set: ParamSet, dtype: DType) -> String {
    format!("{what}/{device}/{}/{}", set.name(), dtype.as_str())
}
