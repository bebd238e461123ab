//! Where a tensor lives.

use std::fmt;

use crate::error::{Error, Result};

/// A device: the CPU, a CUDA GPU, or the host emulation of the CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// Host memory, rayon-parallel CPU kernels.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
    /// The CUDA kernels compiled for the host, with host memory as device memory.
    Emu,
}

impl Device {
    /// `Cuda(ordinal)` when a driver and that device exist, else `Cpu`. Never panics.
    pub fn cuda_if_available(ordinal: usize) -> Device {
        if crate::backend::cuda::device_count().is_ok_and(|n| ordinal < n) {
            Device::Cuda(ordinal)
        } else {
            Device::Cpu
        }
    }

    /// Whether kernels of `kernels/*.cu` run this device's ops (CUDA or emulation).
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_) | Device::Emu)
    }

    /// Parses `cpu`, `cuda`, `cuda:N`, `emu`, and `auto` (the first GPU if there is one).
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::cuda_if_available(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::invalid(
                        "device",
                        format!("unknown device '{s}' (expected auto, cpu, cuda, cuda:N or emu)"),
                    )
                }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emu => f.write_str("emu"),
        }
    }
}
