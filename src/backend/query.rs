//! What a user can ask of a device: whether it exists, its name, its counters, and a
//! synchronisation. Defined here (not in the bottom layer) because the answers come
//! from the backends.

use crate::base::{Device, Error, Result};

/// Running totals of what a GPU device (CUDA or emulated) was asked to do. Subtract two
/// snapshots to count what happened between them; the counts are deterministic, so
/// tests assert them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Kernel launches issued from the host (vendor GEMMs included).
    pub launches: u64,
    /// Memsets (device memory cleared without a kernel).
    pub memsets: u64,
    /// Host-to-device copies.
    pub htod: u64,
    /// Device-to-host copies (each one synchronises with the host).
    pub dtoh: u64,
    /// Device-to-device copies.
    pub dtod: u64,
    /// Host synchronisations, device-to-host copies included.
    pub syncs: u64,
    /// Allocations from the driver (or the emulator's host allocator).
    pub allocs: u64,
    /// Frees back to the driver.
    pub frees: u64,
    /// Streams made to wait for another on the device (no host synchronisation).
    pub stream_waits: u64,
    /// Captured graphs launched (each replays its kernels without host launches).
    pub graph_launches: u64,
    /// Collectives issued (all-reduce, broadcast, all-gather, reduce-scatter, barrier)
    /// through a [`crate::distributed::ProcessGroup`] of this device.
    pub collectives: u64,
    /// Bytes this device sent into its collectives (its input buffers' sizes).
    pub collective_bytes: u64,
}

impl std::ops::Sub for CounterSnapshot {
    type Output = CounterSnapshot;
    fn sub(self, o: CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            launches: self.launches - o.launches,
            memsets: self.memsets - o.memsets,
            htod: self.htod - o.htod,
            dtoh: self.dtoh - o.dtoh,
            dtod: self.dtod - o.dtod,
            syncs: self.syncs - o.syncs,
            allocs: self.allocs - o.allocs,
            frees: self.frees - o.frees,
            stream_waits: self.stream_waits - o.stream_waits,
            graph_launches: self.graph_launches - o.graph_launches,
            collectives: self.collectives - o.collectives,
            collective_bytes: self.collective_bytes - o.collective_bytes,
        }
    }
}

/// Memory of a GPU device, in bytes (the names of `torch.cuda.memory_stats` where they
/// match).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors and buffers (`allocated_bytes.all.current`).
    pub allocated_bytes: u64,
    /// The most `allocated_bytes` has been (`allocated_bytes.all.peak`).
    pub peak_allocated_bytes: u64,
    /// Bytes taken from the driver, cached blocks included (`reserved_bytes.all.current`).
    pub reserved_bytes: u64,
    /// The most `reserved_bytes` has been (`reserved_bytes.all.peak`).
    pub peak_reserved_bytes: u64,
}

/// `$cpu` on the CPU; on a GPU device, `$gpu` with `$d` bound to the device's handle.
macro_rules! per_device {
    ($device:expr, $cpu:expr, |$d:ident| $gpu:expr) => {
        match $device {
            Device::Cpu => $cpu,
            #[cfg(gpu)]
            device => {
                let $d = super::gpu::get(device)?;
                $gpu
            }
            #[cfg(not(gpu))]
            device => Err(super::not_built(device)),
        }
    };
}

impl Device {
    /// Number of CUDA devices: [`Error::NoCudaDriver`] when libcuda cannot be loaded,
    /// [`Error::NotBuilt`] without the `cuda` feature. Never panics.
    pub fn cuda_device_count() -> Result<usize> {
        #[cfg(feature = "cuda")]
        return super::cuda::device_count();
        #[cfg(not(feature = "cuda"))]
        Err(super::not_built(Device::Cuda(0)))
    }

    /// `Cuda(ordinal)` when a driver and that device exist, else `Cpu`. Never panics.
    pub fn cuda_if_available(ordinal: usize) -> Device {
        if Device::cuda_device_count().is_ok_and(|n| ordinal < n) {
            Device::Cuda(ordinal)
        } else {
            Device::Cpu
        }
    }

    /// Parses `cpu`, `cuda`, `cuda:N`, `emu`, `emu:N`, and `auto` (the first GPU if there is one).
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu(0)),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::cuda_if_available(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .or_else(|| {
                    s.strip_prefix("emu:")
                        .and_then(|n| n.parse().ok())
                        .map(Device::Emu)
                })
                .ok_or_else(|| {
                    Error::invalid(
                        "device",
                        format!(
                            "unknown device '{s}' (expected auto, cpu, cuda, cuda:N, emu or emu:N)"
                        ),
                    )
                }),
        }
    }

    /// The device's name (`cpu`, the GPU's marketing name, or the emulator's schedule).
    pub fn name(self) -> Result<String> {
        per_device!(self, Ok("cpu".into()), |d| Ok(d.name()))
    }

    /// Waits until the device has finished all queued work, and reports a deferred
    /// device-side error (an out-of-range index, say) that an op recorded since the last
    /// synchronisation. A no-op on the CPU. Counted as one sync.
    pub fn synchronize(self) -> Result<()> {
        per_device!(self, Ok(()), |d| d.synchronize())
    }

    /// The device's counters (all zero on the CPU, which counts nothing).
    pub fn counters(self) -> Result<CounterSnapshot> {
        per_device!(self, Ok(CounterSnapshot::default()), |d| Ok(d.counters()))
    }

    /// The memory counters of the device's caching allocator (zero on the CPU, whose
    /// memory is the process's). PyTorch's `torch.cuda.memory_stats` in short.
    pub fn memory_stats(self) -> Result<MemoryStats> {
        per_device!(self, Ok(MemoryStats::default()), |d| Ok(d.memory_stats()))
    }

    /// Restarts the peaks of [`Self::memory_stats`] at the current values
    /// (`torch.cuda.reset_peak_memory_stats`).
    pub fn reset_peak_memory_stats(self) -> Result<()> {
        per_device!(self, Ok(()), |d| {
            d.reset_peak_memory_stats();
            Ok(())
        })
    }

    /// Gives the device's cached free blocks back to the driver
    /// (`torch.cuda.empty_cache`). Memory held by live tensors stays.
    pub fn empty_cache(self) -> Result<()> {
        per_device!(self, Ok(()), |d| {
            d.empty_cache();
            Ok(())
        })
    }
}
