//! Timing of repeated calls (warm-up, then the median of many samples, synchronised on a
//! GPU) and counting what one call asks of a GPU device.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::api::{CounterSnapshot, Device, Result};

/// How long and how often to time a call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimingOptions {
    /// Untimed calls first (module load, state creation, caches).
    pub warmup: usize,
    /// At least this many samples.
    pub min_runs: usize,
    /// At most this many samples.
    pub max_runs: usize,
    /// Keep sampling (up to `max_runs`) until this many seconds have passed.
    pub min_seconds: f64,
    /// On a GPU, a sample repeats the call between two synchronisations until it lasts at
    /// least this long, so that the synchronisation's own latency is amortised (calls that
    /// need a setup are always sampled one at a time).
    pub min_sample_seconds: f64,
}

impl Default for TimingOptions {
    /// Two warm-up calls, then at least 5 and at most 200 samples over at least a second
    /// (the torch script's rule); GPU samples of at least 1 ms.
    fn default() -> Self {
        TimingOptions {
            warmup: 2,
            min_runs: 5,
            max_runs: 200,
            min_seconds: 1.0,
            min_sample_seconds: 1e-3,
        }
    }
}

impl TimingOptions {
    /// A short run for smoke tests and `--quick`: one warm-up, three samples.
    pub fn quick() -> Self {
        TimingOptions {
            warmup: 1,
            min_runs: 3,
            max_runs: 3,
            min_seconds: 0.0,
            min_sample_seconds: 0.0,
        }
    }
}

/// The result of timing a call.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Median seconds per call.
    pub median: f64,
    /// Fastest sample, seconds per call.
    pub min: f64,
    /// Slowest sample, seconds per call.
    pub max: f64,
    /// Number of samples.
    pub samples: usize,
    /// Calls per sample.
    pub calls_per_sample: usize,
}

/// The median of `v` (the mean of the two middle values for an even count); None when
/// empty. NaN sorts last.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// Waits until `device` has finished all queued work (a no-op on the CPU and on the
/// emulator, which runs synchronously).
pub fn sync(device: Device) -> Result<()> {
    match device {
        Device::Cuda(_) => device.synchronize(),
        Device::Cpu | Device::Emu(_) => Ok(()),
    }
}

/// An optional untimed call before each timed one.
pub type Setup<'a> = Option<&'a mut dyn FnMut() -> Result<()>>;

/// Reborrows a [`Setup`] for a shorter use.
pub fn reborrow<'b>(s: &'b mut Setup<'_>) -> Setup<'b> {
    match s {
        Some(f) => Some(&mut **f),
        None => None,
    }
}

fn run_setup(s: &mut Setup<'_>) -> Result<()> {
    match s {
        Some(f) => f(),
        None => Ok(()),
    }
}

/// Times `f`: warm-up calls, then samples until [`TimingOptions`] is satisfied. Each
/// sample runs `setup` (untimed, when given), synchronises, runs `f` (several times on a
/// GPU when one call is shorter than `min_sample_seconds` and there is no setup),
/// synchronises, and reads the clock.
pub fn time_calls(
    device: Device,
    opts: &TimingOptions,
    mut setup: Setup<'_>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..opts.warmup {
        run_setup(&mut setup)?;
        f()?;
    }
    let sample = |inner: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        sync(device)?;
        let t0 = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        sync(device)?;
        Ok(t0.elapsed().as_secs_f64() / inner as f64)
    };
    let mut inner = 1;
    if setup.is_none() && matches!(device, Device::Cuda(_)) && opts.min_sample_seconds > 0.0 {
        let one = sample(1, f)?;
        if one < opts.min_sample_seconds {
            inner = ((opts.min_sample_seconds / one.max(1e-9)).ceil() as usize).clamp(1, 1000);
        }
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < opts.min_runs.max(1)
        || (times.len() < opts.max_runs && start.elapsed().as_secs_f64() < opts.min_seconds)
    {
        run_setup(&mut setup)?;
        times.push(sample(inner, f)?);
    }
    Ok(Timing {
        median: median(&times).unwrap_or(f64::NAN),
        min: times.iter().copied().fold(f64::INFINITY, f64::min),
        max: times.iter().copied().fold(0.0, f64::max),
        samples: times.len(),
        calls_per_sample: inner,
    })
}

/// The total time of `iters` calls of `f`, each after an untimed `setup` (when given) and
/// between two synchronisations of `device` (for criterion's `iter_custom`).
#[allow(dead_code)] // `gradstep bench` times with `time_calls`; the criterion benches use this
pub fn timed_iters(
    device: Device,
    iters: u64,
    mut setup: Setup<'_>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    if setup.is_none() {
        sync(device)?;
        let t0 = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        sync(device)?;
        return Ok(t0.elapsed());
    }
    for _ in 0..iters {
        run_setup(&mut setup)?;
        sync(device)?;
        let t0 = Instant::now();
        f()?;
        sync(device)?;
        total += t0.elapsed();
    }
    Ok(total)
}

/// What one call asked of a GPU device, from its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    /// Kernel launches (vendor GEMMs included).
    pub launches: u64,
    /// Memsets.
    pub memsets: u64,
    /// Host synchronisations (device-to-host copies included).
    pub syncs: u64,
    /// Host-to-device copies.
    pub htod: u64,
    /// Device-to-host copies.
    pub dtoh: u64,
    /// Device-to-device copies.
    pub dtod: u64,
    /// Driver allocations (the caching allocator's misses).
    pub allocs: u64,
    /// Driver frees.
    #[serde(default)]
    pub frees: u64,
    /// Captured graphs launched.
    #[serde(default)]
    pub graph_launches: u64,
    /// Collectives issued (all-reduces of a data-parallel step).
    #[serde(default)]
    pub collectives: u64,
    /// Bytes sent into those collectives.
    #[serde(default)]
    pub collective_bytes: u64,
}

impl From<CounterSnapshot> for CallCounts {
    fn from(s: CounterSnapshot) -> Self {
        CallCounts {
            launches: s.launches,
            memsets: s.memsets,
            syncs: s.syncs,
            htod: s.htod,
            dtoh: s.dtoh,
            dtod: s.dtod,
            allocs: s.allocs,
            frees: s.frees,
            graph_launches: s.graph_launches,
            collectives: s.collectives,
            collective_bytes: s.collective_bytes,
        }
    }
}

/// Runs `f` once (after `setup`, uncounted) and returns what it asked of the device:
/// None on the CPU, which has no counters.
pub fn count_call(
    device: Device,
    setup: Setup<'_>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Option<CallCounts>> {
    if !device.is_gpu() {
        return Ok(None);
    }
    if let Some(s) = setup {
        s()?;
    }
    let before = device.counters()?;
    f()?;
    let after = device.counters()?;
    Ok(Some((after - before).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A call that counts itself in `n`.
    fn counter(n: &Cell<u32>) -> impl FnMut() -> Result<()> + '_ {
        move || {
            n.set(n.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn time_calls_counts_warmup_setup_and_samples() {
        let opts = TimingOptions {
            warmup: 2,
            min_runs: 4,
            max_runs: 4,
            min_seconds: 0.0,
            min_sample_seconds: 0.0,
        };
        let (setups, calls) = (Cell::new(0), Cell::new(0));
        let (mut setup, mut call) = (counter(&setups), counter(&calls));
        let t = time_calls(Device::Cpu, &opts, Some(&mut setup), &mut call).unwrap();
        assert_eq!((setups.get(), calls.get()), (6, 6));
        assert_eq!((t.samples, t.calls_per_sample), (4, 1));
        assert!(t.min <= t.median && t.median <= t.max);
    }

    #[test]
    fn timed_iters_runs_setup_before_every_call() {
        let (setups, calls) = (Cell::new(0), Cell::new(0));
        let (mut setup, mut call) = (counter(&setups), counter(&calls));
        timed_iters(Device::Cpu, 3, Some(&mut setup), &mut call).unwrap();
        assert_eq!((setups.get(), calls.get()), (3, 3));
        timed_iters(Device::Cpu, 2, None, &mut call).unwrap();
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn time_calls_propagates_errors() {
        let r = time_calls(Device::Cpu, &TimingOptions::quick(), None, &mut || {
            Err(crate::Error::invalid("test", "boom"))
        });
        assert!(r.is_err());
    }

    #[test]
    fn counts_on_the_emulator() {
        let t = crate::Tensor::zeros(&[1000], crate::DType::F32, Device::Emu(0)).unwrap();
        let c = count_call(Device::Emu(0), None, &mut || t.fill_(1.0))
            .unwrap()
            .unwrap();
        // Other tests may use the emulator at the same time: at least this fill is counted.
        assert!(c.launches + c.memsets >= 1, "{c:?}");
        assert!(count_call(Device::Cpu, None, &mut || Ok(()))
            .unwrap()
            .is_none());
    }
}
