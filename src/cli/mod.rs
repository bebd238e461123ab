//! The `gradstep` command line (the `cli` feature): `train`, `eval`, `check` (replay
//! PyTorch reference cases), `bench` and `selftest` (the GPU kernels against the CPU).
//! Everything here is private to the crate except [`main`], which the `gradstep` binary
//! calls, and [`replay_case_bytes`] (for tools and fuzzers); every error is one line
//! (`error: ...`) with a non-zero exit status.

pub(crate) mod bench;
pub(crate) mod check;
mod plot;
pub(crate) mod selftest;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Device;

/// Parses the bytes of a reference-case file (`ops-ref/1`, `optim-ref/1`, `train-ref/1`)
/// and replays its cases on the CPU with every optimizer implementation, discarding the
/// result lines: `(passed, failed)`. Any malformed input is an `Err`, never a panic.
pub fn replay_case_bytes(bytes: &[u8]) -> crate::Result<(usize, usize)> {
    let file = check::json::CaseFile::parse("<bytes>", bytes)?;
    let s = check::run_cases(
        "<bytes>",
        &file,
        Device::Cpu,
        &check::ALL_IMPLS,
        &mut std::io::sink(),
    )?;
    Ok((s.passed, s.failed))
}

/// Exit status of a run whose checks found failures.
pub(crate) const EXIT_FAILURES: u8 = 1;
/// Exit status of an error (bad arguments, unreadable file, no driver, ...).
pub(crate) const EXIT_ERROR: u8 = 2;

/// gradstep: a CUDA-native training backend with PyTorch's zero_grad/backward/step semantics.
#[derive(Debug, Parser)]
#[command(name = "gradstep", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Train the quickstart model.
    Train(train::TrainArgs),
    /// Evaluate a trained model.
    Eval(train::EvalArgs),
    /// Replay PyTorch reference case files (ops-ref/1, optim-ref/1, train-ref/1).
    Check(check::command::CheckArgs),
    /// Run the benchmarks.
    Bench(bench::command::BenchArgs),
    /// Run the GPU kernel parity self-test against the CPU backend.
    Selftest(selftest::command::SelftestArgs),
}

/// Parses a `--device` value with [`Device::parse`] (cpu, cuda, cuda:N, emu, auto).
pub(crate) fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).map_err(|e| e.to_string())
}

/// Parses the process's arguments and runs the subcommand: the whole `gradstep` binary.
/// Errors, argument errors included, are printed as one line on stderr.
pub fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let result = match &cli.command {
        Command::Train(a) => train::train(a),
        Command::Eval(a) => train::eval(a),
        Command::Check(a) => check::command::run(a),
        Command::Bench(a) => bench::command::bench(a),
        Command::Selftest(a) => selftest::command::run(a),
    };
    result.unwrap_or_else(|e| error_exit(&e.to_string()))
}

/// Prints `error: MSG` as one line on stderr; returns the error exit status.
pub(crate) fn error_exit(msg: &str) -> ExitCode {
    eprintln!("error: {}", one_line(msg));
    ExitCode::from(EXIT_ERROR)
}

/// Help and version go to stdout with status 0; an argument error becomes one line.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            print!("{}", e.render());
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // The message is the first paragraph; usage and hints follow a blank line.
            let text = e.render().to_string();
            let text = text.trim_start();
            let para = text.split("\n\n").next().unwrap_or("invalid arguments");
            let msg = para.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            error_exit(msg.strip_prefix("error: ").unwrap_or(&msg))
        }
    }
}

/// Joins the lines of a message so that it prints as one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A panic prints one line (no backtrace) before the process exits with status 101.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{place}: {}", one_line(&payload));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_check_and_selftest_arguments() {
        let cli = Cli::try_parse_from([
            "gradstep", "check", "a.json", "b.json", "--device", "emu", "--impl", "fused",
        ])
        .expect("parses");
        let Command::Check(a) = cli.command else {
            panic!("not check")
        };
        assert_eq!(a.files.len(), 2);
        assert_eq!(a.device, Device::Emu(0));
        assert_eq!(a.imp, "fused");
        let cli =
            Cli::try_parse_from(["gradstep", "selftest", "--filter", "adam"]).expect("parses");
        let Command::Selftest(a) = cli.command else {
            panic!("not selftest")
        };
        assert_eq!(a.filter, "adam");
        assert!(Cli::try_parse_from(["gradstep", "check", "a.json", "--device", "tpu"]).is_err());
        assert!(Cli::try_parse_from(["gradstep", "check"]).is_err());
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line("a\n\n  b\n"), "a; b");
    }
}
