//! `gradstep selftest [--device emu|cuda] [--filter S]`: the kernel parity self-test.

use std::process::ExitCode;

use crate::{Device, Error, Result};
use clap::Args;

/// Arguments of `gradstep selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The GPU device to test: cuda, cuda:N or emu.
    #[arg(long, default_value = "cuda", value_parser = crate::cli::parse_device)]
    pub device: Device,
    /// Run only the checks whose name contains this string.
    #[arg(long, default_value = "")]
    pub filter: String,
}

/// Runs the self-test; prints one line per failure, the kernels never launched and
/// `N passed, M failed`. Exit status 1 when a check failed.
pub fn run(args: &SelftestArgs) -> Result<ExitCode> {
    if !args.device.is_gpu() {
        return Err(Error::invalid(
            "selftest",
            format!(
                "device {} has no GPU kernels to test (use cuda or emu)",
                args.device
            ),
        ));
    }
    let report = crate::cli::selftest::run(args.device, &args.filter)?;
    for (name, msg) in &report.failed {
        println!("FAIL {name}: {msg}");
    }
    if !report.unlaunched.is_empty() {
        println!(
            "never launched ({}): {}",
            report.unlaunched.len(),
            report.unlaunched.join(", ")
        );
    }
    println!(
        "{} passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::cli::EXIT_FAILURES)
    })
}
