//! Emulated device memory: host allocations, with a registry of the live ones.
//!
//! Normally an allocation is a 256-byte aligned host block. In sanitizer mode it is placed
//! so that its last byte is followed by a PROT_NONE page: a kernel that reads or writes
//! past the end faults, and the fault handler names the kernel. The start is then aligned
//! only to the largest power of two (at most 16) that divides the size, which is at least
//! the element size of any buffer of whole elements.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::ffi;
use crate::base::Device;
use crate::base::{Error, Result};

/// Alignment of normal (unguarded) allocations.
const ALIGN: usize = 256;

/// base address -> size in bytes of every live allocation.
static LIVE: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, usize>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocates `bytes` (> 0) of emulated device memory (guarded when `guarded`).
pub(crate) fn alloc(device: Device, bytes: usize, guarded: bool) -> Result<u64> {
    if bytes == 0 {
        return Err(Error::invalid(
            "emu alloc",
            "zero-byte allocations are handled by the caller",
        ));
    }
    let oom = || Error::OutOfMemory { device, bytes };
    let ptr = if guarded {
        // SAFETY: plain allocation call; null on failure.
        unsafe { ffi::gs_emu_guarded_alloc(bytes) as *mut u8 }
    } else {
        let layout = Layout::from_size_align(bytes, ALIGN).map_err(|_| oom())?;
        // SAFETY: the layout has a non-zero size.
        unsafe { std::alloc::alloc(layout) }
    };
    if ptr.is_null() {
        return Err(oom());
    }
    live().insert(ptr as u64, bytes);
    Ok(ptr as u64)
}

/// Frees an allocation from [`alloc`] (with the same `guarded`); unknown pointers are ignored.
///
/// # Safety
/// No kernel or copy still uses the memory.
pub(crate) unsafe fn free(ptr: u64, guarded: bool) {
    let Some(bytes) = live().remove(&ptr) else {
        return;
    };
    if guarded {
        // SAFETY: allocated by gs_emu_guarded_alloc with this size.
        unsafe { ffi::gs_emu_guarded_free(ptr as *mut _, bytes) };
    } else {
        // SAFETY: allocated by std::alloc::alloc with this layout.
        unsafe {
            std::alloc::dealloc(
                ptr as *mut u8,
                Layout::from_size_align_unchecked(bytes, ALIGN),
            )
        };
    }
}

/// `(base, size)` of the live allocation that contains address `ptr` (its end included,
/// so a pointer one past the last byte belongs to it).
pub(crate) fn containing(ptr: u64) -> Option<(u64, usize)> {
    let map = live();
    let (&base, &bytes) = map.range(..=ptr).next_back()?;
    (ptr <= base + bytes as u64).then_some((base, bytes))
}

/// Checks that `[ptr, ptr + bytes)` lies inside one live allocation.
pub(crate) fn check_range(op: &'static str, ptr: u64, bytes: usize) -> Result<()> {
    match containing(ptr) {
        Some((base, size)) if ptr - base + bytes as u64 <= size as u64 => Ok(()),
        Some((base, size)) => Err(Error::invalid(
            op,
            format!(
                "{bytes} bytes at {ptr:#x} run past the end of the allocation {base:#x} of {size} bytes"
            ),
        )),
        None => Err(Error::invalid(op, format!("{ptr:#x} is not inside any live emulated allocation"))),
    }
}

/// Whether `[ptr, ptr + bytes)` lies inside one live allocation.
pub(crate) fn holds(ptr: u64, bytes: usize) -> bool {
    check_range("emu", ptr, bytes).is_ok()
}
