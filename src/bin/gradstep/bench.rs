//! `gradstep bench`: the benchmarks.
//! (Placeholder until the benchmarks land: the subcommand reports an error.)

use std::process::ExitCode;

use clap::Args;
use gradstep::{Error, Result};

/// Arguments of `gradstep bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {}

/// Runs the benchmarks.
pub fn bench(_args: &BenchArgs) -> Result<ExitCode> {
    Err(Error::invalid("bench", "not implemented yet"))
}
