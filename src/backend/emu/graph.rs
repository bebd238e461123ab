//! The emulator's twin of CUDA graphs: during a capture every launch is recorded with
//! its parameter bytes copied then (so a host value passed by value is frozen exactly as
//! CUDA's stream capture freezes it), memsets, device copies and collectives likewise; a
//! replay runs the recorded work in order.

use std::any::Any;
use std::ffi::c_void;

use super::ffi::KernelDesc;
use super::{launch, memory};
use crate::backend::gpu::{Collective, Comm, DeviceGraph, LaunchConfig, Params};
use crate::base::Result;

/// One recorded piece of work.
pub(super) enum Recorded {
    /// A kernel launch and a copy of each of its parameters.
    Launch {
        desc: &'static KernelDesc,
        cfg: LaunchConfig,
        params: Vec<Box<[u128]>>,
    },
    /// `memset_zero(ptr, bytes)`.
    Memset { ptr: u64, bytes: usize },
    /// `dtod(src, dst, bytes)`.
    Copy { src: u64, dst: u64, bytes: usize },
    /// A collective with this rank's communicator: a replay joins the other ranks'.
    Collective { comm: Comm, c: Collective },
}

impl Recorded {
    /// A launch with its parameters copied now.
    ///
    /// # Safety
    /// `args[i]` points at a value of the size of the kernel's parameter `i` (checked:
    /// the count matches `desc`).
    pub(super) unsafe fn launch(
        desc: &'static KernelDesc,
        cfg: LaunchConfig,
        args: Params<'_>,
    ) -> Result<Recorded> {
        if args.len() != desc.nparams() {
            return Err(crate::Error::Kernel {
                kernel: desc.name().into(),
                msg: format!(
                    "{} arguments given, the kernel takes {}",
                    args.len(),
                    desc.nparams()
                ),
            });
        }
        let params = args
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let bytes = desc.param_size(i);
                let mut slot = vec![0u128; bytes.div_ceil(16).max(1)].into_boxed_slice();
                // SAFETY: the caller's contract: `p` holds `bytes` bytes; the slot has room.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        p as *const u8,
                        slot.as_mut_ptr() as *mut u8,
                        bytes,
                    )
                };
                slot
            })
            .collect();
        Ok(Recorded::Launch { desc, cfg, params })
    }
}

/// A recorded graph.
pub(super) struct EmuGraph(pub(super) Vec<Recorded>);

// SAFETY: the recorded parameter copies are plain bytes owned by the graph; the kernel
// descriptors are immutable static data; communicators are Send + Sync.
unsafe impl Send for EmuGraph {}
// SAFETY: as above; a replay only reads the graph.
unsafe impl Sync for EmuGraph {}

impl DeviceGraph for EmuGraph {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl EmuGraph {
    /// Runs the recorded work in order, holding the device's stream (`hold` takes it)
    /// except while a collective waits for the other ranks: two groups over the same
    /// devices must not block each other's members (as in [`super::collective::run`]).
    ///
    /// # Safety
    /// The memory the recorded work uses is still allocated.
    pub(super) unsafe fn run<G>(
        &self,
        opts: launch::RunOptions,
        hold: impl Fn() -> G,
    ) -> Result<()> {
        let mut held = None;
        for r in &self.0 {
            if matches!(r, Recorded::Collective { .. }) {
                held = None;
            } else if held.is_none() {
                held = Some(hold());
            }
            match r {
                Recorded::Launch { desc, cfg, params } => {
                    let mut ptrs: Vec<*mut c_void> =
                        params.iter().map(|s| s.as_ptr() as *mut c_void).collect();
                    // SAFETY: the parameters are the bytes the launch was issued with;
                    // the caller keeps its memory allocated.
                    unsafe { launch::run(desc, cfg, &mut ptrs, opts)? };
                }
                Recorded::Memset { ptr, bytes } => {
                    memory::check_range("emu memset", *ptr, *bytes)?;
                    // SAFETY: the range lies inside a live allocation.
                    unsafe { std::ptr::write_bytes(*ptr as *mut u8, 0, *bytes) };
                }
                Recorded::Collective { comm, c } => {
                    // SAFETY: the caller keeps the recorded buffers allocated; every
                    // rank's replay joins in the same order as its capture recorded.
                    unsafe { super::collective::run(comm, c)? };
                }
                Recorded::Copy { src, dst, bytes } => {
                    memory::check_range("emu dtod (source)", *src, *bytes)?;
                    memory::check_range("emu dtod (destination)", *dst, *bytes)?;
                    // SAFETY: both ranges lie inside live allocations; `copy` allows overlap.
                    unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes) };
                }
            }
        }
        Ok(())
    }
}
