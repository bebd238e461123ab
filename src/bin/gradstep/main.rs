//! The `gradstep` command-line tool: `train`, `eval`, `check`, `bench` and `selftest`
//! (the library's `cli` feature). Every error prints as one line (`error: ...`) with a
//! non-zero exit status.

fn main() -> std::process::ExitCode {
    gradstep::cli::main()
}
