//! The emulator's sanitizer (`GRADSTEP_EMU_SANITIZE=1`): an out-of-bounds write inside a
//! kernel aborts with a message naming the kernel; a pointer argument outside every live
//! allocation is a launch error; in-bounds kernels run normally.
//!
//! The sanitizer is chosen once per process, and a caught write aborts the process, so each
//! case runs in a child: this test binary itself, filtered to one `child_*` test, with the
//! sanitizer on. Outside such a child the `child_*` tests do nothing.

use std::process::{Command, Output};

use crate::backend::emu::{self, Schedule};
use crate::backend::gpu::{self, kernels::k, KernelArgs, LaunchConfig};
use crate::Device;

/// Names the `child_*` test a child process must run.
const CHILD_ENV: &str = "GRADSTEP_EMU_SANITIZE_TEST_CHILD";

fn run_child(name: &str) -> Output {
    let path = format!(
        "{}::{name}",
        module_path!().trim_start_matches("gradstep::")
    );
    Command::new(std::env::current_exe().unwrap())
        .args([&path, "--exact", "--nocapture", "--test-threads=1"])
        .env(emu::SANITIZE_ENV, "1")
        .env(CHILD_ENV, name)
        .output()
        .unwrap()
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
}

/// Runs the `child_*` test `name`, asserts that the child aborted, and returns its stderr.
fn aborted_child_stderr(name: &str) -> (Output, String) {
    let out = run_child(name);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the child must abort; stderr: {stderr}"
    );
    (out, stderr)
}

/// Launches the host test kernel `name` in index order.
fn launch_test_kernel(name: &str, cfg: &LaunchConfig, args: &mut KernelArgs) -> crate::Result<()> {
    // SAFETY: every caller passes the kernel's parameters; an out-of-bounds access is what
    // is under test.
    unsafe { emu::launch_host_test_kernel(name, cfg, args, Schedule::RoundRobin) }
}

/// Launches `emu_test_write_past_end` over a buffer of `len` floats, writing `n + 1` of them.
fn write_floats(len: usize, n: u64) -> crate::Result<()> {
    assert!(emu::sanitize_enabled());
    let dev = gpu::get(Device::Emu(0))?;
    let buf = dev.alloc(len * 4)?;
    let mut args = KernelArgs::new();
    args.push(buf.ptr()).push(n);
    let cfg = LaunchConfig::linear(4, 256);
    launch_test_kernel("emu_test_write_past_end", &cfg, &mut args)
}

#[test]
fn child_write_past_end() {
    if is_child("child_write_past_end") {
        // Writes elements 0..=1000 of a 1000-element buffer: must not return.
        let r = write_floats(1000, 1000);
        println!("returned: {r:?}");
    }
}

#[test]
fn a_write_past_the_end_names_the_kernel() {
    let (out, stderr) = aborted_child_stderr("child_write_past_end");
    assert!(
        stderr.contains("invalid memory access") && stderr.contains("emu_test_write_past_end"),
        "stderr: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("returned:"));
}

#[test]
fn child_fault_outside_then_inside_a_kernel() {
    if is_child("child_fault_outside_then_inside_a_kernel") {
        // SAFETY: test hooks of the emulator: a handler that repairs a PROT_NONE page,
        // installed before the emulator's own, and one read of such a page.
        unsafe { emu::ffi::gs_emu_test_install_recovering_handler() };
        gpu::get(Device::Emu(0)).unwrap();
        let repaired = unsafe { emu::ffi::gs_emu_test_fault_outside_kernel() };
        println!("repaired outside: {repaired}");
        // The emulator's handler must still name the kernel of the next fault.
        let r = write_floats(1000, 1000);
        println!("returned: {r:?}");
    }
}

#[test]
fn a_fault_outside_a_kernel_goes_to_the_previous_handler_and_leaves_ours_installed() {
    let (out, stderr) = aborted_child_stderr("child_fault_outside_then_inside_a_kernel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("repaired outside: 1"), "stdout: {stdout}");
    assert!(
        stderr.contains("invalid memory access") && stderr.contains("emu_test_write_past_end"),
        "stderr: {stderr}"
    );
    assert!(!stdout.contains("returned:"), "stdout: {stdout}");
}

#[test]
fn child_shared_past_end() {
    if is_child("child_shared_past_end") {
        let dev = gpu::get(Device::Emu(0)).unwrap();
        let buf = dev.alloc(256 * 4).unwrap();
        let mut args = KernelArgs::new();
        args.push(buf.ptr());
        let cfg = LaunchConfig::linear(1, 256).with_shared(256 * 4);
        // Writes one float past its dynamic shared memory.
        let r = launch_test_kernel("emu_test_shared_past_end", &cfg, &mut args);
        println!("returned: {r:?}");
    }
}

#[test]
fn a_write_past_dynamic_shared_memory_names_the_kernel() {
    let (_, stderr) = aborted_child_stderr("child_shared_past_end");
    assert!(
        stderr.contains("emu_test_shared_past_end"),
        "stderr: {stderr}"
    );
}

#[test]
fn child_in_bounds_and_bad_pointers() {
    if !is_child("child_in_bounds_and_bad_pointers") {
        return;
    }
    // In bounds: exactly the whole buffer.
    write_floats(1001, 1000).unwrap();
    // A real kernel over odd sizes, whose allocations end at the guard page.
    for n in [1usize, 3, 1001] {
        let t = crate::Tensor::full(&[n], 2.0, crate::DType::F16, Device::Emu(0)).unwrap();
        assert_eq!(
            t.to_vec::<half::f16>().unwrap(),
            vec![half::f16::from_f32(2.0); n]
        );
    }
    // A pointer argument outside every live allocation is refused at launch.
    let dev = gpu::get(Device::Emu(0)).unwrap();
    let freed = dev.alloc(64).unwrap().ptr() + 8;
    let mut args = KernelArgs::new();
    args.push(freed).push(4u64).push(1.0f64);
    let err = dev
        .launch(k::FILL_F32, LaunchConfig::linear(1, 32), &mut args)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fill_f32") && err.contains("argument 0"),
        "{err}"
    );
    println!("child passed");
}

#[test]
fn in_bounds_kernels_run_and_bad_pointers_are_refused() {
    let out = run_child("child_in_bounds_and_bad_pointers");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("child passed"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
