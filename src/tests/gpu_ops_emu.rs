//! Every ops kernel on the host emulator against the CPU backend: the `ops/` checks of
//! the kernel parity self-test (see `crate::selftest`).

use crate::backend::gpu::kernels::MODULES;
use crate::backend::gpu::KernelId;
use crate::Device;

/// Kernel files of other areas (their checks live elsewhere).
const OTHER_AREAS: [&str; 3] = ["clip", "foreach", "optim"];

#[test]
fn ops_kernels_match_the_cpu_backend_on_the_emulator() {
    let dev = crate::backend::gpu::get(Device::Emu(0)).expect("the emulator starts");
    let before = dev.counters();
    let report = crate::cli::selftest::run(Device::Emu(0), "ops/").expect("the self-test runs");
    let done = dev.counters() - before;
    println!("emulator: {done:?}");
    for (name, msg) in &report.failed {
        eprintln!("FAILED {name}: {msg}");
    }
    println!(
        "{} ops checks passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
    assert!(
        report.passed.len() > 300,
        "too few ops checks ran: {}",
        report.passed.len()
    );
    assert!(
        done.launches > 300,
        "the checks launched only {} kernels",
        done.launches
    );
    assert!(
        report.failed.is_empty(),
        "{} ops checks failed (listed above)",
        report.failed.len()
    );
    // Every kernel of this area was launched by some check.
    let unlaunched: Vec<&str> = KernelId::all()
        .filter(|k| !OTHER_AREAS.contains(&MODULES[k.module()].0))
        .map(|k| k.name())
        .filter(|n| report.unlaunched.contains(n))
        .collect();
    assert!(
        unlaunched.is_empty(),
        "kernels never launched by the ops checks: {unlaunched:?}"
    );
}
