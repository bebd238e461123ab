//! Per-device event counters: deterministic, so tests can assert launch budgets.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::CounterSnapshot;

/// Running totals of what a GPU device (CUDA or emulated) was asked to do.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    launches: AtomicU64,
    memsets: AtomicU64,
    htod: AtomicU64,
    dtoh: AtomicU64,
    dtod: AtomicU64,
    syncs: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    stream_waits: AtomicU64,
    graph_launches: AtomicU64,
    collectives: AtomicU64,
    collective_bytes: AtomicU64,
}

/// What a counter counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
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
    /// A driver allocation.
    Alloc,
    /// A driver free.
    Free,
    /// A stream made to wait for another.
    StreamWait,
    /// A captured graph launched.
    GraphLaunch,
    /// A collective that sends this many bytes from this device.
    Collective(u64),
}

impl Counters {
    /// Records one event.
    pub(crate) fn record(&self, e: Event) {
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
            Event::Free => &self.frees,
            Event::StreamWait => &self.stream_waits,
            Event::GraphLaunch => &self.graph_launches,
            Event::Collective(bytes) => {
                self.collective_bytes.fetch_add(bytes, Ordering::Relaxed);
                &self.collectives
            }
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current totals.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            launches: l(&self.launches),
            memsets: l(&self.memsets),
            htod: l(&self.htod),
            dtoh: l(&self.dtoh),
            dtod: l(&self.dtod),
            syncs: l(&self.syncs),
            allocs: l(&self.allocs),
            frees: l(&self.frees),
            stream_waits: l(&self.stream_waits),
            graph_launches: l(&self.graph_launches),
            collectives: l(&self.collectives),
            collective_bytes: l(&self.collective_bytes),
        }
    }
}
