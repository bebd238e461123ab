//! `gradstep train` and `gradstep eval`: the quickstart training and test loops.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::train::{
    parse_impl, EvalConfig, LoopOptions, LrSchedule, OptimizerKind, ResumeOverrides, TrainConfig,
};
use crate::{DType, Device, Error, Result};
use clap::Args;

/// Arguments of `gradstep train`.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Total number of epochs (a resumed run continues up to this count).
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Samples per batch [default: 64; with --resume, the checkpoint's]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate [default: 0.001; with --resume, the checkpoint's]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer: sgd, adam or adamw [default: sgd; with --resume, the checkpoint's]
    #[arg(long)]
    pub optimizer: Option<String>,
    /// SGD's momentum (0: none, as in the quickstart).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// A learning-rate schedule stepped after every batch: step:SIZE:GAMMA,
    /// cosine:T_MAX or linear:START:END:ITERS.
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Capture the training step as a graph after a warm-up step and replay it per
    /// batch (cuda or emu); the last, partial batch of an epoch runs eagerly.
    #[arg(long)]
    pub graph: bool,
    /// Step implementation: forloop, foreach or fused.
    #[arg(long = "impl", default_value = "fused")]
    pub imp: String,
    /// Device: auto (a GPU when there is one), cpu, cuda, cuda:N or emu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Parameter dtype: f32, or f16 or bf16 for mixed precision (f32 master weights; f16
    /// with a GradScaler) [default: f32; with --resume,
    /// the checkpoint's]
    #[arg(long)]
    pub dtype: Option<String>,
    /// Mixed precision: the GradScaler's initial scale.
    #[arg(long, default_value_t = 65536.0)]
    pub init_scale: f64,
    /// Seed of the initialisation and the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gradient accumulation: zero_grad once every K batches and step every K batches.
    #[arg(long, default_value_t = 1)]
    pub zero_grad_every: usize,
    /// zero_grad(set_to_none): true or false.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub set_to_none: bool,
    /// Write a checkpoint here after every epoch (atomically).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Continue from a checkpoint written by --save. Its optimizer, dtype, batch size and
    /// lr are used unless the flag is given, which then overrides it (said on stderr).
    /// --save may name the same file.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write a PNG of the training loss and the test accuracy here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Show a progress bar instead of the loss lines.
    #[arg(long)]
    pub progress: bool,
    /// Directory with the four MNIST-style IDX files (default: the bundled Fashion-MNIST).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Test on the first N test samples only.
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Print the loss every this many batches.
    #[arg(long, default_value_t = 100)]
    pub log_every: usize,
    /// Clip the gradients to this total 2-norm before each step (clip_grad_norm_; after
    /// unscaling with a GradScaler).
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
    /// Data-parallel ranks: with --device emu, N emulated devices in this process (one
    /// thread each) average their gradients with DistributedDataParallel. --batch-size
    /// is per rank; rank 0 prints, evaluates and saves.
    #[arg(long, default_value_t = 1)]
    pub world_size: usize,
    /// Train through DistributedDataParallel even with one rank (its overhead; NCCL with
    /// one GPU).
    #[arg(long)]
    pub ddp: bool,
}

/// Arguments of `gradstep eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// A checkpoint from `train --save`, or a state dict saved by PyTorch with
    /// `safetensors.torch.save_file(model.state_dict(), PATH)`.
    #[arg(long)]
    pub load: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N or emu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Samples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Directory with the MNIST-style IDX files (default: the bundled Fashion-MNIST).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Test on the first N test samples only.
    #[arg(long)]
    pub test_samples: Option<usize>,
}

fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(Error::invalid(
            "dtype",
            format!("unknown dtype '{s}' (expected f32, f16 or bf16)"),
        )),
    }
}

impl TrainArgs {
    /// The library configuration these arguments describe.
    pub(crate) fn config(&self) -> Result<TrainConfig> {
        let defaults = TrainConfig::default();
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            lr: self.lr.unwrap_or(defaults.lr),
            momentum: self.momentum,
            lr_schedule: self
                .lr_schedule
                .as_deref()
                .map(LrSchedule::parse)
                .transpose()?,
            graph: self.graph,
            optimizer: match &self.optimizer {
                Some(o) => OptimizerKind::parse(o)?,
                None => defaults.optimizer,
            },
            imp: parse_impl(&self.imp)?,
            device: Device::parse(&self.device)?,
            dtype: match &self.dtype {
                Some(d) => parse_dtype(d)?,
                None => defaults.dtype,
            },
            init_scale: self.init_scale,
            seed: self.seed,
            shuffle: true,
            loop_options: LoopOptions {
                zero_grad_every: self.zero_grad_every,
                set_to_none: self.set_to_none,
                log_every: self.log_every,
                clip_grad_norm: self.clip_grad_norm,
            },
            save: self.save.clone(),
            resume: self.resume.clone(),
            progress: self.progress,
            data_dir: self.data_dir.clone().unwrap_or(defaults.data_dir),
            train_samples: self.train_samples,
            test_samples: self.test_samples,
            resume_overrides: ResumeOverrides {
                lr: self.lr.is_some(),
                optimizer: self.optimizer.is_some(),
                dtype: self.dtype.is_some(),
                batch_size: self.batch_size.is_some(),
            },
            world_size: self.world_size,
            ddp: self.ddp,
        })
    }
}

/// Trains the quickstart model; stdout gets PyTorch's lines, stderr a speed summary.
pub(crate) fn train(args: &TrainArgs) -> Result<ExitCode> {
    let cfg = args.config()?;
    check_outputs(args)?;
    // On a worker of the rayon pool, a parallel op starts on this thread at once instead
    // of waking a worker and blocking until it is done (about 20% faster on 2 cores); on
    // the CPU the other workers spin between ops instead of sleeping (1.25x again).
    let spin = cfg.device == crate::Device::Cpu;
    let report = crate::backend::cpu::workers::in_pool(spin, || {
        let mut out = std::io::stdout().lock();
        crate::train::train(&cfg, &mut out)
    })?;
    if report.batches > 0 {
        eprintln!(
            "trained {} batches on {} in {:.2} s: {:.1} batches/s",
            report.batches,
            report.device,
            report.train_seconds,
            report.batches_per_second()
        );
    }
    if args.graph {
        eprintln!(
            "{} of {} steps replayed from the captured graph",
            report.replayed_steps, report.batches
        );
    }
    if let Some(scale) = report.grad_scale {
        eprintln!("GradScaler scale at the end: {scale}");
    }
    if let Some(p) = &args.plot {
        super::plot::plot_history(&report.history, p)?;
        eprintln!("plot written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses, before any work, an output that cannot be written or that is the same file
/// as another output or the checkpoint read. `--save` may name the `--resume` file: the
/// run continues that checkpoint and replaces it, atomically, after each epoch.
fn check_outputs(args: &TrainArgs) -> Result<()> {
    let mut named: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(p) = &args.plot {
        named.push(("--plot", p));
    }
    if let Some(p) = &args.save {
        crate::io::check_output(p)?;
        crate::io::check_distinct(&[named.as_slice(), &[("--save", p)]].concat())?;
    }
    if let Some(p) = &args.resume {
        crate::io::check_distinct(&[named.as_slice(), &[("--resume", p)]].concat())?;
    }
    if let Some(p) = &args.plot {
        crate::io::check_output(p)?;
    }
    Ok(())
}

/// Evaluates a saved model on the test set and prints the quickstart's test report.
pub(crate) fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let cfg = EvalConfig {
        load: args.load.clone(),
        device: Device::parse(&args.device)?,
        batch_size: args.batch_size,
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(crate::data::default_data_dir),
        test_samples: args.test_samples,
    };
    let mut out = std::io::stdout().lock();
    crate::train::eval(&cfg, &mut out)?;
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(v: &[&str]) -> Result<TrainConfig> {
        let cli = Cli::try_parse_from([&["gradstep", "train"][..], v].concat()).expect("parses");
        let Command::Train(a) = cli.command else {
            panic!("not train")
        };
        a.config()
    }

    #[test]
    fn data_parallel_flags_reach_the_config() {
        let c = config(&["--device", "emu", "--world-size", "2", "--batch-size", "32"]).unwrap();
        assert_eq!((c.world_size, c.ddp, c.batch_size), (2, false, 32));
        assert_eq!(c.device, Device::Emu(0));
        let c = config(&["--device", "emu:3", "--ddp"]).unwrap();
        assert_eq!((c.world_size, c.ddp, c.device), (1, true, Device::Emu(3)));
        assert_eq!(config(&[]).unwrap().world_size, 1);
        assert!(Cli::try_parse_from(["gradstep", "train", "--world-size", "-1"]).is_err());
    }
}
