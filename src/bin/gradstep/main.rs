//! The `gradstep` command-line tool: `train`, `eval`, `check`, `bench` and `selftest`.
//! Every error prints as one line (`error: ...`) with a non-zero exit status.

mod bench;
mod check;
mod cli;
mod selftest;
mod train;

fn main() -> std::process::ExitCode {
    cli::main()
}
