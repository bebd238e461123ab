//! `gradstep check FILE... [--device cpu|cuda|emu] [--impl forloop|foreach|fused|all]`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::check::{parse_impls, run_files};
use crate::{Device, Result};
use clap::Args;

/// Arguments of `gradstep check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Case files (ops-ref/1, optim-ref/1 or train-ref/1 JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where tensors live and ops run: cpu, cuda, cuda:N or emu (the CUDA kernels on the host).
    #[arg(long, default_value = "cpu", value_parser = crate::cli::parse_device)]
    pub device: Device,
    /// Optimizer implementation for optimizer steps: forloop, foreach, fused or all.
    #[arg(long = "impl", value_name = "IMPL", default_value = "all", value_parser = ["forloop", "foreach", "fused", "all"])]
    pub imp: String,
}

/// Replays the files; exit status 1 when a replay failed.
pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let impls = parse_impls(&args.imp)?;
    let mut out = std::io::stdout().lock();
    let summary = run_files(&args.files, args.device, &impls, &mut out)?;
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::cli::EXIT_FAILURES)
    })
}
