//! The data loader: batches in a seeded order, collated ahead on a background thread.
//!
//! While the training thread works on one batch, a loader thread collates the next ones
//! (up to `prefetch` of them) into host memory; datasets may parallelise collation with
//! rayon. A consumer that runs on a rayon worker (as `gradstep train` does, so that
//! parallel ops start on the calling thread) runs pool jobs while it waits for a batch
//! instead of blocking the worker. Batches reach the device through [`HostBatch::to_device`] on the training
//! thread. (On CUDA, pinned host buffers and an asynchronous copy on a side stream would
//! overlap the transfer too; not done yet.)

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::base::{Error, Result};
use crate::data::{Batch, Dataset, HostBatch};
use crate::tensor::{Device, Rng};

/// How long a rayon worker waiting for a batch blocks before it looks for pool jobs again.
const WAIT_SLICE: Duration = Duration::from_micros(100);

/// Iterates over a dataset in batches, like PyTorch's `DataLoader`.
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    drop_last: bool,
    shuffle: Option<Rng>,
    device: Device,
    prefetch: usize,
    /// `(rank, world size)` of a data-parallel run.
    shard: Option<(usize, usize)>,
}

/// Rank `rank`'s part of a global batch of `len` samples split over `world` ranks: a
/// contiguous range, as even as possible (the first `len % world` ranks get one more).
pub fn shard_range(len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

impl DataLoader {
    /// A loader over `dataset` with batches of `batch_size` samples, in order, on the CPU,
    /// keeping the last partial batch and collating 2 batches ahead.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid(
                "DataLoader",
                "batch_size must be at least 1",
            ));
        }
        Ok(DataLoader {
            dataset,
            batch_size,
            drop_last: false,
            shuffle: None,
            device: Device::Cpu,
            prefetch: 2,
            shard: None,
        })
    }

    /// Rank `rank` of `world_size` in a data-parallel run (the distributed sampler). The
    /// epoch's sample order is the one a one-rank loader with the same generator gives;
    /// it is cut into global batches of `batch_size * world_size` samples, and each rank
    /// takes its contiguous part of each ([`shard_range`]). So a run on N ranks with
    /// batch B each sees, batch by batch, exactly the samples of a one-rank run with
    /// batch N·B, for any N (a last, partial global batch is split as evenly as
    /// possible; a rank may get an empty part). `len()` counts global batches;
    /// `drop_last` drops a partial global batch.
    pub fn shard(mut self, rank: usize, world_size: usize) -> Result<Self> {
        if rank >= world_size {
            return Err(Error::invalid(
                "DataLoader",
                format!("rank {rank} of a world of {world_size} ranks"),
            ));
        }
        self.batch_size
            .checked_mul(world_size)
            .ok_or_else(|| Error::invalid("DataLoader", "batch_size * world_size overflows"))?;
        self.shard = Some((rank, world_size));
        Ok(self)
    }

    /// Samples per global batch: `batch_size` times the world size of a sharded loader.
    pub fn global_batch_size(&self) -> usize {
        self.batch_size * self.shard.map_or(1, |(_, w)| w)
    }

    /// Samples in global batch `i` of an epoch (all ranks together).
    pub fn global_batch_len(&self, i: usize) -> usize {
        let g = self.global_batch_size();
        self.dataset.len().saturating_sub(i * g).min(g)
    }

    /// Reshuffles the samples at the start of every epoch with `rng` (seeded: the same
    /// generator state gives the same order).
    pub fn shuffle(mut self, rng: Rng) -> Self {
        self.shuffle = Some(rng);
        self
    }

    /// Whether to drop the last batch when it has fewer than `batch_size` samples.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The device the batches are copied to.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// How many batches the loader thread collates ahead (at least 1).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches per epoch (`len(dataloader)` in PyTorch; global batches when
    /// sharded).
    pub fn len(&self) -> usize {
        let n = self.dataset.len();
        let g = self.global_batch_size();
        if self.drop_last {
            n / g
        } else {
            n.div_ceil(g)
        }
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shuffling generator's current state (None when not shuffling), for checkpoints.
    pub fn rng_state(&self) -> Option<[u64; 4]> {
        self.shuffle.as_ref().map(Rng::state)
    }

    /// Restores the shuffling generator (a no-op when not shuffling).
    pub fn set_rng_state(&mut self, state: [u64; 4]) {
        if let Some(rng) = &mut self.shuffle {
            *rng = Rng::from_state(state);
        }
    }

    /// The sample order of the next epoch; advances the shuffling generator.
    pub fn next_order(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if let Some(rng) = &mut self.shuffle {
            rng.shuffle(&mut order);
        }
        order
    }

    /// Starts one epoch: a loader thread collates the batches in this epoch's order.
    pub fn iter(&mut self) -> Batches {
        let order = self.next_order();
        let (tx, rx) = sync_channel::<Result<HostBatch>>(self.prefetch);
        let dataset = self.dataset.clone();
        let (global, drop_last) = (self.global_batch_size(), self.drop_last);
        let (rank, world) = self.shard.unwrap_or((0, 1));
        let worker = std::thread::Builder::new()
            .name("gradstep-loader".into())
            .spawn(move || {
                for chunk in order.chunks(global) {
                    if drop_last && chunk.len() < global {
                        break;
                    }
                    let batch = dataset.collate(&chunk[shard_range(chunk.len(), rank, world)]);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
        match worker {
            Ok(handle) => Batches {
                rx: Some(rx),
                worker: Some(handle),
                device: self.device,
                spawn_error: None,
            },
            Err(e) => Batches {
                rx: None,
                worker: None,
                device: self.device,
                spawn_error: Some(Error::invalid(
                    "DataLoader",
                    format!("cannot start the loader thread: {e}"),
                )),
            },
        }
    }
}

/// One epoch of batches; dropping it early stops the loader thread.
pub struct Batches {
    rx: Option<Receiver<Result<HostBatch>>>,
    worker: Option<JoinHandle<()>>,
    device: Device,
    spawn_error: Option<Error>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        let rx = self.rx.as_ref()?;
        let host = loop {
            match rx.try_recv() {
                Ok(b) => break b,
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            // On a rayon worker (training runs inside the pool), run queued pool jobs
            // while waiting: the collation of this very batch may be one of them, and a
            // blocked worker could starve it (a one-thread pool would deadlock).
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) => match rx.recv_timeout(WAIT_SLICE) {
                    Ok(b) => break b,
                    Err(RecvTimeoutError::Disconnected) => return None,
                    Err(RecvTimeoutError::Timeout) => {}
                },
                None => break rx.recv().ok()?,
            }
        };
        Some(host.and_then(|b| b.to_device(self.device)))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked sender return, so the join ends.
        drop(self.rx.take());
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}
