//! Where a tensor lives.

use std::fmt;

/// A device: the CPU, a CUDA GPU, or the host emulation of the CUDA backend.
///
/// `Device::cuda_if_available`, `Device::parse` and the per-device queries
/// (`synchronize`, `counters`, `memory_stats`) are defined by the backend layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// Host memory, rayon-parallel CPU kernels.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
    /// The CUDA kernels compiled for the host, with host memory as device memory; the
    /// ordinal tells emulated devices apart (`emu` is `Emu(0)`, `emu:1` the next one), so
    /// that several of them can act as the ranks of a process group in one process.
    Emu(usize),
}

impl Device {
    /// Whether kernels of `kernels/*.cu` run this device's ops (CUDA or emulation).
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_) | Device::Emu(_))
    }

    /// Whether this is an emulated device.
    pub fn is_emu(self) -> bool {
        matches!(self, Device::Emu(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emu(0) => f.write_str("emu"),
            Device::Emu(n) => write!(f, "emu:{n}"),
        }
    }
}
