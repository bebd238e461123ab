//! The conformance runner: replays PyTorch reference cases (`gradstep check`).
//!
//! A case file (`ops-ref/1`, `optim-ref/1`, `train-ref/1`, or `clip-ref/1` from
//! `scripts/oracle/README.md`; see the oracle's README for the others) holds
//! inputs, hyperparameters and every expected value. [`run_files`] replays every case of
//! every file on a device, once per optimizer implementation where an optimizer steps, and
//! writes one line per failing or skipped replay and a last line `N passed, M failed`
//! (`, K skipped` when K > 0):
//!
//! ```text
//! FAIL optim_standard.json adam/amsgrad/float32 [cpu fused]: step 2 params[1] "b0" [3]: got 0.51234 want 0.51236 |diff| 2.0e-05 > 1.5e-06 (rtol 1e-06, atol 1e-06)
//! SKIP ops.json layer_norm/4x10_ns10_eps1e-05/float16 [emu]: layer_norm: dtype f16 is not supported on emu
//! ```
//!
//! A replay stops at its first failing value (later values depend on it) and reports that
//! value's worst element. [`crate::Error::Unsupported`] from gradstep is a skip; any other
//! error fails the replay.

mod clip;
pub(crate) mod command;
pub(crate) mod compare;
pub(crate) mod json;
mod num;
mod ops;
mod optim;
mod train;

use std::fmt;
use std::io::Write;
use std::path::Path;

pub use compare::{Replay, Stop};
pub use json::CaseFile;

use crate::base::{Error, Result};
use crate::tensor::Device;

pub use crate::optim::Impl;

/// Every optimizer implementation, in the order `--impl all` replays them.
pub const ALL_IMPLS: [Impl; 3] = [Impl::ForLoop, Impl::Foreach, Impl::Fused];

/// The name of an implementation on the command line and in result lines.
pub fn impl_name(imp: Impl) -> &'static str {
    match imp {
        Impl::ForLoop => "forloop",
        Impl::Foreach => "foreach",
        Impl::Fused => "fused",
    }
}

/// Parses `forloop`, `foreach`, `fused` or `all` into the implementations to replay.
pub fn parse_impls(s: &str) -> Result<Vec<Impl>> {
    match s {
        "all" => Ok(ALL_IMPLS.to_vec()),
        _ => ALL_IMPLS
            .into_iter()
            .find(|&i| impl_name(i) == s)
            .map(|i| vec![i])
            .ok_or_else(|| {
                Error::invalid(
                    "impl",
                    format!("unknown impl '{s}' (expected forloop, foreach, fused or all)"),
                )
            }),
    }
}

/// Counts of replays by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Replays whose every value passed.
    pub passed: usize,
    /// Replays with a wrong value or an error.
    pub failed: usize,
    /// Replays gradstep cannot run.
    pub skipped: usize,
}

impl Summary {
    /// Whether no replay failed (skips alone do not fail a run).
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// Adds another summary's counts.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Summary {
    /// `N passed, M failed`, plus `, K skipped` when K > 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Reads and parses one case file. Errors when it cannot be read, is not JSON, or has an
/// unknown `format`.
pub fn load_file(path: &Path) -> Result<CaseFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    CaseFile::parse(&path.display().to_string(), &bytes)
}

/// Replays every case of every file on `device` (optimizer steps once per impl of
/// `impls`), writes a line per failing or skipped replay and the summary line to `out`,
/// and returns the counts. Every file is loaded before any case runs: an unreadable file,
/// invalid JSON or an unknown format is an error and nothing is replayed. A device that
/// cannot be opened (no CUDA driver) is an error too.
pub fn run_files<P: AsRef<Path>>(
    paths: &[P],
    device: Device,
    impls: &[Impl],
    out: &mut dyn Write,
) -> Result<Summary> {
    if impls.is_empty() {
        return Err(Error::invalid(
            "check",
            "no optimizer implementation selected",
        ));
    }
    device.synchronize()?;
    let files = paths
        .iter()
        .map(|p| Ok((display_name(p.as_ref()), load_file(p.as_ref())?)))
        .collect::<Result<Vec<_>>>()?;
    let mut summary = Summary::default();
    for (name, file) in &files {
        summary.add(run_cases(name, file, device, impls, out)?);
    }
    writeln!(out, "{summary}").map_err(output_error)?;
    Ok(summary)
}

/// Replays the cases of one parsed file; `name` is printed in result lines. Writes no
/// summary line.
pub fn run_cases(
    name: &str,
    file: &CaseFile,
    device: Device,
    impls: &[Impl],
    out: &mut dyn Write,
) -> Result<Summary> {
    let mut rec = Recorder {
        file: name,
        device,
        out,
        summary: Summary::default(),
    };
    match file {
        CaseFile::Ops(cases) => {
            for c in cases {
                rec.record(&c.id, None, ops::replay(c, device))?;
            }
        }
        CaseFile::Optim(cases) => {
            for c in cases {
                for &i in impls {
                    rec.record(&c.id, Some(i), optim::replay(c, device, i))?;
                }
            }
        }
        CaseFile::Train(cases) => {
            for c in cases {
                for &i in impls {
                    rec.record(&c.id, Some(i), train::replay(c, device, i))?;
                }
            }
        }
        CaseFile::Clip(cases) => {
            for c in cases {
                rec.record(&c.id, None, clip::replay(c, device))?;
            }
        }
    }
    Ok(rec.summary)
}

/// Writes result lines and counts outcomes.
struct Recorder<'a> {
    file: &'a str,
    device: Device,
    out: &'a mut dyn Write,
    summary: Summary,
}

impl Recorder<'_> {
    fn record(&mut self, id: &str, imp: Option<Impl>, r: Replay) -> Result<()> {
        let (tag, msg) = match r {
            Ok(()) => {
                self.summary.passed += 1;
                return Ok(());
            }
            Err(Stop::Fail(m)) => {
                self.summary.failed += 1;
                ("FAIL", m)
            }
            Err(Stop::Skip(m)) => {
                self.summary.skipped += 1;
                ("SKIP", m)
            }
        };
        let imp = imp
            .map(|i| format!(" {}", impl_name(i)))
            .unwrap_or_default();
        writeln!(
            self.out,
            "{tag} {} {id} [{}{imp}]: {msg}",
            self.file, self.device
        )
        .map_err(output_error)
    }
}

/// The file name printed in result lines (the last path component).
fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn output_error(e: std::io::Error) -> Error {
    Error::io("<output>", e)
}
