//! Tests of the crate's internals that need its private API: the CPU primitives, the
//! host emulator (shim, schedules, sanitizer), the GPU kernels against the CPU on the
//! emulator (the self-test), the committed PTX, and the conformance runner. The public
//! API is tested from outside, by `tests/it`.

use std::path::PathBuf;

#[cfg(all(feature = "cli", feature = "emu"))]
mod conformance;
mod cpu_ops;
mod cpu_views;
#[cfg(feature = "emu")]
mod emu_sanitize;
#[cfg(feature = "emu")]
mod emu_shim;
#[cfg(all(feature = "cli", feature = "emu"))]
mod gpu_ops_emu;
#[cfg(all(feature = "cli", feature = "cuda"))]
mod gpu_parity_cuda;
#[cfg(all(feature = "cli", feature = "emu"))]
mod optim_selftest_emu;
#[cfg(feature = "cuda")]
mod ptx;

/// A file of `tests/data/`.
pub(crate) fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A directory of this test process for scratch files (`tag` names the test area).
pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradstep-unit-{}/{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// One `#[test]` per `name => file on device` row, each calling `run(file, device)`
/// (its result, if any, is dropped).
macro_rules! case_file_tests {
    ($run:ident: $($name:ident => $file:literal on $device:ident $(($ord:literal))?),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run($file, crate::Device::$device $(($ord))?);
            }
        )*
    };
}
pub(crate) use case_file_tests;
