//! The kernel parity self-test: every GPU kernel path against the CPU backend.
//!
//! Runs on the emulator in `cargo test` and on a real GPU through `gradstep selftest`
//! (the GPU check). Each area contributes checks in its own file; [`run`] runs them all
//! and reports which kernels were never launched.

pub(crate) mod command;
#[cfg(gpu)]
mod ops;
#[cfg(gpu)]
mod optim;

use crate::base::Result;
use crate::tensor::Device;

/// One parity check: a name and a function that runs it on a GPU device, returning a
/// description of the first mismatch.
#[cfg(gpu)]
pub struct Check {
    /// Name, e.g. `binary/add/f16/broadcast`.
    pub name: String,
    /// Runs the check on the device; `Err` describes a failure.
    pub run: Box<dyn Fn(Device) -> Result<()> + Send + Sync>,
}

/// The outcome of [`run`].
#[derive(Debug, Default)]
pub struct Report {
    /// Names of checks that passed.
    pub passed: Vec<String>,
    /// `(name, message)` of checks that failed.
    pub failed: Vec<(String, String)>,
    /// Kernels never launched during the run.
    pub unlaunched: Vec<&'static str>,
}

#[cfg(gpu)]
/// Every registered check.
pub fn checks() -> Vec<Check> {
    let mut v = ops::checks();
    v.extend(optim::checks());
    v
}

#[cfg(gpu)]
/// Runs every check whose name contains `filter` on `device` and records coverage.
pub fn run(device: Device, filter: &str) -> Result<Report> {
    let dev = crate::backend::gpu::get(device)?;
    let before = dev.launches_per_kernel();
    let mut report = Report::default();
    for c in checks().into_iter().filter(|c| c.name.contains(filter)) {
        match (c.run)(device) {
            Ok(()) => report.passed.push(c.name),
            Err(e) => report.failed.push((c.name, e.to_string())),
        }
    }
    let after = dev.launches_per_kernel();
    report.unlaunched = crate::backend::gpu::KernelId::all()
        .filter(|k| after[k.0 as usize] == before[k.0 as usize])
        .map(|k| k.name())
        .collect();
    Ok(report)
}

/// Without a GPU backend there is nothing to test.
#[cfg(not(gpu))]
pub fn run(device: Device, _filter: &str) -> Result<Report> {
    Err(crate::backend::not_built(device))
}
