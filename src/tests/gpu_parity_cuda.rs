//! The whole kernel parity self-test on a real CUDA device, when there is one. On a
//! machine without a driver or GPU it prints why it skipped (the emulator runs the same
//! checks in `gpu_ops_emu` and `optim_selftest_emu`).

use crate::Device;

#[test]
fn every_kernel_matches_the_cpu_backend_on_cuda() {
    let device = Device::cuda_if_available(0);
    if device == Device::Cpu {
        let why = match crate::Device::cuda_device_count() {
            Err(e) => e.to_string(),
            Ok(n) => format!("{n} CUDA devices"),
        };
        println!("skipped: no CUDA device ({why})");
        return;
    }
    let report = crate::cli::selftest::run(device, "").expect("the self-test runs");
    for (name, msg) in &report.failed {
        eprintln!("FAILED {name}: {msg}");
    }
    assert!(
        report.failed.is_empty(),
        "{} checks failed on {device}",
        report.failed.len()
    );
    assert!(
        report.unlaunched.is_empty(),
        "kernels never launched: {:?}",
        report.unlaunched
    );
}
