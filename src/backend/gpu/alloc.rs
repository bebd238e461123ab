//! The caching device allocator, shared by CUDA and the emulator.
//!
//! Like PyTorch's caching allocator (not its `cudaMallocAsync` backend): a freed block
//! goes back to a free list of its size class instead of to the driver, and the next
//! request of that class takes it, so a training step that repeats the shapes of the
//! last one makes no driver allocation and no free. Chosen over a driver memory pool
//! with a raised release threshold because it behaves the same on every device: the
//! emulator runs exactly this code, so the "0 allocations per steady step" budgets are
//! asserted in CI, and counting pool growth needs no driver query.
//!
//! All work of a device is ordered on its one stream, so a block freed by the host can
//! be handed out again at once: work queued before the free finishes before work queued
//! after the reuse. Size classes: multiples of 512 bytes up to 1 MiB, then eight steps
//! per power of two (at most 12.5% rounding). On an allocation failure every cached
//! block is released and the request is retried once.
//!
//! Without caching (the emulator's sanitizer, which must see every buffer's exact end
//! and every use after a free) each request is an exact driver allocation and each
//! release a driver free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::counters::{Counters, Event};
use super::DeviceApi;
use crate::backend::MemoryStats;
use crate::base::{Device, DeviceMemory, Result};

/// The rounding granularity of small blocks.
const SMALL_STEP: usize = 512;
/// Blocks up to this size round to [`SMALL_STEP`].
const SMALL_MAX: usize = 1 << 20;

/// The size class of a request of `bytes` (> 0) bytes.
pub(super) fn size_class(bytes: usize, cached: bool) -> usize {
    if !cached {
        return bytes;
    }
    if bytes <= SMALL_MAX {
        return bytes.div_ceil(SMALL_STEP) * SMALL_STEP;
    }
    // Eight steps between consecutive powers of two.
    let step = (bytes.next_power_of_two() / 16).max(SMALL_STEP);
    bytes.checked_next_multiple_of(step).unwrap_or(bytes)
}

#[derive(Default)]
struct Pools {
    /// Free blocks by size class.
    free: HashMap<usize, Vec<u64>>,
    /// Bytes handed out and not yet released.
    allocated: u64,
    peak_allocated: u64,
    /// Bytes taken from the driver and not given back.
    reserved: u64,
    peak_reserved: u64,
}

/// The allocator of one device.
pub(crate) struct Allocator {
    device: Device,
    api: Arc<dyn DeviceApi>,
    counters: Arc<Counters>,
    cached: bool,
    pools: Mutex<Pools>,
}

impl Allocator {
    /// An empty cache in front of `api`.
    pub(super) fn new(
        device: Device,
        api: Arc<dyn DeviceApi>,
        counters: Arc<Counters>,
        cached: bool,
    ) -> Self {
        Allocator {
            device,
            api,
            counters,
            cached,
            pools: Mutex::new(Pools::default()),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A block for `bytes` (> 0) bytes: `(address, size class)`.
    pub(super) fn take(&self, bytes: usize) -> Result<(u64, usize)> {
        let class = size_class(bytes, self.cached);
        let mut p = self.pools();
        let cached = p.free.get_mut(&class).and_then(|v| v.pop());
        let ptr = match cached {
            Some(ptr) => ptr,
            None => {
                drop(p);
                let ptr = match self.driver_alloc(class) {
                    Ok(ptr) => ptr,
                    Err(_) => {
                        self.release_cached();
                        self.driver_alloc(class)?
                    }
                };
                p = self.pools();
                p.reserved += class as u64;
                p.peak_reserved = p.peak_reserved.max(p.reserved);
                ptr
            }
        };
        p.allocated += class as u64;
        p.peak_allocated = p.peak_allocated.max(p.allocated);
        Ok((ptr, class))
    }

    fn driver_alloc(&self, bytes: usize) -> Result<u64> {
        self.counters.record(Event::Alloc);
        self.api.alloc(bytes)
    }

    /// Gives every cached block back to the driver (PyTorch's `empty_cache`).
    pub(crate) fn release_cached(&self) {
        let blocks: Vec<(usize, Vec<u64>)> = self.pools().free.drain().collect();
        let mut freed = 0u64;
        for (class, ptrs) in blocks {
            for ptr in ptrs {
                self.counters.record(Event::Free);
                // SAFETY: a cached block came from `api.alloc` and nothing uses it; queued
                // work that used it is stream-ordered before the free.
                unsafe { self.api.free(ptr) };
                freed += class as u64;
            }
        }
        self.pools().reserved -= freed;
    }

    /// The memory counters.
    pub(crate) fn stats(&self) -> MemoryStats {
        let p = self.pools();
        MemoryStats {
            allocated_bytes: p.allocated,
            peak_allocated_bytes: p.peak_allocated,
            reserved_bytes: p.reserved,
            peak_reserved_bytes: p.peak_reserved,
        }
    }

    /// Restarts the peaks at the current values (`torch.cuda.reset_peak_memory_stats`).
    pub(crate) fn reset_peaks(&self) {
        let mut p = self.pools();
        p.peak_allocated = p.allocated;
        p.peak_reserved = p.reserved;
    }
}

// SAFETY: `release` takes back exactly the blocks `take` handed out (by size class).
unsafe impl DeviceMemory for Allocator {
    fn device(&self) -> Device {
        self.device
    }

    unsafe fn release(&self, ptr: u64, bytes: usize) {
        let class = size_class(bytes, self.cached);
        let mut p = self.pools();
        p.allocated -= class as u64;
        if self.cached {
            p.free.entry(class).or_default().push(ptr);
            return;
        }
        p.reserved -= class as u64;
        drop(p);
        self.counters.record(Event::Free);
        // SAFETY: the caller's contract: the block came from `take` and is released once.
        unsafe { self.api.free(ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth() {
        assert_eq!(size_class(1, true), 512);
        assert_eq!(size_class(512, true), 512);
        assert_eq!(size_class(513, true), 1024);
        assert_eq!(size_class(1 << 20, true), 1 << 20);
        for bytes in [(1 << 20) + 1, 3 << 20, 5_000_000, 123_456_789] {
            let c = size_class(bytes, true);
            assert!(c >= bytes && c - bytes <= bytes / 8, "{bytes} -> {c}");
        }
        assert_eq!(size_class(1000, false), 1000);
    }
}
