//! The device's sticky error record: how a kernel reports bad input (an out-of-range
//! class target or embedding index) without a host synchronisation.
//!
//! A record (`GsStatus` in `kernels/common.cuh`) takes the first failure the checking
//! kernels find. The host reads it at its next natural synchronisation (a download such
//! as `loss.item()`, `Tensor::to_cpu_storage`, or `Device::synchronize`), clears it, and
//! returns the error naming the op, the position and the value, as an eager check would
//! have. Each device has [`SLOTS`] records and each live host thread its own (a thread
//! that exits gives its index to the next; past that many live threads, some share): an
//! error surfaces in the thread whose op found it, not in another thread that happens to
//! synchronise first. A thread that exits without synchronising after a failed check
//! leaves the error in its record for the next thread that takes the index.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::base::{DeviceBuffer, Error};

/// Mirrors `GsStatus`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct StatusRecord {
    lock: u32,
    code: u32,
    seq: u64,
    pos: u64,
    value: i64,
    bound: i64,
    extra: i64,
}

/// `GS_ERR_TARGET`: a cross-entropy target outside `[0, classes)`.
const ERR_TARGET: u32 = 1;
/// `GS_ERR_INDEX`: an embedding index outside `[0, rows)`.
const ERR_INDEX: u32 = 2;

/// Bytes of one record.
pub(super) const STATUS_BYTES: usize = std::mem::size_of::<StatusRecord>();
/// Records per device.
pub(super) const SLOTS: usize = 64;

/// Record indices of exited threads, for the next threads to take.
static FREE_SLOTS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// A thread's record index, given back when the thread exits.
struct Slot(usize);

impl Slot {
    /// The lowest index an exited thread gave back, else the next unused one (past
    /// [`SLOTS`] live threads, indices are shared).
    fn take() -> Slot {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut free = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = (0..free.len()).min_by_key(|&i| free[i]) {
            return Slot(free.swap_remove(at));
        }
        drop(free);
        Slot(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut free = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        if !free.contains(&self.0) {
            free.push(self.0);
        }
    }
}

/// This thread's record index: a thread keeps one while it lives, so two live threads
/// share one only past [`SLOTS`] of them.
fn slot() -> usize {
    thread_local! {
        static SLOT: Slot = Slot::take();
    }
    SLOT.with(|s| s.0)
}

/// The record of one device and the numbering of the launches that check.
pub(crate) struct Status {
    buffer: DeviceBuffer,
    seq: AtomicU64,
}

impl Status {
    /// Over a zeroed device buffer of [`SLOTS`] records.
    pub(super) fn new(buffer: DeviceBuffer) -> Status {
        Status {
            buffer,
            seq: AtomicU64::new(1),
        }
    }

    /// This thread's record's device address and a fresh launch number, the two last
    /// arguments of every checking kernel.
    pub(crate) fn args(&self) -> (u64, u64) {
        (self.ptr(), self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// This thread's record's device address.
    pub(super) fn ptr(&self) -> u64 {
        self.buffer.ptr() + (slot() * STATUS_BYTES) as u64
    }

    /// The error a record of `bytes` (read back from the device) holds, if any.
    pub(super) fn error_of(bytes: &[u8; STATUS_BYTES]) -> Option<Error> {
        // SAFETY: StatusRecord is plain integers, every bit pattern valid, and `bytes`
        // holds exactly one; the read is unaligned-safe.
        let r: StatusRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        match r.code {
            0 => None,
            ERR_TARGET => Some(Error::invalid(
                "cross_entropy",
                format!(
                    "target {} (row {}) is outside 0..{} and is not ignore_index {} \
                     (found on the device, reported at this synchronisation)",
                    r.value, r.pos, r.bound, r.extra
                ),
            )),
            ERR_INDEX => Some(Error::invalid(
                "embedding",
                format!(
                    "index {} (position {}) is outside 0..{} (found on the device, \
                     reported at this synchronisation)",
                    r.value, r.pos, r.bound
                ),
            )),
            code => Some(Error::invalid(
                "device",
                format!("a kernel reported the unknown error code {code}"),
            )),
        }
    }
}

/// The record's bytes, for `dtoh`.
pub(super) type StatusBytes = [u8; STATUS_BYTES];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_mirrors_the_kernels_layout_and_names_the_failure() {
        assert_eq!(STATUS_BYTES, 48);
        let r = StatusRecord {
            code: ERR_TARGET,
            pos: 3,
            value: 12,
            bound: 10,
            extra: -100,
            ..Default::default()
        };
        // SAFETY: plain integers.
        let bytes: StatusBytes = unsafe { std::mem::transmute(r) };
        let e = Status::error_of(&bytes).unwrap().to_string();
        assert!(e.contains("target 12 (row 3) is outside 0..10"), "{e}");
        assert!(Status::error_of(&[0; STATUS_BYTES]).is_none());
    }

    #[test]
    fn threads_that_exited_give_their_records_to_later_threads() {
        // More threads than records, one after another: each finds a record no live
        // thread holds (the test binary's other threads hold some meanwhile).
        let mine = slot();
        for _ in 0..2 * SLOTS {
            let theirs = std::thread::spawn(slot).join().unwrap();
            assert_ne!(theirs, mine, "a live thread's record was handed out again");
        }
    }
}
