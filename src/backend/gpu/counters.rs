//! Per-device event counters: deterministic, so tests can assert launch budgets.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals of what a GPU device (CUDA or emulated) was asked to do.
#[derive(Debug, Default)]
pub struct Counters {
    launches: AtomicU64,
    memsets: AtomicU64,
    htod: AtomicU64,
    dtoh: AtomicU64,
    dtod: AtomicU64,
    syncs: AtomicU64,
    allocs: AtomicU64,
}

/// A snapshot of [`Counters`]; subtract two snapshots to count what happened between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Kernel launches.
    pub launches: u64,
    /// Memsets (device memory cleared without a kernel).
    pub memsets: u64,
    /// Host-to-device copies.
    pub htod: u64,
    /// Device-to-host copies (each one synchronises with the host).
    pub dtoh: u64,
    /// Device-to-device copies.
    pub dtod: u64,
    /// Explicit host synchronisations, device-to-host copies included.
    pub syncs: u64,
    /// Device allocations.
    pub allocs: u64,
}

/// What a counter counts.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// A kernel launch.
    Launch,
    /// A memset.
    Memset,
    /// A host-to-device copy.
    HtoD,
    /// A device-to-host copy (also a sync).
    DtoH,
    /// A device-to-device copy.
    DtoD,
    /// A stream or device synchronisation.
    Sync,
    /// An allocation.
    Alloc,
}

impl Counters {
    /// Records one event.
    pub fn record(&self, e: Event) {
        let c = match e {
            Event::Launch => &self.launches,
            Event::Memset => &self.memsets,
            Event::HtoD => &self.htod,
            Event::DtoH => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                &self.dtoh
            }
            Event::DtoD => &self.dtod,
            Event::Sync => &self.syncs,
            Event::Alloc => &self.allocs,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current totals.
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            launches: l(&self.launches),
            memsets: l(&self.memsets),
            htod: l(&self.htod),
            dtoh: l(&self.dtoh),
            dtod: l(&self.dtod),
            syncs: l(&self.syncs),
            allocs: l(&self.allocs),
        }
    }
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
        }
    }
}
