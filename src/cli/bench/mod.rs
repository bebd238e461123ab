//! Benchmarks of `zero_grad`, `step` and the quickstart training step, shared by
//! `gradstep bench` and the criterion benches (`benches/`).
//!
//! - [`params`]: the parameter sets (identical to `scripts/torch_bench.py`'s).
//! - [`cases`]: the measured operations, built once and run many times.
//! - [`timing`]: warm-up, median of many samples (synchronised on a GPU), and what one
//!   call asks of a GPU device (launches, memsets, host syncs).
//! - [`report`]: one record per case, JSON with the torch script's keys, a text table.
//! - [`plot`]: zeroing time against tensor count, as a PNG.
//!
//! On the emulator ([`Device::Emu`]) every case is run and counted, never timed: the
//! emulator is a correctness tool, not a timing one.

/// The public API that `params`, `cases` and `timing` use: the criterion benches include
/// those three files as they are, with an `api` module of their own.
mod api {
    pub use crate::backend::CounterSnapshot;
    pub use crate::tensor::Rng;
    pub use crate::{graph, nn, optim, train, DType, Device, Error, Result, Tensor};
}

pub(crate) mod cases;
pub(crate) mod command;
mod ddp;
pub(crate) mod params;
pub(crate) mod plot;
pub(crate) mod report;
pub(crate) mod timing;

pub use cases::{
    impl_name, CopyCase, MatmulCase, OptName, StepCase, TrainCase, ZeroCase, ZeroImpl, IMPLS,
};
pub use params::{make_params, ParamSet};
pub use report::{Meta, Record, Report};
pub use timing::{count_call, reborrow, time_calls, Setup, TimingOptions};

use crate::base::{Error, Result};
use crate::optim::Impl;
use crate::tensor::{DType, Device};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    /// `zero_grad` in every [`ZeroImpl`].
    Zero,
    /// `step` of every optimizer in every implementation.
    Step,
    /// The quickstart training step.
    Train,
    /// `clip_grad_norm_` (2-norm), multi-tensor and per tensor.
    Clip,
    /// The quickstart's matrix products (forward and both backward products of each
    /// layer), in GFLOP/s.
    Matmul,
}

impl What {
    /// Parses `zero`, `step`, `train`, `clip` or `matmul`.
    pub fn parse(s: &str) -> Result<What> {
        match s {
            "zero" => Ok(What::Zero),
            "step" => Ok(What::Step),
            "train" => Ok(What::Train),
            "clip" => Ok(What::Clip),
            "matmul" => Ok(What::Matmul),
            _ => Err(Error::invalid(
                "bench",
                format!("unknown benchmark '{s}' (expected zero, step, train, clip or matmul)"),
            )),
        }
    }
}

/// Bytes of each buffer of the copy-bandwidth measurement (the torch script's 256 MiB).
pub const COPY_BYTES: usize = 256 << 20;

/// Tensor counts of the zeroing sweep drawn by [`plot`] (the first N mixed tensors).
pub const SWEEP_COUNTS: [usize; 7] = [1, 3, 10, 30, 100, 300, 1000];

/// A benchmark run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Where to run.
    pub device: Device,
    /// What to measure, in order.
    pub what: Vec<What>,
    /// Parameter sets of the zero and step benchmarks.
    pub sets: Vec<ParamSet>,
    /// Dtypes of the zero and step benchmarks (and of the training step).
    pub dtypes: Vec<DType>,
    /// (set, dtype) pairs left out (the torch script leaves out f16 10x10M on the CPU).
    pub skip: Vec<(ParamSet, DType)>,
    /// Optimizers of the step benchmark.
    pub optimizers: Vec<OptName>,
    /// Step implementations.
    pub impls: Vec<Impl>,
    /// Zeroing implementations.
    pub zero_impls: Vec<ZeroImpl>,
    /// Also zero the first N mixed tensors for every N of [`SWEEP_COUNTS`] (for the plot).
    pub sweep: bool,
    /// Timing rules (ignored on the emulator).
    pub timing: TimingOptions,
    /// Bytes of each copy buffer (0: no copy measurement).
    pub copy_bytes: usize,
    /// Batch size of the training step.
    pub train_batch: usize,
    /// Also measure the training step replayed from a captured graph.
    pub train_graph: bool,
    /// Also measure the training step on this many data-parallel ranks with
    /// DistributedDataParallel (emulated ranks on the emulator, NCCL on CUDA).
    pub train_world_size: Option<usize>,
}

impl BenchConfig {
    /// The standard run on `device`: the three standard sets (only `mixed1000` on the
    /// emulator, where every kernel runs on the host), f32 and f16, every optimizer and
    /// implementation, the torch script's timing rules, batch 64 for training.
    pub fn new(device: Device, what: Vec<What>) -> BenchConfig {
        let sets = if device.is_emu() {
            vec![ParamSet::Mixed(1000)]
        } else {
            ParamSet::STANDARD.to_vec()
        };
        let skip = if device == Device::Cpu {
            vec![(ParamSet::TenBy10M, DType::F16)]
        } else {
            Vec::new()
        };
        BenchConfig {
            device,
            what,
            sets,
            dtypes: vec![DType::F32, DType::F16],
            skip,
            optimizers: OptName::ALL.to_vec(),
            impls: IMPLS.to_vec(),
            zero_impls: ZeroImpl::ALL.to_vec(),
            sweep: false,
            timing: TimingOptions::default(),
            copy_bytes: if device.is_emu() { 0 } else { COPY_BYTES },
            train_batch: 64,
            train_graph: false,
            train_world_size: None,
        }
    }

    /// The (set, dtype) pairs measured, in order.
    pub fn cases(&self) -> impl Iterator<Item = (ParamSet, DType)> + '_ {
        self.sets
            .iter()
            .flat_map(|&s| self.dtypes.iter().map(move |&d| (s, d)))
            .filter(|c| !self.skip.contains(c))
    }
}

/// Measures one case: on a GPU device, one warm-up call and then one counted call; on
/// every device but the emulator, the timing. Fills `rec`.
fn measure(
    cfg: &BenchConfig,
    copy_gbps: Option<f64>,
    rec: &mut Record,
    mut setup: Setup<'_>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    if cfg.device.is_gpu() {
        if let Some(s) = reborrow(&mut setup) {
            s()?;
        }
        f()?;
        rec.counts = count_call(cfg.device, reborrow(&mut setup), f)?;
    }
    if !cfg.device.is_emu() {
        let t = time_calls(cfg.device, &cfg.timing, setup, f)?;
        rec.set_timing(t, copy_gbps);
    }
    Ok(())
}

fn base_record(bench: &str, set: ParamSet, dtype: DType) -> Record {
    Record {
        bench: bench.into(),
        set: Some(set.name()),
        dtype: Some(dtype.as_str().into()),
        tensors: set.tensors(),
        numel: set.numel(),
        ..Default::default()
    }
}

/// The copy bandwidth of `device` in GB/s (bytes read plus written), with its record.
pub fn copy_bandwidth(cfg: &BenchConfig) -> Result<Record> {
    let case = CopyCase::new(cfg.device, cfg.copy_bytes)?;
    let mut rec = Record {
        bench: "copy".into(),
        dtype: Some("f32".into()),
        tensors: 1,
        numel: case.bytes() as usize / 8,
        bytes: case.bytes(),
        ..Default::default()
    };
    measure(cfg, None, &mut rec, None, &mut || case.run())?;
    Ok(rec)
}

/// The parameters of `set` with gradients, or `OutOfMemory` before anything is made when
/// those alone are more than the memory there is.
fn set_params(cfg: &BenchConfig, set: ParamSet, dtype: DType) -> Result<Vec<crate::Tensor>> {
    crate::base::host_backed_bytes(cfg.device, set.numel(), 2 * dtype.size_in_bytes())?;
    make_params(&set.shapes(), dtype, cfg.device, 0)
}

/// `rec` marked as failed with `e`.
fn failed(mut rec: Record, e: &Error) -> Record {
    rec.error = Some(e.to_string());
    rec
}

fn zero_records(
    cfg: &BenchConfig,
    set: ParamSet,
    dtype: DType,
    impls: &[ZeroImpl],
    copy: Option<f64>,
) -> Vec<Record> {
    let base = |imp: ZeroImpl| Record {
        imp: Some(imp.name().into()),
        ..base_record("zero", set, dtype)
    };
    let params = match set_params(cfg, set, dtype) {
        Ok(p) => p,
        Err(e) => return impls.iter().map(|&i| failed(base(i), &e)).collect(),
    };
    // The arena rebinds the grads: measure it last.
    let mut order = impls.to_vec();
    order.sort_by_key(|&i| i == ZeroImpl::Arena);
    let mut out = Vec::new();
    for imp in order {
        let mut rec = base(imp);
        let result = (|| -> Result<()> {
            let case = ZeroCase::new(&params, imp)?;
            rec.bytes = case.bytes();
            let mut setup = || case.setup();
            let setup: Setup<'_> = if case.needs_setup() {
                Some(&mut setup)
            } else {
                None
            };
            measure(cfg, copy, &mut rec, setup, &mut || case.run())?;
            case.setup()
        })();
        out.push(match result {
            Ok(()) => rec,
            Err(e) => failed(rec, &e),
        });
    }
    // Table order, whatever the measuring order.
    out.sort_by_key(|r| {
        impls
            .iter()
            .position(|i| Some(i.name()) == r.imp.as_deref())
    });
    out
}

fn step_records(cfg: &BenchConfig, set: ParamSet, dtype: DType, copy: Option<f64>) -> Vec<Record> {
    let base = |opt: OptName, imp: Impl| Record {
        optimizer: Some(opt.name().into()),
        imp: Some(impl_name(imp).into()),
        ..base_record("step", set, dtype)
    };
    let all = || {
        cfg.optimizers
            .iter()
            .flat_map(|&o| cfg.impls.iter().map(move |&i| (o, i)))
    };
    let params = match set_params(cfg, set, dtype) {
        Ok(p) => p,
        Err(e) => return all().map(|(o, i)| failed(base(o, i), &e)).collect(),
    };
    all()
        .map(|(opt, imp)| {
            let mut rec = base(opt, imp);
            let result = (|| -> Result<()> {
                let mut case = StepCase::new(&params, opt, imp)?;
                rec.bytes = case.bytes();
                measure(cfg, copy, &mut rec, None, &mut || case.run())
            })();
            match result {
                Ok(()) => rec,
                Err(e) => failed(rec, &e),
            }
        })
        .collect()
}

/// `clip_grad_norm_(params, max_norm, 2)` as torch's `foreach=True` (`foreach`, one
/// multi-tensor launch set per dtype) and `foreach=False` (`forloop`). `max_norm` is so
/// large that the coefficient is 1: the grads keep their values from call to call, and
/// each call still reads every grad once and writes it once (as torch does).
fn clip_records(cfg: &BenchConfig, set: ParamSet, dtype: DType, copy: Option<f64>) -> Vec<Record> {
    let forms = [("foreach", None), ("forloop", Some(false))];
    let base = |name: &str| Record {
        imp: Some(name.into()),
        ..base_record("clip", set, dtype)
    };
    let params = match set_params(cfg, set, dtype) {
        Ok(p) => p,
        Err(e) => return forms.iter().map(|(n, _)| failed(base(n), &e)).collect(),
    };
    forms
        .iter()
        .map(|&(name, foreach)| {
            let mut rec = base(name);
            rec.bytes = 2 * (set.numel() * dtype.size_in_bytes()) as u64;
            let mut clip =
                || crate::optim::clip_grad_norm_(&params, 1e30, 2.0, false, foreach).map(drop);
            match measure(cfg, copy, &mut rec, None, &mut clip) {
                Ok(()) => rec,
                Err(e) => failed(rec, &e),
            }
        })
        .collect()
}

/// The quickstart's products at the training batch, one record each.
fn matmul_records(cfg: &BenchConfig, dtype: DType) -> Vec<Record> {
    let base = || Record {
        bench: "matmul".into(),
        dtype: Some(dtype.as_str().into()),
        tensors: 2,
        ..Default::default()
    };
    let cases = match MatmulCase::quickstart(cfg.device, dtype, cfg.train_batch) {
        Ok(c) => c,
        Err(e) => return vec![failed(base(), &e)],
    };
    cases
        .iter()
        .map(|case| {
            let (m, k, n) = case.shape;
            let mut rec = Record {
                set: Some(case.name.clone()),
                numel: m * n,
                flops: case.flops(),
                bytes: ((m * k + k * n + m * n) * dtype.size_in_bytes()) as u64,
                ..base()
            };
            match measure(cfg, None, &mut rec, None, &mut || case.run()) {
                Ok(()) => rec,
                Err(e) => failed(rec, &e),
            }
        })
        .collect()
}

/// Eager training steps before a training record is counted or timed.
const TRAIN_SETTLE_STEPS: usize = 4;

/// The quickstart training step, eager or (`graph`) replayed from a captured graph.
fn train_record(cfg: &BenchConfig, dtype: DType, graph: bool) -> Record {
    let mut rec = Record {
        bench: "train".into(),
        set: Some(format!("quickstart-b{}", cfg.train_batch)),
        dtype: Some(dtype.as_str().into()),
        optimizer: Some("sgd".into()),
        imp: Some(if graph { "fused+graph" } else { "fused" }.into()),
        ..Default::default()
    };
    let result = (|| -> Result<()> {
        let mut case = TrainCase::new(cfg.device, dtype, cfg.train_batch, 0)?;
        // The caching allocator and the optimizer's table cache settle over the first
        // steps (the old grads are live during the second step's forward pass; the
        // grads of the first three steps land at new addresses): count a steady step.
        for _ in 0..TRAIN_SETTLE_STEPS {
            case.run()?;
        }
        if graph {
            case.capture()?;
        }
        (rec.tensors, rec.numel) = case.size();
        measure(cfg, None, &mut rec, None, &mut || case.run())
    })();
    match result {
        Ok(()) => rec,
        Err(e) => failed(rec, &e),
    }
}

/// The metadata of a run on `device` (the device's name, threads, load average).
pub fn meta(device: Device) -> Meta {
    let device_name = match device {
        Device::Cpu => cpu_model().unwrap_or_else(|| "cpu".into()),
        _ => device.name().unwrap_or_else(|e| e.to_string()),
    };
    Meta {
        tool: "gradstep".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        device: device.to_string(),
        device_name,
        threads: rayon::current_num_threads(),
        cpu_isa: Some(crate::backend::cpu::vector_isa()),
        copy_gbps: None,
        loadavg: loadavg(),
    }
}

/// The CPU model from `/proc/cpuinfo`, where there is one.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`, where there is one.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    v.try_into().ok()
}

/// Runs the benchmarks of `cfg`, calling `on_record` with each record as it is measured.
/// A case that fails (e.g. out of memory) becomes a record with [`Record::error`] set,
/// and the run goes on; only a failing copy measurement ends the run.
pub fn run(cfg: &BenchConfig, on_record: &mut dyn FnMut(&Record)) -> Result<Report> {
    if cfg.what.is_empty() {
        return Err(Error::invalid(
            "bench",
            "nothing to measure (expected zero, step, train, clip or matmul)",
        ));
    }
    let mut report = Report {
        meta: meta(cfg.device),
        results: Vec::new(),
    };
    let mut push = |report: &mut Report, r: Record| {
        on_record(&r);
        report.results.push(r);
    };
    let mut copy = None;
    if cfg.copy_bytes > 0 && !cfg.device.is_emu() {
        let r = copy_bandwidth(cfg)?;
        copy = r.gbps;
        report.meta.copy_gbps = copy;
        push(&mut report, r);
    }
    for what in &cfg.what {
        match what {
            What::Zero => {
                for (set, dtype) in cfg.cases() {
                    for r in zero_records(cfg, set, dtype, &cfg.zero_impls, copy) {
                        push(&mut report, r);
                    }
                }
                if cfg.sweep {
                    let impls = [ZeroImpl::PerTensor, ZeroImpl::Foreach, ZeroImpl::Arena];
                    for &dtype in &cfg.dtypes {
                        for n in SWEEP_COUNTS {
                            for r in zero_records(cfg, ParamSet::Mixed(n), dtype, &impls, copy) {
                                push(&mut report, r);
                            }
                        }
                    }
                }
            }
            What::Step => {
                for (set, dtype) in cfg.cases() {
                    for r in step_records(cfg, set, dtype, copy) {
                        push(&mut report, r);
                    }
                }
            }
            What::Clip => {
                for (set, dtype) in cfg.cases() {
                    for r in clip_records(cfg, set, dtype, copy) {
                        push(&mut report, r);
                    }
                }
            }
            What::Matmul => {
                for &dtype in &cfg.dtypes {
                    for r in matmul_records(cfg, dtype) {
                        push(&mut report, r);
                    }
                }
            }
            What::Train => {
                for &dtype in &cfg.dtypes {
                    push(&mut report, train_record(cfg, dtype, false));
                    if cfg.train_graph {
                        push(&mut report, train_record(cfg, dtype, true));
                    }
                    if let Some(world) = cfg.train_world_size {
                        let plain = report
                            .results
                            .iter()
                            .rev()
                            .find(|r| r.bench == "train" && r.imp.as_deref() == Some("fused"))
                            .and_then(|r| r.seconds);
                        push(&mut report, ddp::record(cfg, dtype, world, plain));
                    }
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(device: Device, what: What) -> BenchConfig {
        let mut cfg = BenchConfig::new(device, vec![what]);
        cfg.sets = vec![ParamSet::Mixed(3)];
        cfg.dtypes = vec![DType::F32];
        cfg.timing = TimingOptions::quick();
        cfg.copy_bytes = 1 << 16;
        cfg
    }

    #[test]
    fn cpu_matmul_records_count_the_quickstart_products() {
        let mut cfg = quick(Device::Cpu, What::Matmul);
        cfg.copy_bytes = 0;
        cfg.train_batch = 3;
        cfg.dtypes = vec![DType::F32, DType::F16];
        let report = run(&cfg, &mut |_| {}).unwrap();
        assert_eq!(report.results.len(), 2 * 9);
        let fc1 = &report.results[0];
        assert_eq!(fc1.set.as_deref(), Some("fc1.forward"));
        assert_eq!(fc1.flops, 2 * 3 * 784 * 512);
        assert_eq!(fc1.bytes, 4 * (3 * 784 + 784 * 512 + 3 * 512));
        let gw3 = &report.results[8];
        assert_eq!(gw3.set.as_deref(), Some("fc3.grad_weight"));
        assert_eq!((gw3.numel, gw3.flops), (10 * 512, 2 * 10 * 3 * 512));
        for r in &report.results {
            let (s, g) = (r.seconds.unwrap(), r.gflops.unwrap());
            assert!((g - r.flops as f64 / s / 1e9).abs() <= 1e-9 * g, "{r:?}");
        }
        assert!(report.table().contains("GFLOP/s"));
        cfg.train_batch = 0;
        let report = run(&cfg, &mut |_| {}).unwrap();
        assert!(report.failures() > 0, "a zero batch is refused");
    }

    #[test]
    fn cpu_zero_and_step_records_are_timed_and_complete() {
        let mut cfg = quick(Device::Cpu, What::Zero);
        cfg.what.push(What::Step);
        let mut seen = 0;
        let report = run(&cfg, &mut |_| seen += 1).unwrap();
        // copy + 4 zero + 3 optimizers x 3 impls.
        assert_eq!(report.results.len(), 1 + 4 + 9);
        assert_eq!(seen, report.results.len());
        assert!(report.meta.copy_gbps.unwrap() > 0.0);
        let numel: usize = params::mixed_sizes(3).iter().sum();
        for r in &report.results[1..] {
            assert!(r.seconds.unwrap() > 0.0, "{r:?}");
            assert_eq!(r.numel, numel);
            assert!(r.counts.is_none());
        }
        let adam = report
            .results
            .iter()
            .find(|r| r.optimizer.as_deref() == Some("adam"))
            .unwrap();
        assert_eq!(adam.bytes, 7 * 4 * numel as u64);
        let sgd = report
            .results
            .iter()
            .find(|r| r.optimizer.as_deref() == Some("sgd"))
            .unwrap();
        assert_eq!(sgd.bytes, 5 * 4 * numel as u64);
        let zero = &report.results[1];
        assert_eq!(
            (zero.imp.as_deref(), zero.bytes),
            (Some("per_tensor"), 4 * numel as u64)
        );
    }

    #[test]
    fn cpu_steps_change_the_parameters() {
        let params = make_params(&ParamSet::Mixed(2).shapes(), DType::F32, Device::Cpu, 3).unwrap();
        let before: Vec<Vec<f64>> = params.iter().map(|p| p.to_vec_f64().unwrap()).collect();
        let mut case = StepCase::new(&params, OptName::AdamW, Impl::Fused).unwrap();
        case.run().unwrap();
        for (p, b) in params.iter().zip(&before) {
            let after = p.to_vec_f64().unwrap();
            // Adam's first step moves every element by about lr (sign of the grad).
            assert!(after
                .iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() > 5e-4 && (a - b).abs() < 2e-3));
        }
    }

    #[test]
    fn set_to_none_case_restores_the_grads() {
        let params = make_params(&ParamSet::Mixed(2).shapes(), DType::F32, Device::Cpu, 3).unwrap();
        let case = ZeroCase::new(&params, ZeroImpl::SetToNone).unwrap();
        case.run().unwrap();
        assert!(params.iter().all(|p| p.grad().is_none()));
        case.setup().unwrap();
        assert!(params.iter().all(|p| p.grad().is_some()));
        let zero = ZeroCase::new(&params, ZeroImpl::PerTensor).unwrap();
        zero.run().unwrap();
        assert!(params.iter().all(|p| p
            .grad()
            .unwrap()
            .to_vec_f64()
            .unwrap()
            .iter()
            .all(|&x| x == 0.0)));
    }

    #[test]
    fn emu_data_parallel_step_reports_its_bucket_and_collective() {
        let mut cfg = quick(Device::Emu(0), What::Train);
        cfg.train_batch = 4;
        cfg.train_world_size = Some(2);
        let report = run(&cfg, &mut |_| {}).unwrap();
        let r = report
            .results
            .iter()
            .find(|r| r.imp.as_deref() == Some("fused+ddp"))
            .unwrap();
        assert!(r.error.is_none(), "{r:?}");
        let d = r.ddp.unwrap();
        // 669,706 parameters in one 25 MiB bucket, each view aligned to 64 floats.
        let bytes = 4 * (401_408 + 512 + 262_144 + 512 + 5_120 + 64);
        assert_eq!((d.world_size, d.buckets, d.allreduce_bytes), (2, 1, bytes));
        // The one bucket completes with the first layer's grads, the last of backward.
        assert_eq!(d.issued_in_backward, 0.0);
        let c = r.counts.unwrap();
        assert_eq!((c.collectives, c.collective_bytes), (1, bytes));
        assert!(
            r.seconds.is_none() && d.overlap.is_none(),
            "the emulator is not timed"
        );
        assert!(report
            .table()
            .contains("ddp   2 ranks: 1 all-reduce(s) per step, 2.68 MB"));
        let mut cpu = quick(Device::Cpu, What::Train);
        cpu.train_world_size = Some(2);
        let r = run(&cpu, &mut |_| {}).unwrap();
        let e = r.results.last().unwrap().error.clone().unwrap();
        assert!(e.contains("--world-size 2 needs --device emu"), "{e}");
    }

    #[test]
    fn what_parses() {
        assert_eq!(What::parse("step").unwrap(), What::Step);
        assert!(What::parse("steps").is_err());
        assert!(run(&BenchConfig::new(Device::Cpu, vec![]), &mut |_| {}).is_err());
    }
}
