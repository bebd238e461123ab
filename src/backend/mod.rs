//! Backends: the CPU, and the GPU launch path shared by CUDA and its host emulation.
//!
//! Each primitive is declared once, in one of the traits of `primitives`, and
//! implemented once per backend: `cpu::CpuBackend` and `gpu::GpuDevice` (whose
//! `DeviceApi` is CUDA or the emulator). Backends take storage and layout (a raw
//! tensor), never [`crate::Tensor`]: autograd lives above them. All of that is private
//! to the crate; what is public here is what a user asks of a device (its counters,
//! its memory, see the methods of [`crate::Device`]) and the options of the losses.

pub(crate) mod collective;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "emu")]
pub(crate) mod emu;
#[cfg(gpu)]
pub(crate) mod gpu;
pub(crate) mod primitives;
mod query;

use std::sync::{Arc, OnceLock};

pub(crate) use primitives::*;
pub use primitives::{CrossEntropyOpts, Reduction};
pub use query::{CounterSnapshot, MemoryStats};

use crate::base::{Device, Error, Result};

/// The backend that runs `device`'s primitives; opening a GPU device on first use.
pub(crate) fn backend(device: Device) -> Result<Arc<dyn Backend>> {
    static CPU: OnceLock<Arc<cpu::CpuBackend>> = OnceLock::new();
    match device {
        Device::Cpu => Ok(CPU.get_or_init(|| Arc::new(cpu::CpuBackend)).clone()),
        #[cfg(gpu)]
        Device::Cuda(_) | Device::Emu(_) => Ok(gpu::get(device)?),
        #[cfg(not(gpu))]
        Device::Cuda(_) | Device::Emu(_) => Err(not_built(device)),
    }
}

/// An error naming `what` when `device` is capturing a graph: work that must run once
/// (creating state) would be recorded and rerun by every replay.
pub(crate) fn refuse_in_capture(device: Device, what: &str) -> Result<()> {
    #[cfg(gpu)]
    if device.is_gpu() && gpu::get(device)?.capturing() {
        return Err(Error::invalid(
            "graph capture",
            format!(
                "{what} inside a graph capture would be redone by every replay: run the \
                 step eagerly once before capturing it"
            ),
        ));
    }
    let _ = (device, what);
    Ok(())
}

/// The error for a device whose backend this build left out.
#[allow(dead_code)]
pub(crate) fn not_built(device: Device) -> Error {
    Error::NotBuilt {
        device,
        feature: if device.is_emu() { "emu" } else { "cuda" },
    }
}
