//! `gradstep bench`: times `zero_grad`, `step` and the quickstart training step, prints a
//! table, and writes JSON (for `scripts/`) and a PNG of the zeroing sweep on request.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::bench::{self, plot, BenchConfig, OptName, ParamSet, TimingOptions, What};
use crate::optim::Impl;
use crate::{DType, Device, Error, Result};
use clap::Args;

/// Arguments of `gradstep bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure: zero, step, train, clip, matmul (one or more, in order).
    #[arg(required = true, value_parser = parse_what)]
    pub what: Vec<What>,
    /// Where to run: cpu, cuda, cuda:N, emu (launch counts only, no times) or auto.
    #[arg(long, default_value = "auto", value_parser = crate::cli::parse_device)]
    pub device: Device,
    /// A parameter set: 10x10M, gpt2-124m or mixedN (repeatable; default: 10x10M,
    /// gpt2-124m and mixed1000, only mixed1000 on emu).
    #[arg(long = "set", value_parser = parse_set)]
    pub sets: Vec<ParamSet>,
    /// A dtype: f32, f16 or bf16 (repeatable; default f32 and f16; training defaults to
    /// f32).
    #[arg(long = "dtype", value_parser = parse_dtype)]
    pub dtypes: Vec<DType>,
    /// An optimizer of the step benchmark: sgd (momentum 0.9), adam, adamw (repeatable;
    /// default all).
    #[arg(long = "optimizer", value_parser = parse_opt)]
    pub optimizers: Vec<OptName>,
    /// A step implementation: forloop, foreach, fused (repeatable; default all).
    #[arg(long = "impl", value_parser = parse_impl)]
    pub impls: Vec<Impl>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also zero the first 1, 3, ..., 1000 mixed tensors and plot time against tensor
    /// count for per-tensor, foreach and arena zeroing into this PNG (needs `zero`).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Keep sampling each case for at least this many seconds (default 1).
    #[arg(long, value_name = "SECONDS")]
    pub min_time: Option<f64>,
    /// One warm-up call and three samples per case (a smoke test, not a measurement).
    #[arg(long)]
    pub quick: bool,
    /// Batch size of the training step (and the rows of the matmul benchmark's products).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Also time the training step replayed from a captured graph (cuda, emu).
    #[arg(long)]
    pub graph: bool,
    /// Also run the training step on N data-parallel ranks with DistributedDataParallel
    /// (emu: emulated ranks, counted; cuda: NCCL over the first N GPUs, timed): buckets
    /// per step, all-reduce bytes and time, and how much of it backward hid.
    #[arg(long, value_name = "N")]
    pub world_size: Option<usize>,
    /// Size of each buffer of the copy-bandwidth measurement, MiB (0: skip it).
    #[arg(long, value_name = "MIB")]
    pub copy_mib: Option<usize>,
}

fn parse_what(s: &str) -> std::result::Result<What, String> {
    What::parse(s).map_err(|e| e.to_string())
}

fn parse_set(s: &str) -> std::result::Result<ParamSet, String> {
    ParamSet::parse(s).map_err(|e| e.to_string())
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match DType::parse(s) {
        Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
        _ => Err(format!(
            "unsupported dtype '{s}' (expected f32, f16 or bf16)"
        )),
    }
}

fn parse_opt(s: &str) -> std::result::Result<OptName, String> {
    OptName::parse(s).map_err(|e| e.to_string())
}

fn parse_impl(s: &str) -> std::result::Result<Impl, String> {
    crate::train::parse_impl(s).map_err(|e| e.to_string())
}

/// The run described by the arguments.
fn config(args: &BenchArgs) -> Result<BenchConfig> {
    let mut cfg = BenchConfig::new(args.device, args.what.clone());
    if !args.sets.is_empty() {
        cfg.sets = args.sets.clone();
        cfg.skip.clear();
    }
    if !args.dtypes.is_empty() {
        cfg.dtypes = args.dtypes.clone();
    } else if args.what == [What::Train] {
        cfg.dtypes = vec![DType::F32];
    }
    if !args.optimizers.is_empty() {
        cfg.optimizers = args.optimizers.clone();
    }
    if !args.impls.is_empty() {
        cfg.impls = args.impls.clone();
    }
    if args.quick {
        cfg.timing = TimingOptions::quick();
    }
    if let Some(t) = args.min_time {
        if !(t >= 0.0 && t.is_finite()) {
            return Err(Error::invalid(
                "bench",
                format!("--min-time must be a non-negative number of seconds, got {t}"),
            ));
        }
        cfg.timing.min_seconds = t;
    }
    if let Some(mib) = args.copy_mib {
        cfg.copy_bytes = mib.checked_mul(1 << 20).ok_or_else(|| {
            Error::invalid(
                "bench",
                format!("--copy-mib {mib}: more bytes than fit in memory addresses"),
            )
        })?;
        // Two buffers of that size: none can outgrow the memory there is.
        crate::base::host_backed_bytes(args.device, cfg.copy_bytes, 2)?;
    }
    cfg.train_batch = args.batch;
    if args.graph {
        if !args.what.contains(&What::Train) {
            return Err(Error::invalid(
                "bench",
                "--graph captures the training step: add `train` to what is measured",
            ));
        }
        if !args.device.is_gpu() {
            return Err(Error::invalid(
                "bench",
                format!(
                    "--graph needs a GPU device (cuda or emu), not {}",
                    args.device
                ),
            ));
        }
        cfg.train_graph = true;
    }
    if let Some(n) = args.world_size {
        if !args.what.contains(&What::Train) {
            return Err(Error::invalid(
                "bench",
                "--world-size runs the training step on data-parallel ranks: add `train`",
            ));
        }
        if !(1..=64).contains(&n) {
            return Err(Error::invalid(
                "bench",
                format!("--world-size must be between 1 and 64, got {n}"),
            ));
        }
        cfg.train_world_size = Some(n);
    }
    if args.plot.is_some() {
        if !args.what.contains(&What::Zero) {
            return Err(Error::invalid(
                "bench",
                "--plot draws the zeroing sweep: add `zero` to what is measured",
            ));
        }
        if args.device.is_emu() {
            return Err(Error::invalid(
                "bench",
                "--plot needs times, and the emulator only counts",
            ));
        }
        cfg.sweep = true;
    }
    Ok(cfg)
}

/// Runs the benchmarks.
pub fn bench(args: &BenchArgs) -> Result<ExitCode> {
    let cfg = config(args)?;
    // The outputs are proved writable before the measurements, which take minutes.
    let outputs: Vec<(&str, &std::path::Path)> = [("--json", &args.json), ("--plot", &args.plot)]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect();
    crate::io::check_distinct(&outputs)?;
    for (_, p) in &outputs {
        crate::io::check_output(p)?;
    }
    if cfg.device.is_emu() {
        eprintln!("note: the emulator runs every kernel on the host: launch counts only, no times");
    }
    let mut stderr = std::io::stderr();
    // Inside the rayon pool, with the other workers spinning on the CPU, as `gradstep
    // train` runs.
    let spin = cfg.device == Device::Cpu;
    let report = crate::backend::cpu::workers::in_pool(spin, || {
        bench::run(&cfg, &mut |r| {
            let what = [&r.set, &r.dtype, &r.optimizer, &r.imp]
                .iter()
                .filter_map(|x| x.as_deref())
                .collect::<Vec<_>>();
            let time = r
                .seconds
                .map_or("counted".into(), bench::report::format_seconds);
            let _ = writeln!(stderr, "{} {}: {}", r.bench, what.join(" "), time);
        })
    })?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::plot_zero_sweep(&report, cfg.dtypes[0].as_str(), path)?;
        println!("wrote {}", path.display());
    }
    if report.failures() > 0 {
        eprintln!(
            "error: {} benchmark case(s) failed (listed above)",
            report.failures()
        );
        return Ok(ExitCode::from(crate::cli::EXIT_FAILURES));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(v: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from([&["gradstep", "bench"][..], v].concat()).expect("parses");
        let Command::Bench(a) = cli.command else {
            panic!("not bench")
        };
        a
    }

    #[test]
    fn parses_the_documented_arguments() {
        let a = args(&[
            "zero", "step", "--device", "emu", "--set", "mixed10", "--dtype", "f16", "--json",
            "o.json",
        ]);
        assert_eq!(a.what, vec![What::Zero, What::Step]);
        assert_eq!(a.device, Device::Emu(0));
        assert_eq!(a.sets, vec![ParamSet::Mixed(10)]);
        let cfg = config(&a).unwrap();
        assert_eq!(cfg.dtypes, vec![DType::F16]);
        assert_eq!(cfg.copy_bytes, 0, "no copy measurement on the emulator");
        assert!(Cli::try_parse_from(["gradstep", "bench"]).is_err());
        assert!(Cli::try_parse_from(["gradstep", "bench", "zero", "--set", "tiny"]).is_err());
        assert!(Cli::try_parse_from(["gradstep", "bench", "zero", "--dtype", "f64"]).is_err());
    }

    #[test]
    fn defaults_follow_the_torch_script() {
        let cfg = config(&args(&["step", "--device", "cpu"])).unwrap();
        assert_eq!(cfg.sets, ParamSet::STANDARD.to_vec());
        assert_eq!(cfg.skip, vec![(ParamSet::TenBy10M, DType::F16)]);
        assert_eq!(cfg.optimizers.len(), 3);
        let cfg = config(&args(&["train", "--device", "cpu"])).unwrap();
        assert_eq!(cfg.dtypes, vec![DType::F32]);
        assert!(config(&args(&["step", "--plot", "p.png", "--device", "cpu"])).is_err());
        assert!(
            config(&args(&["zero", "--plot", "p.png", "--device", "cpu"]))
                .unwrap()
                .sweep
        );
        assert!(config(&args(&["zero", "--min-time=-1", "--device", "cpu"])).is_err());
        let ws = |v: &[&str]| config(&args(v)).map(|c| c.train_world_size);
        assert_eq!(
            ws(&["train", "--world-size", "2", "--device", "emu"]).unwrap(),
            Some(2)
        );
        assert!(ws(&["step", "--world-size", "2", "--device", "emu"]).is_err());
        assert!(ws(&["train", "--world-size", "0", "--device", "emu"]).is_err());
    }
}
