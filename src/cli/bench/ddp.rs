//! The quickstart's training step on N data-parallel ranks (`bench train --world-size
//! N`): each rank trains its own replica through DistributedDataParallel, one host thread
//! per rank. Reports what rank 0's step asked of its device (collectives and their bytes
//! included), the buckets per step, the share of their bytes issued while backward was
//! still running, and on a timed device the step, the all-reduces alone and how much of
//! them the step hid.

use std::time::Instant;

use super::report::{DdpStats, Record};
use super::timing::CallCounts;
use super::{count_call, failed, BenchConfig, TrainCase, TRAIN_SETTLE_STEPS};
use crate::base::{Error, Result};
use crate::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
use crate::tensor::{DType, Device};

/// Steps timed on every rank: a fixed count, since every rank must run as many.
const TIMED_STEPS: usize = 20;

/// The ranks of `device`: emulated ones on `emu`, NCCL over the first GPUs on `cuda`.
fn groups(device: Device, world: usize) -> Result<Vec<ProcessGroup>> {
    let _timeout = crate::distributed::timeout_from_env()?;
    match device {
        #[cfg(feature = "emu")]
        Device::Emu(0) => ProcessGroup::emulated(world, _timeout),
        #[cfg(feature = "nccl")]
        Device::Cuda(0) => ProcessGroup::nccl_local(&(0..world).collect::<Vec<_>>()),
        d => Err(Error::invalid(
            "bench",
            format!(
                "--world-size {world} needs --device emu, or cuda in a build with the nccl \
                 feature (not {d})"
            ),
        )),
    }
}

/// What one rank measured.
struct Measured {
    /// `(tensors, elements)` of the parameters.
    size: (usize, usize),
    counts: Option<CallCounts>,
    stats: DdpStats,
    step_seconds: Option<f64>,
}

/// Seconds per call of `f` over [`TIMED_STEPS`] calls between two synchronisations.
fn time(device: Device, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    device.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..TIMED_STEPS {
        f()?;
    }
    device.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / TIMED_STEPS as f64)
}

fn rank(cfg: &BenchConfig, dtype: DType, pg: ProcessGroup) -> Result<Measured> {
    let device = pg.device();
    let world = pg.world_size();
    let mut case = TrainCase::new(device, dtype, cfg.train_batch, 0)?;
    let ddp = DistributedDataParallel::new(case.parameters(), pg, DdpOptions::default())?;
    for _ in 0..TRAIN_SETTLE_STEPS {
        case.run()?;
    }
    let counts = count_call(device, None, &mut || case.run())?;
    let log = ddp.bucket_log();
    let total: usize = log.iter().map(|b| b.bytes).sum();
    let early: usize = log
        .iter()
        .filter(|b| b.grads_pending > 0)
        .map(|b| b.bytes)
        .sum();
    let mut stats = DdpStats {
        world_size: world,
        buckets: log.len(),
        allreduce_bytes: total as u64,
        issued_in_backward: early as f64 / total.max(1) as f64,
        ..Default::default()
    };
    let mut step_seconds = None;
    if !device.is_emu() {
        step_seconds = Some(time(device, &mut || case.run())?);
        // The buckets again without a backward pass: the all-reduces alone.
        stats.allreduce_seconds = Some(time(device, &mut || ddp.reduce_without_backward())?);
    }
    Ok(Measured {
        size: case.size(),
        counts,
        stats,
        step_seconds,
    })
}

/// The record of the data-parallel step on `world` ranks; `plain` is the seconds of the
/// same step without DDP, measured before in this run.
pub(super) fn record(cfg: &BenchConfig, dtype: DType, world: usize, plain: Option<f64>) -> Record {
    let rec = Record {
        bench: "train".into(),
        set: Some(format!("quickstart-b{}x{world}", cfg.train_batch)),
        dtype: Some(dtype.as_str().into()),
        optimizer: Some("sgd".into()),
        imp: Some("fused+ddp".into()),
        ..Default::default()
    };
    let measured = groups(cfg.device, world).and_then(|groups| {
        std::thread::scope(|s| {
            let ranks: Vec<_> = groups
                .into_iter()
                .map(|pg| s.spawn(move || rank(cfg, dtype, pg)))
                .collect();
            let mut all = ranks.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("bench", "a rank's thread panicked")))
            });
            let first = all
                .next()
                .unwrap_or_else(|| Err(Error::invalid("bench", "no rank")));
            // Every rank's error counts; rank 0's numbers are reported.
            all.try_fold(first?, |m, r| r.map(|_| m))
        })
    });
    let m = match measured {
        Ok(m) => m,
        Err(e) => return failed(rec, &e),
    };
    let mut stats = m.stats;
    stats.overlap = match (plain, stats.allreduce_seconds, m.step_seconds) {
        (Some(p), Some(a), Some(t)) if a > 0.0 => Some(((p + a - t) / a).clamp(0.0, 1.0)),
        _ => None,
    };
    Record {
        tensors: m.size.0,
        numel: m.size.1,
        counts: m.counts,
        seconds: m.step_seconds,
        per_second: m.step_seconds.map(|s| 1.0 / s),
        ddp: Some(stats),
        ..rec
    }
}
