//! The optim kernel parity self-test on the emulated GPU: every kernel of
//! `kernels/optim.cu` and `kernels/foreach.cu` runs and matches the CPU.

use crate::backend::gpu::kernels::MODULES;
use crate::Device;

/// The entry points of a kernel file, read from its source.
fn entry_points(stem: &str) -> Vec<String> {
    let (_, src) = MODULES
        .iter()
        .find(|m| m.0 == stem)
        .unwrap_or_else(|| panic!("no kernel module {stem}"));
    src.split("extern \"C\" __global__ void ")
        .skip(1)
        .map(|s| s.split('(').next().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn optim_kernels_match_the_cpu_and_all_launch() {
    let report = crate::cli::selftest::run(Device::Emu(0), "optim/").unwrap();
    assert!(report.failed.is_empty(), "failed: {:#?}", report.failed);
    assert!(
        report.passed.len() > 30,
        "only {} checks ran",
        report.passed.len()
    );
    let mut kernels = entry_points("optim");
    kernels.extend(entry_points("foreach"));
    assert!(kernels.len() >= 8, "{kernels:?}");
    for k in &kernels {
        assert!(
            !report.unlaunched.contains(&k.as_str()),
            "kernel {k} was never launched"
        );
    }
}
