//! Collectives: what one rank asks of its communicator.
//!
//! A [`Communicator`] is one rank's member of a group (an emulated clique, or an NCCL
//! communicator); on a GPU device the launch path performs a [`Collective`] with it on
//! the device's stream, as it would a launch, and counts it.

// Without the emulator or NCCL nothing makes a communicator or reads the descriptions.
#![cfg_attr(not(any(feature = "emu", feature = "nccl")), allow(dead_code))]

use std::any::Any;
use std::sync::Arc;

use crate::base::{DType, Device, Result};

/// How a reducing collective combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The sum over the ranks.
    Sum,
    /// The sum over the ranks divided by the number of ranks (NCCL's `ncclAvg`).
    Avg,
}

impl ReduceOp {
    /// `sum` or `avg`.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
        }
    }
}

/// Which collective, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CollectiveKind {
    /// Every rank's `recv[i]` is the reduction of every rank's `send[i]`.
    AllReduce(ReduceOp),
    /// Every rank's `recv` is `send` of rank `root`.
    Broadcast { root: usize },
    /// Every rank's `recv` (world × count elements) is every rank's `send`, in rank order.
    AllGather,
    /// Rank r's `recv` (count / world elements) is the reduction of the ranks' r-th
    /// slices of `send`.
    ReduceScatter(ReduceOp),
}

impl CollectiveKind {
    /// The collective's name, as torch.distributed calls it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce(_) => "all_reduce",
            CollectiveKind::Broadcast { .. } => "broadcast",
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::ReduceScatter(_) => "reduce_scatter",
        }
    }
}

/// One rank's part of a collective: device addresses of its buffers, `count` elements of
/// `dtype` in `send` (the size of `recv` follows from the kind and the world size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Collective {
    pub kind: CollectiveKind,
    pub dtype: DType,
    pub send: u64,
    pub recv: u64,
    pub count: usize,
}

impl Collective {
    /// Elements in `recv` for a group of `world` ranks.
    pub(crate) fn recv_count(&self, world: usize) -> usize {
        match self.kind {
            CollectiveKind::AllGather => self.count * world,
            CollectiveKind::ReduceScatter(_) => self.count / world,
            _ => self.count,
        }
    }

    /// Bytes in `send`.
    pub(crate) fn send_bytes(&self) -> usize {
        self.count * self.dtype.size_in_bytes()
    }
}

/// One rank's member of a communicator: the backend's handle (downcast by the backend
/// that made it).
pub(crate) trait Communicator: Send + Sync {
    /// This rank.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn world_size(&self) -> usize;
    /// Marks this rank gone (its group was dropped, or it failed): collectives that wait
    /// for it fail at once, naming it.
    fn leave(&self, why: &str);
    /// The concrete type, for the backend.
    fn as_any(&self) -> &dyn Any;
}

/// A rank's communicator, shared (a captured graph holds the one its collectives use).
pub(crate) type Comm = Arc<dyn Communicator>;

/// Performs `c` with `comm` on `device` (a GPU device; the CPU has no collectives), or
/// records it into the graph the calling thread captures on `device`.
///
/// # Safety
/// `c.send` holds `c.count` elements and `c.recv` `c.recv_count(world)` elements of
/// `c.dtype`, in memory of `device`, and nothing else writes them until every rank's
/// call returned.
pub(crate) unsafe fn perform(device: Device, comm: &Comm, c: &Collective) -> Result<()> {
    #[cfg(gpu)]
    if device.is_gpu() {
        // SAFETY: forwarded contract.
        return unsafe { crate::backend::gpu::get(device)?.collective(comm, c) };
    }
    let _ = (comm, c);
    Err(crate::base::Error::invalid(
        "collective",
        format!("{device} has no collectives (use a GPU device: cuda or emu)"),
    ))
}
