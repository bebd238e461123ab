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
//! after the reuse. A request takes the free block of its class with the lowest address
//! (as PyTorch's best fit does among equal sizes): the choice depends on which blocks are
//! free, not on the order they were freed in, so a loop that frees and takes the same
//! blocks every step gets the same addresses every step, and the optimizer's cached
//! launch tables stay valid. Size classes: multiples of 512 bytes up to 1 MiB, then eight steps
//! per power of two (at most 12.5% rounding). On an allocation failure every cached
//! block is released and the request is retried once.
//!
//! Without caching (the emulator's sanitizer, which must see every buffer's exact end
//! and every use after a free) each request is an exact driver allocation and each
//! release a driver free.
//!
//! Graph pools: while a graph is captured, and as long as it lives, its replays write
//! the blocks it used, so none of them may be handed to other work. Every block that is
//! live when the capture starts, or is taken during it, is pinned to the graph: freed
//! during the capture it can be taken again only by the capture (whose replay runs in the
//! same order); freed after it, it waits until the graph is dropped.

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// Free blocks by size class, lowest address first.
type FreeLists = HashMap<usize, BTreeSet<u64>>;

/// The blocks of one captured graph.
struct GraphPool {
    id: u64,
    /// Blocks the graph may use: live at the capture's start or taken during it.
    pinned: HashSet<u64>,
    /// Whether the capture is under way (its freed blocks may be taken again by it).
    capturing: bool,
    /// Blocks whose contents were written outside the capture (a launch table made
    /// during it): no later captured work may take them, so they wait for the drop.
    fixed: HashSet<u64>,
    /// Blocks freed during the capture, for the capture to take again.
    free: FreeLists,
    /// Blocks freed after the capture: released when the graph is dropped.
    deferred: Vec<(u64, usize)>,
}

#[derive(Default)]
struct Pools {
    /// Free blocks nobody may still use.
    free: FreeLists,
    /// Every block handed out and not released: address -> size class.
    live: HashMap<u64, usize>,
    /// Pools of the live graphs.
    graphs: Vec<GraphPool>,
    next_graph: u64,
    /// Bytes handed out and not yet released.
    allocated: u64,
    peak_allocated: u64,
    /// Bytes taken from the driver and not given back.
    reserved: u64,
    peak_reserved: u64,
}

impl Pools {
    /// The pool of the capture under way.
    fn capturing(&mut self) -> Option<&mut GraphPool> {
        self.graphs.iter_mut().find(|g| g.capturing)
    }

    /// Puts a released block where it belongs: the capture's free list, a graph's
    /// deferred list, or the general free list.
    fn put_back(&mut self, ptr: u64, class: usize) {
        match self.graphs.iter_mut().find(|g| g.pinned.contains(&ptr)) {
            Some(g) if g.capturing && !g.fixed.contains(&ptr) => {
                g.free.entry(class).or_default().insert(ptr);
            }
            Some(g) => g.deferred.push((ptr, class)),
            None => {
                self.free.entry(class).or_default().insert(ptr);
            }
        }
    }
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

    /// A block for `bytes` (> 0) bytes: `(address, size class)`. `mine`: the calling
    /// thread is the one capturing (only its blocks join the graph; another thread's
    /// allocation that raced with the start of a capture comes from the general pools and
    /// its work then waits for the capture to end).
    pub(super) fn take(&self, bytes: usize, mine: bool) -> Result<(u64, usize)> {
        self.take_block(bytes, false, mine)
    }

    /// A block for `bytes` (> 0) bytes whose contents the host writes at once, outside
    /// the capture under way (if any): never a block the capture used before, and held
    /// for the graph until it is dropped.
    pub(super) fn take_fixed(&self, bytes: usize) -> Result<(u64, usize)> {
        self.take_block(bytes, true, true)
    }

    fn take_block(&self, bytes: usize, fixed: bool, mine: bool) -> Result<(u64, usize)> {
        let class = size_class(bytes, self.cached);
        let mut p = self.pools();
        let from_capture = if fixed || !mine {
            None
        } else {
            p.capturing()
                .and_then(|g| g.free.get_mut(&class)?.pop_first())
        };
        let reused = match from_capture {
            Some(ptr) => Some(ptr),
            None => p.free.get_mut(&class).and_then(|v| v.pop_first()),
        };
        let ptr = match reused {
            Some(ptr) => ptr,
            None => {
                let capturing = mine && p.capturing().is_some();
                drop(p);
                let ptr = match self.driver_alloc(class) {
                    Ok(ptr) => ptr,
                    // During a capture the cache cannot be emptied (freeing is no
                    // capturable work): the failure stands.
                    Err(e) if capturing => return Err(e),
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
        if let Some(g) = p.capturing().filter(|_| mine) {
            g.pinned.insert(ptr);
            if fixed {
                g.fixed.insert(ptr);
            }
        }
        p.live.insert(ptr, class);
        p.allocated += class as u64;
        p.peak_allocated = p.peak_allocated.max(p.allocated);
        Ok((ptr, class))
    }

    fn driver_alloc(&self, bytes: usize) -> Result<u64> {
        self.counters.record(Event::Alloc);
        self.api.alloc(bytes)
    }

    fn driver_free(&self, ptr: u64) {
        self.counters.record(Event::Free);
        // SAFETY: the block came from `api.alloc` and nothing will use it again; queued
        // work that used it is stream-ordered before the free.
        unsafe { self.api.free(ptr) };
    }

    /// Gives every cached block back to the driver (PyTorch's `empty_cache`); blocks a
    /// graph may still use stay. Nothing is freed while a graph is being captured.
    pub(crate) fn release_cached(&self) {
        let blocks: Vec<(usize, BTreeSet<u64>)> = {
            let mut p = self.pools();
            if p.capturing().is_some() {
                return;
            }
            p.free.drain().collect()
        };
        let mut freed = 0u64;
        for (class, ptrs) in blocks {
            for ptr in ptrs {
                self.driver_free(ptr);
                freed += class as u64;
            }
        }
        self.pools().reserved -= freed;
    }

    /// Starts pinning blocks to a new graph (see the module docs); returns its id.
    pub(crate) fn begin_graph(&self) -> u64 {
        let mut p = self.pools();
        let id = p.next_graph;
        p.next_graph += 1;
        let pinned = p.live.keys().copied().collect();
        p.graphs.push(GraphPool {
            id,
            pinned,
            fixed: HashSet::new(),
            capturing: true,
            free: FreeLists::new(),
            deferred: Vec::new(),
        });
        id
    }

    /// Ends the capture of graph `id`: blocks it freed wait for the graph's drop.
    pub(crate) fn end_capture(&self, id: u64) {
        let mut p = self.pools();
        if let Some(g) = p.graphs.iter_mut().find(|g| g.id == id) {
            g.capturing = false;
            for (class, ptrs) in g.free.drain() {
                g.deferred.extend(ptrs.into_iter().map(|ptr| (ptr, class)));
            }
        }
    }

    /// Graph `id` is gone: its blocks become ordinary again (a block another live graph
    /// pinned too moves to that graph).
    pub(crate) fn drop_graph(&self, id: u64) {
        let mut p = self.pools();
        let Some(at) = p.graphs.iter().position(|g| g.id == id) else {
            return;
        };
        let mut g = p.graphs.remove(at);
        for (class, ptrs) in g.free.drain() {
            g.deferred.extend(ptrs.into_iter().map(|ptr| (ptr, class)));
        }
        for (ptr, class) in g.deferred {
            p.put_back(ptr, class);
        }
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
        p.live.remove(&ptr);
        p.allocated -= class as u64;
        let pinned = p.graphs.iter().any(|g| g.pinned.contains(&ptr));
        if self.cached || pinned {
            p.put_back(ptr, class);
            return;
        }
        p.reserved -= class as u64;
        drop(p);
        self.driver_free(ptr);
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
