//! Collectives among emulated devices: a clique of ranks in one process, each on its own
//! `Device::Emu(n)` and its own host thread, like NCCL ranks on GPUs.
//!
//! Every rank calls the collectives in the same order (as NCCL requires). A rank's call
//! waits until every rank has joined the same collective; the last to arrive checks that they agree (kind, dtype, count), performs
//! it over every rank's buffers (they are all host memory) and releases the others.
//! Reductions add in rank order in f32 (f64 for f64; f16 and bf16 are widened and the
//! result rounded once), so a result is deterministic. A rank that leaves (its group
//! dropped, or failed) or does not arrive within the timeout makes the others' calls fail
//! with an error naming it, and the clique stays failed.

use std::any::Any;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::collective::{Collective, CollectiveKind, Comm, Communicator, ReduceOp};
use crate::base::{DType, Error, Result};

/// The shared state of an emulated group of ranks.
pub(crate) struct Clique {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Collectives every rank has joined and that were performed.
    completed: u64,
    /// Each rank's part of collective number `completed`, once it has joined.
    joined: Vec<Option<Collective>>,
    /// Why each rank left, if it did.
    left: Vec<Option<String>>,
    /// The error that broke the clique: every later call fails with it.
    failed: Option<String>,
}

/// One rank's member of a [`Clique`].
pub(crate) struct EmuComm {
    clique: Arc<Clique>,
    rank: usize,
    /// Collectives this rank has called.
    calls: Mutex<u64>,
}

impl Clique {
    /// A clique of `world` ranks whose collectives wait at most `timeout` for the others;
    /// one member per rank.
    pub(crate) fn members(world: usize, timeout: Duration) -> Vec<Arc<EmuComm>> {
        let clique = Arc::new(Clique {
            world,
            timeout,
            state: Mutex::new(State {
                completed: 0,
                joined: vec![None; world],
                left: vec![None; world],
                failed: None,
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| {
                Arc::new(EmuComm {
                    clique: clique.clone(),
                    rank,
                    calls: Mutex::new(0),
                })
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn describe(c: &Collective) -> String {
    match c.kind {
        CollectiveKind::AllReduce(op) | CollectiveKind::ReduceScatter(op) => {
            format!(
                "{} ({}) of {} {}",
                c.kind.name(),
                op.name(),
                c.count,
                c.dtype
            )
        }
        CollectiveKind::Broadcast { root } => {
            format!("broadcast from rank {root} of {} {}", c.count, c.dtype)
        }
        CollectiveKind::AllGather => format!("all_gather of {} {}", c.count, c.dtype),
    }
}

impl EmuComm {
    /// Joins collective `c` and returns once every rank has and it was performed.
    ///
    /// # Safety
    /// Every rank's buffers hold what `c` says (see [`Collective`]) in live emulated
    /// memory, and nothing else uses them until every rank's call returned.
    pub(crate) unsafe fn perform(&self, c: &Collective) -> Result<()> {
        let cl = &*self.clique;
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *calls;
        *calls += 1;
        let me = self.rank;
        let mut st = cl.lock();
        if let Some(e) = &st.failed {
            return Err(collective_error(e.clone()));
        }
        // Every rank finished the previous collective before calling this one, so the
        // clique is at `seq` now.
        debug_assert_eq!(st.completed, seq);
        st.joined[me] = Some(*c);
        if st.joined.iter().all(Option::is_some) {
            let parts: Vec<Collective> = st.joined.iter().flatten().copied().collect();
            let result = agree(&parts, seq).and_then(|()| {
                // SAFETY: forwarded contract; every rank is waiting in this call.
                unsafe { execute(&parts) }
            });
            st.joined.iter_mut().for_each(|j| *j = None);
            st.completed += 1;
            if let Err(e) = &result {
                st.failed = Some(e.to_string());
            }
            cl.changed.notify_all();
            return result;
        }
        let deadline = Instant::now() + cl.timeout;
        loop {
            if st.completed > seq {
                return match &st.failed {
                    Some(e) => Err(collective_error(e.clone())),
                    None => Ok(()),
                };
            }
            if let Some(e) = &st.failed {
                return Err(collective_error(e.clone()));
            }
            let missing: Vec<usize> = (0..cl.world).filter(|&r| st.joined[r].is_none()).collect();
            if let Some((r, why)) = missing
                .iter()
                .find_map(|&r| st.left[r].as_ref().map(|w| (r, w.clone())))
            {
                let e = format!(
                    "rank {me}: rank {r} left the group ({why}) before joining collective \
                     #{seq}, {}",
                    describe(c)
                );
                st.failed = Some(e.clone());
                cl.changed.notify_all();
                return Err(collective_error(e));
            }
            let now = Instant::now();
            if now >= deadline {
                let e = format!(
                    "rank {me}: rank(s) {missing:?} did not join collective #{seq}, {}, \
                     within {:.1} s",
                    describe(c),
                    cl.timeout.as_secs_f64()
                );
                st.failed = Some(e.clone());
                cl.changed.notify_all();
                return Err(collective_error(e));
            }
            st = cl
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The emulated member behind `comm`, or an error for another backend's.
pub(super) fn member(comm: &Comm) -> Result<&EmuComm> {
    comm.as_any().downcast_ref::<EmuComm>().ok_or_else(|| {
        Error::invalid(
            "emu",
            "a communicator of another backend (not an emulated one)",
        )
    })
}

/// Checks this rank's buffers and joins `c` (issued, or replayed from a graph).
///
/// # Safety
/// As [`EmuComm::perform`].
pub(super) unsafe fn run(comm: &Comm, c: &Collective) -> Result<()> {
    let comm = member(comm)?;
    let recv = c.recv_count(comm.world_size()) * c.dtype.size_in_bytes();
    for (what, ptr, bytes) in [
        ("emu collective (send)", c.send, c.send_bytes()),
        ("emu collective (receive)", c.recv, recv),
    ] {
        if bytes > 0 {
            super::memory::check_range(what, ptr, bytes)?;
        }
    }
    // The wait for the other ranks does not hold this device's stream: two groups over
    // the same devices must not block each other's members. Work issued before is
    // complete (every call is), so the collective follows it in stream order.
    // SAFETY: both ranges lie in live allocations (checked); the caller's contract keeps
    // them unused until every rank returns.
    unsafe { comm.perform(c) }
}

fn collective_error(msg: String) -> Error {
    Error::invalid("collective", msg)
}

/// Checks that every rank joined the same collective.
fn agree(parts: &[Collective], seq: u64) -> Result<()> {
    let first = &parts[0];
    for (r, p) in parts.iter().enumerate().skip(1) {
        if (p.kind, p.dtype, p.count) != (first.kind, first.dtype, first.count) {
            return Err(collective_error(format!(
                "collective #{seq}: rank {r} called {} where rank 0 called {} (every rank \
                 must call the same collectives in the same order)",
                describe(p),
                describe(first)
            )));
        }
    }
    match first.kind {
        CollectiveKind::Broadcast { root } if root >= parts.len() => {
            Err(collective_error(format!(
                "broadcast from rank {root} in a group of {} ranks",
                parts.len()
            )))
        }
        CollectiveKind::ReduceScatter(_) if first.count % parts.len() != 0 => {
            Err(collective_error(format!(
                "reduce_scatter of {} elements over {} ranks: not a multiple",
                first.count,
                parts.len()
            )))
        }
        _ => Ok(()),
    }
}

/// Reads element `i` of a buffer of `dtype` at `ptr` as f64.
///
/// # Safety
/// `ptr` addresses at least `i + 1` elements of `dtype`.
unsafe fn load(dtype: DType, ptr: u64, i: usize) -> f64 {
    // SAFETY: forwarded contract.
    unsafe {
        match dtype {
            DType::F16 => (*(ptr as *const half::f16).add(i)).to_f64(),
            DType::BF16 => (*(ptr as *const half::bf16).add(i)).to_f64(),
            DType::F32 => *(ptr as *const f32).add(i) as f64,
            DType::F64 => *(ptr as *const f64).add(i),
            DType::I64 => *(ptr as *const i64).add(i) as f64,
        }
    }
}

/// Writes `v` (exactly representable in f32 for the 32-bit and smaller dtypes) as
/// element `i` of a buffer of `dtype`, rounding to nearest even.
///
/// # Safety
/// `ptr` addresses at least `i + 1` writable elements of `dtype`.
unsafe fn store(dtype: DType, ptr: u64, i: usize, v: f64) {
    // SAFETY: forwarded contract.
    unsafe {
        match dtype {
            DType::F16 => *(ptr as *mut half::f16).add(i) = crate::base::f16_from_f64(v),
            DType::BF16 => *(ptr as *mut half::bf16).add(i) = crate::base::bf16_from_f64(v),
            DType::F32 => *(ptr as *mut f32).add(i) = v as f32,
            DType::F64 => *(ptr as *mut f64).add(i) = v,
            DType::I64 => *(ptr as *mut i64).add(i) = v as i64,
        }
    }
}

/// The reduction over the ranks of element `i` of each `ptrs[r]`: added in rank order in
/// the dtype's accumulation type (f32, or f64 for f64 and i64).
///
/// # Safety
/// Every pointer addresses at least `i + 1` elements of `dtype`.
unsafe fn reduce(dtype: DType, op: ReduceOp, ptrs: &[u64], i: usize) -> f64 {
    let n = ptrs.len();
    if matches!(dtype, DType::F64 | DType::I64) {
        // SAFETY: forwarded contract.
        let s: f64 = ptrs.iter().map(|&p| unsafe { load(dtype, p, i) }).sum();
        return match op {
            ReduceOp::Sum => s,
            ReduceOp::Avg if dtype == DType::I64 => (s as i64 / n as i64) as f64,
            ReduceOp::Avg => s / n as f64,
        };
    }
    let mut s = 0.0f32;
    for &p in ptrs {
        // SAFETY: forwarded contract.
        s += unsafe { load(dtype, p, i) } as f32;
    }
    match op {
        ReduceOp::Sum => s as f64,
        ReduceOp::Avg => (s / n as f32) as f64,
    }
}

/// Performs an agreed collective over every rank's buffers.
///
/// # Safety
/// As [`EmuComm::perform`]: every rank's buffers are live and unused meanwhile.
unsafe fn execute(parts: &[Collective]) -> Result<()> {
    let world = parts.len();
    let first = parts[0];
    let (dtype, count) = (first.dtype, first.count);
    let sends: Vec<u64> = parts.iter().map(|p| p.send).collect();
    // Results are computed before any is written: a rank's recv may be its send.
    // SAFETY (all blocks below): the contract says every buffer holds its elements.
    match first.kind {
        CollectiveKind::AllReduce(op) => {
            let out: Vec<f64> = (0..count)
                .map(|i| unsafe { reduce(dtype, op, &sends, i) })
                .collect();
            for p in parts {
                out.iter()
                    .enumerate()
                    .for_each(|(i, &v)| unsafe { store(dtype, p.recv, i, v) });
            }
        }
        CollectiveKind::Broadcast { root } => {
            let bytes = first.send_bytes();
            let src: Vec<u8> =
                unsafe { std::slice::from_raw_parts(sends[root] as *const u8, bytes) }.to_vec();
            for p in parts {
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.recv as *mut u8, bytes) };
            }
        }
        CollectiveKind::AllGather => {
            let bytes = first.send_bytes();
            let all: Vec<u8> = sends
                .iter()
                .flat_map(|&s| unsafe { std::slice::from_raw_parts(s as *const u8, bytes) })
                .copied()
                .collect();
            for p in parts {
                unsafe {
                    std::ptr::copy_nonoverlapping(all.as_ptr(), p.recv as *mut u8, all.len())
                };
            }
        }
        CollectiveKind::ReduceScatter(op) => {
            let chunk = count / world;
            let out: Vec<f64> = (0..count)
                .map(|i| unsafe { reduce(dtype, op, &sends, i) })
                .collect();
            for (r, p) in parts.iter().enumerate() {
                out[r * chunk..(r + 1) * chunk]
                    .iter()
                    .enumerate()
                    .for_each(|(i, &v)| unsafe { store(dtype, p.recv, i, v) });
            }
        }
    }
    Ok(())
}

impl Communicator for EmuComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.clique.world
    }
    fn leave(&self, why: &str) {
        let mut st = self.clique.lock();
        st.left[self.rank] = Some(why.to_string());
        self.clique.changed.notify_all();
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
