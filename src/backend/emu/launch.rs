//! Running a grid: validation, launch-time pointer checks, blocks on the rayon pool.

use std::ffi::c_void;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::ffi::{self, KernelDesc, Launch};
use super::{memory, Schedule};
use crate::backend::gpu::LaunchConfig;
use crate::base::{Error, Result};

/// Most threads per block (as on every CUDA GPU gradstep targets).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Most dynamic shared memory per block (227 KiB, an H100's opt-in limit).
pub const MAX_DYNAMIC_SHARED_BYTES: u32 = 227 * 1024;

/// How one launch runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunOptions {
    pub schedule: Schedule,
    /// Check pointer arguments against the live allocations and guard dynamic shared memory.
    pub sanitize: bool,
    /// Run the kernel; when false a launch is validated and counted but not executed.
    pub execute: bool,
}

/// Runs `desc` over the grid of `cfg`.
///
/// # Safety
/// `params` match the kernel's parameters; every pointer argument addresses emulated memory
/// large enough for the kernel's accesses (checked only partly, in sanitizer mode).
pub(crate) unsafe fn run(
    desc: &KernelDesc,
    cfg: &LaunchConfig,
    params: &mut [*mut c_void],
    opts: RunOptions,
) -> Result<()> {
    let fail = |msg: String| Error::Kernel {
        kernel: desc.name().to_string(),
        msg,
    };
    validate(desc, cfg, params.len()).map_err(fail)?;
    let (gx, gy, gz) = cfg.grid;
    if gx == 0 || gy == 0 || gz == 0 || !opts.execute {
        return Ok(());
    }
    if opts.sanitize {
        // SAFETY: params has one valid slot per parameter of the kernel (checked above).
        unsafe { check_pointer_args(desc, params) }.map_err(fail)?;
    }
    let seed = match opts.schedule {
        Schedule::RoundRobin => 0,
        Schedule::Random(s) => mix(s ^ mix(desc
            .name()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)))),
    };
    let launch = Launch {
        desc,
        params: params.as_mut_ptr(),
        grid: [gx, gy, gz],
        block: [cfg.block.0, cfg.block.1, cfg.block.2],
        shared_bytes: cfg.shared_bytes as usize,
        seed,
        random: matches!(opts.schedule, Schedule::Random(_)) as i32,
        guard_shared: opts.sanitize as i32,
    };
    let blocks = gx as u64 * gy as u64 * gz as u64;
    let run_one = |b: u64| -> Result<()> {
        let (bx, by, bz) = (
            (b % gx as u64) as u32,
            ((b / gx as u64) % gy as u64) as u32,
            (b / (gx as u64 * gy as u64)) as u32,
        );
        // SAFETY: the launch describes a validated configuration; see this fn's contract.
        match unsafe { ffi::gs_emu_run_block(&launch, bx, by, bz) } {
            0 => Ok(()),
            1 => Err(fail(format!(
                "deadlock in block ({bx}, {by}, {bz}): every remaining thread waits at a barrier \
                 (__syncthreads or a warp operation) that not every thread reaches ({})",
                opts.schedule
            ))),
            _ => Err(fail(
                "out of host memory for fiber stacks or dynamic shared memory".into(),
            )),
        }
    };
    run_blocks(blocks, run_one)
}

/// The emulator's own pool: its threads run kernel blocks and nothing else.
fn pool() -> Result<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("gradstep-emu-{i}"))
            .build()
            .ok()
    })
    .as_ref()
    .ok_or_else(|| Error::invalid("emu", "could not start the emulator's threads"))
}

/// Runs blocks `0..blocks` in parallel on the emulator's pool. The caller holds the
/// device's stream lock, so it must wait without taking other work: a rayon worker that
/// stole a job issuing another emulated call would deadlock on that lock. A caller on a
/// rayon pool therefore waits on a plain scoped thread, which blocks.
fn run_blocks(blocks: u64, run_one: impl Fn(u64) -> Result<()> + Sync) -> Result<()> {
    if blocks == 1 {
        return run_one(0);
    }
    let pool = pool()?;
    let work = || pool.install(|| (0..blocks).into_par_iter().try_for_each(&run_one));
    if rayon::current_thread_index().is_none() {
        return work();
    }
    std::thread::scope(|s| match s.spawn(work).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Checks the configuration and the parameter count; the message names what is wrong.
fn validate(desc: &KernelDesc, cfg: &LaunchConfig, nparams: usize) -> Result<(), String> {
    if nparams != desc.nparams() {
        return Err(format!(
            "{nparams} arguments given, the kernel takes {}",
            desc.nparams()
        ));
    }
    let (bx, by, bz) = cfg.block;
    if bx == 0 || by == 0 || bz == 0 {
        return Err(format!("block ({bx}, {by}, {bz}) has a zero dimension"));
    }
    let threads = bx as u64 * by as u64 * bz as u64;
    if threads > MAX_THREADS_PER_BLOCK as u64 || bz > 64 {
        return Err(format!(
            "block ({bx}, {by}, {bz}) exceeds {MAX_THREADS_PER_BLOCK} threads (or 64 in z)"
        ));
    }
    if cfg.grid.1 > 65535 || cfg.grid.2 > 65535 || cfg.grid.0 > i32::MAX as u32 {
        return Err(format!("grid {:?} exceeds the grid limits", cfg.grid));
    }
    if cfg.shared_bytes > MAX_DYNAMIC_SHARED_BYTES {
        return Err(format!(
            "{} bytes of dynamic shared memory exceed {MAX_DYNAMIC_SHARED_BYTES}",
            cfg.shared_bytes
        ));
    }
    Ok(())
}

/// Every non-null pointer argument must point into (or one past) a live allocation.
///
/// # Safety
/// `params[i]` points at a value of parameter `i`'s size.
unsafe fn check_pointer_args(desc: &KernelDesc, params: &[*mut c_void]) -> Result<(), String> {
    for (i, &p) in params.iter().enumerate() {
        if !desc.param_is_pointer(i) || desc.param_size(i) != 8 {
            continue;
        }
        // SAFETY: a pointer parameter's slot holds 8 bytes.
        let addr = unsafe { std::ptr::read_unaligned(p as *const u64) };
        if addr != 0 && memory::containing(addr).is_none() {
            return Err(format!(
                "argument {i} ({addr:#x}) does not point into any live emulated allocation"
            ));
        }
    }
    Ok(())
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::KernelArgs;

    #[test]
    fn a_launch_without_execution_is_validated_but_writes_nothing() {
        let desc = ffi::test_kernels()
            .find(|d| d.name() == "emu_test_barrier_phases")
            .expect("host test kernel");
        let n = 64usize;
        let out = memory::alloc(crate::base::Device::Emu(0), n * 4, false).unwrap();
        let poison = i32::from_ne_bytes([0xAB; 4]);
        // SAFETY: `out` is a live allocation of n * 4 bytes.
        unsafe { std::ptr::write_bytes(out as *mut u8, 0xAB, n * 4) };
        // SAFETY: as above.
        let read = || unsafe { std::slice::from_raw_parts(out as *const i32, n).to_vec() };
        let mut args = KernelArgs::new();
        args.push(out);
        let opts = |execute| RunOptions {
            schedule: Schedule::RoundRobin,
            sanitize: false,
            execute,
        };
        let cfg = LaunchConfig::linear(1, n as u32);
        // SAFETY: the kernel takes one pointer to n ints; `out` holds them.
        unsafe { run(desc, &cfg, &mut args.as_params(), opts(false)) }.unwrap();
        assert!(read().iter().all(|&v| v == poison), "nothing ran");
        let too_big = LaunchConfig::linear(1, 2 * MAX_THREADS_PER_BLOCK);
        // SAFETY: rejected before anything runs.
        let err = unsafe { run(desc, &too_big, &mut args.as_params(), opts(false)) };
        assert!(err.is_err(), "still validated");
        // SAFETY: as above.
        unsafe { run(desc, &cfg, &mut args.as_params(), opts(true)) }.unwrap();
        assert!(read().iter().all(|&v| v != poison), "the kernel ran");
        // SAFETY: allocated above, no longer used.
        unsafe { memory::free(out, false) };
    }
}
