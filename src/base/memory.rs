//! How much host memory there is, so that a request larger than it is an
//! [`Error::OutOfMemory`] instead of an abort inside the allocator.

use std::sync::OnceLock;

use super::{DType, Device, Error, Result};

/// The memory this process can have in bytes: physical memory plus swap (Linux:
/// `/proc/meminfo`), or less where a control group limits it (cgroup v2 `memory.max`,
/// v1 `memory.limit_in_bytes`); `None` where it cannot be read. An allocation larger
/// than this can never succeed (one below it may still fail when others hold memory).
pub fn host_memory_bytes() -> Option<u64> {
    static TOTAL: OnceLock<Option<u64>> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        let total = kib("MemTotal:")?;
        let host = total
            .saturating_add(kib("SwapTotal:").unwrap_or(0))
            .saturating_mul(1024);
        let limit = [
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
        .min();
        Some(limit.map_or(host, |l| l.min(host)))
    })
}

/// `n` elements of `elem_bytes` each, in bytes; `OutOfMemory` on `device` when that
/// overflows or is more than the host has (host memory also backs the emulator).
pub fn host_bytes(device: Device, n: usize, elem_bytes: usize) -> Result<usize> {
    let bytes = n.checked_mul(elem_bytes).ok_or(Error::OutOfMemory {
        device,
        bytes: usize::MAX,
    })?;
    match host_memory_bytes() {
        Some(limit) if bytes as u64 > limit => Err(Error::OutOfMemory { device, bytes }),
        _ => Ok(bytes),
    }
}

/// [`host_bytes`] where `device`'s memory is host memory (the CPU and the emulator); a
/// GPU reports its own limit, so there only the overflow is checked.
#[cfg(feature = "cli")] // the benchmarks' sizes
pub fn host_backed_bytes(device: Device, n: usize, elem_bytes: usize) -> Result<usize> {
    match device {
        Device::Cpu | Device::Emu(_) => host_bytes(device, n, elem_bytes),
        _ => n.checked_mul(elem_bytes).ok_or(Error::OutOfMemory {
            device,
            bytes: usize::MAX,
        }),
    }
}

/// `Ok` when a host buffer of `n` elements of `dtype` can exist at all.
pub fn ensure_host_fits(n: usize, dtype: DType) -> Result<()> {
    host_bytes(Device::Cpu, n, dtype.size_in_bytes()).map(drop)
}

/// An empty vector with room for `n` elements, or `OutOfMemory` (never an abort).
pub fn try_vec_with_capacity<T>(n: usize) -> Result<Vec<T>> {
    let bytes = host_bytes(Device::Cpu, n, std::mem::size_of::<T>())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        device: Device::Cpu,
        bytes,
    })?;
    Ok(v)
}
