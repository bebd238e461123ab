//! Host emulation of the CUDA backend: the unchanged `kernels/*.cu`, compiled for the host.
//!
//! build/emu.rs compiles every kernel with g++ against a small shim
//! (`kernels/host/include`); each CUDA thread of a block is a fiber, `__syncthreads` and
//! warp operations are barriers among the block's fibers, blocks run in parallel on the
//! rayon pool, and device memory is host memory. Execution is synchronous.
//!
//! Environment variables, read once at run time, select the checks:
//!
//! - `GRADSTEP_EMU_SCHEDULE=random:SEED` resumes a block's fibers in a seeded random order
//!   at every barrier (and starts them in random order), which exposes a missing
//!   `__syncthreads` or a shared-memory reuse race. The default, `round-robin`, runs
//!   them in index/arrival order.
//! - `GRADSTEP_EMU_SANITIZE=1` checks every pointer argument at launch against the live
//!   allocations, and places every allocation (and the dynamic shared memory) so that its
//!   end abuts an inaccessible page: a kernel that reads or writes past the end aborts the
//!   process with a message naming the kernel, the block and the thread. Allocations are
//!   then aligned to 16 bytes or to the largest power of two that divides their size.
//! - `GRADSTEP_EMU_EXECUTE=0` validates and counts every launch without running it: the
//!   host work of planning and issuing launches, measured alone (`benches/host_overhead`).

mod collective;
pub(crate) mod ffi;
mod graph;
mod launch;
mod memory;

use std::fmt;
use std::sync::{Mutex, OnceLock};

#[cfg(test)]
use crate::backend::gpu::KernelArgs;
use crate::backend::gpu::{
    Collective, Comm, DeviceApi, DeviceGraph, KernelId, LaunchConfig, Params, Stream,
};
use crate::base::{Device, Error, Result};

pub(crate) use collective::Clique;
pub(crate) use memory::holds;

/// Environment variable selecting the fiber schedule (`round-robin` or `random:SEED`).
pub const SCHEDULE_ENV: &str = "GRADSTEP_EMU_SCHEDULE";
/// Environment variable turning the sanitizer on (`1`).
pub const SANITIZE_ENV: &str = "GRADSTEP_EMU_SANITIZE";
/// Environment variable turning kernel execution off (`0`): launches are only counted.
pub const EXECUTE_ENV: &str = "GRADSTEP_EMU_EXECUTE";

/// The order in which a block's fibers run between barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Fibers start in index order and resume in arrival order (deterministic).
    RoundRobin,
    /// The next fiber is drawn at random from the ready ones, from this seed (mixed with the
    /// kernel name and the block index, so a run is reproducible).
    Random(u64),
}

impl Schedule {
    /// Parses `round-robin` (or empty) and `random:SEED`.
    pub fn parse(s: &str) -> Result<Schedule> {
        let s = s.trim();
        if s.is_empty() || s == "round-robin" {
            return Ok(Schedule::RoundRobin);
        }
        s.strip_prefix("random:")
            .and_then(|seed| seed.trim().parse::<u64>().ok())
            .map(Schedule::Random)
            .ok_or_else(|| {
                Error::invalid(
                    "emu schedule",
                    format!("`{s}`: expected `round-robin` or `random:SEED`"),
                )
            })
    }

    /// The schedule named by `GRADSTEP_EMU_SCHEDULE` (round-robin when unset).
    pub fn from_env() -> Result<Schedule> {
        match std::env::var(SCHEDULE_ENV) {
            Ok(v) => Schedule::parse(&v).map_err(|_| {
                Error::invalid(
                    "emu schedule",
                    format!("{SCHEDULE_ENV}=`{v}`: expected `round-robin` or `random:SEED`"),
                )
            }),
            Err(_) => Ok(Schedule::RoundRobin),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::RoundRobin => f.write_str("schedule round-robin"),
            Schedule::Random(seed) => write!(f, "schedule random:{seed}"),
        }
    }
}

/// Whether launches run their kernels in this process: `GRADSTEP_EMU_EXECUTE=0` turns
/// execution off (read once), so a launch is only validated and counted. For measuring
/// the host work of planning and issuing launches; every result is then garbage.
pub fn execute_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(EXECUTE_ENV).map_or(true, |v| v != "0"))
}

/// Whether the sanitizer is on in this process (`GRADSTEP_EMU_SANITIZE`, read once).
pub fn sanitize_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(SANITIZE_ENV).is_ok_and(|v| !v.is_empty() && v != "0"))
}

fn install_fault_handler() {
    static DONE: OnceLock<()> = OnceLock::new();
    // SAFETY: installs a process-wide handler once; it forwards faults outside kernels.
    DONE.get_or_init(|| unsafe { ffi::gs_emu_install_fault_handler() });
}

/// The emulated device. Every call that touches device memory (launches, copies,
/// memsets) holds the device's lock, so work from several host threads runs one call
/// after another, as on a CUDA stream.
pub struct EmuApi {
    /// Which emulated device this is (`Device::Emu(ordinal)`).
    ordinal: usize,
    schedule: Schedule,
    stream: Mutex<StreamState>,
}

/// What the device's stream lock protects: the recording of a capture under way.
#[derive(Default)]
struct StreamState {
    recording: Option<Vec<graph::Recorded>>,
}

impl EmuApi {
    /// Emulated device `ordinal` with the schedule of `GRADSTEP_EMU_SCHEDULE`. Fails on a
    /// bad schedule, or when the compiled kernel table does not match the kernel ids.
    pub fn new(ordinal: usize) -> Result<Self> {
        let names = kernel_names();
        if names != crate::backend::gpu::kernels::KERNEL_NAMES {
            return Err(Error::invalid(
                "emu",
                format!("the emulated kernel table {names:?} does not match the kernel ids"),
            ));
        }
        Ok(EmuApi {
            ordinal,
            ..Self::with_schedule(Schedule::from_env()?)
        })
    }

    /// The emulated device with an explicit schedule (memory is shared by every instance).
    pub fn with_schedule(schedule: Schedule) -> Self {
        install_fault_handler();
        EmuApi {
            ordinal: 0,
            schedule,
            stream: Mutex::new(StreamState::default()),
        }
    }

    fn options(&self) -> launch::RunOptions {
        launch::RunOptions {
            schedule: self.schedule,
            sanitize: sanitize_enabled(),
            execute: execute_enabled(),
        }
    }

    /// Holds the device's stream while `f` runs.
    fn in_order<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.stream();
        f()
    }

    fn stream(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `r` when a capture is under way (then it must not run); else `None`.
    fn record(&self, r: impl FnOnce() -> Result<graph::Recorded>) -> Option<Result<()>> {
        let mut s = self.stream();
        let rec = s.recording.as_mut()?;
        Some(r().map(|r| rec.push(r)))
    }
}

// SAFETY: every memory-touching call runs under `stream`, one at a time and complete on
// return (the emulator is synchronous), so calls are ordered as on one stream; `alloc`
// hands out distinct host blocks.
unsafe impl DeviceApi for EmuApi {
    fn name(&self) -> String {
        match self.ordinal {
            0 => format!("host emulation ({})", self.schedule),
            n => format!("host emulation #{n} ({})", self.schedule),
        }
    }
    fn alloc(&self, bytes: usize) -> Result<u64> {
        memory::alloc(Device::Emu(self.ordinal), bytes, sanitize_enabled())
    }
    unsafe fn free(&self, ptr: u64) {
        // SAFETY: forwarded contract; the lock orders it after queued work.
        self.in_order(|| unsafe { memory::free(ptr, sanitize_enabled()) })
    }
    unsafe fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        memory::check_range("emu memset", ptr, bytes)?;
        if let Some(r) = self.record(|| Ok(graph::Recorded::Memset { ptr, bytes })) {
            return r;
        }
        // SAFETY: the range lies inside a live allocation.
        self.in_order(|| unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) });
        Ok(())
    }
    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        // SAFETY: forwarded contract (the emulator completes every call on return).
        unsafe { self.write_now(src, dst) }
    }
    unsafe fn write_now(&self, src: &[u8], dst: u64) -> Result<()> {
        memory::check_range("emu htod", dst, src.len())?;
        // SAFETY: the destination range lies inside a live allocation, distinct from `src`.
        self.in_order(|| unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len())
        });
        Ok(())
    }
    unsafe fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        memory::check_range("emu dtoh", src, dst.len())?;
        // SAFETY: the source range lies inside a live allocation, distinct from `dst`.
        self.in_order(|| unsafe {
            std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len())
        });
        Ok(())
    }
    unsafe fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        memory::check_range("emu dtod (source)", src, bytes)?;
        memory::check_range("emu dtod (destination)", dst, bytes)?;
        if let Some(r) = self.record(|| Ok(graph::Recorded::Copy { src, dst, bytes })) {
            return r;
        }
        // SAFETY: both ranges lie inside live allocations; `copy` allows overlap.
        self.in_order(|| unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) });
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        self.in_order(|| Ok(()))
    }
    unsafe fn stream_wait(&self, waiter: Stream, on: Stream) -> Result<()> {
        match (waiter, on) {
            // Every call completes before it returns: the work on `on` is done already.
            (Stream::Own, Stream::Own) => Ok(()),
            _ => Err(Error::invalid(
                "emu",
                "the emulator has one stream: pass the device's own stream (a null stream)",
            )),
        }
    }
    unsafe fn launch(&self, kernel: KernelId, cfg: &LaunchConfig, args: Params<'_>) -> Result<()> {
        let desc = ffi::kernel(kernel.0).ok_or_else(|| Error::Kernel {
            kernel: format!("#{}", kernel.0),
            msg: "kernel id out of range of the emulated kernel table".into(),
        })?;
        // SAFETY: forwarded contract: the arguments match the kernel's parameters.
        if let Some(r) = self.record(|| unsafe { graph::Recorded::launch(desc, *cfg, args) }) {
            return r;
        }
        // SAFETY: forwarded contract.
        self.in_order(|| unsafe { launch::run(desc, cfg, args, self.options()) })
    }
    fn begin_capture(&self) -> Result<()> {
        self.stream().recording = Some(Vec::new());
        Ok(())
    }
    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
        let ops = self.stream().recording.take().unwrap_or_default();
        Ok(Box::new(graph::EmuGraph(ops)))
    }
    fn abort_capture(&self) {
        self.stream().recording = None;
    }
    unsafe fn launch_graph(&self, g: &dyn DeviceGraph) -> Result<()> {
        let g = g
            .as_any()
            .downcast_ref::<graph::EmuGraph>()
            .ok_or_else(|| Error::invalid("emu", "a graph recorded by another backend"))?;
        // SAFETY: forwarded contract.
        unsafe { g.run(self.options(), || self.stream()) }
    }
    fn caches_blocks(&self) -> bool {
        !sanitize_enabled()
    }
    unsafe fn collective(&self, comm: &Comm, c: &Collective) -> Result<()> {
        let recorded = || {
            collective::member(comm)?;
            Ok(graph::Recorded::Collective {
                comm: comm.clone(),
                c: *c,
            })
        };
        if let Some(r) = self.record(recorded) {
            return r;
        }
        // SAFETY: forwarded contract.
        unsafe { collective::run(comm, c) }
    }
}

/// Names of the emulated kernels of `kernels/*.cu`, in kernel-id order (the same order as
/// [`crate::backend::gpu::kernels::KERNEL_NAMES`]).
pub fn kernel_names() -> Vec<&'static str> {
    ffi::kernels().map(|d| d.name()).collect()
}

#[cfg(test)]
/// Names of the host-only test kernels (`kernels/host/test_kernels.cu`), which exist only
/// in the emulator and test it.
pub fn host_test_kernel_names() -> Vec<&'static str> {
    ffi::test_kernels().map(|d| d.name()).collect()
}

#[cfg(test)]
/// Launches a host-only test kernel by name with an explicit schedule (sanitizer as the
/// environment says). Memory comes from the emulated device (`gpu::get(Device::Emu(0))`).
///
/// # Safety
/// `args` match the kernel's C signature and every pointer argument addresses emulated
/// memory large enough for the kernel's accesses.
pub unsafe fn launch_host_test_kernel(
    name: &str,
    cfg: &LaunchConfig,
    args: &mut KernelArgs,
    schedule: Schedule,
) -> Result<()> {
    install_fault_handler();
    let desc = ffi::test_kernels()
        .find(|d| d.name() == name)
        .ok_or_else(|| Error::Kernel {
            kernel: name.to_string(),
            msg: "no such host test kernel".into(),
        })?;
    let mut params = args.as_params();
    let opts = launch::RunOptions {
        schedule,
        sanitize: sanitize_enabled(),
        execute: true,
    };
    // SAFETY: forwarded contract.
    unsafe { launch::run(desc, cfg, &mut params, opts) }
}
