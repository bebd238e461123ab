//! The C interface of the emulator runtime (`kernels/host/runtime.cc` and the tables that
//! build/emu.rs generates).

use std::ffi::{c_char, c_void, CStr};

/// One emulated kernel (mirrors `gs_emu_kernel_desc` in `kernels/host/include/gs_emu.h`).
#[repr(C)]
pub(crate) struct KernelDesc {
    name: *const c_char,
    tramp: Option<unsafe extern "C" fn(*mut *mut c_void)>,
    nparams: u32,
    is_ptr: *const u8,
    sizes: *const u16,
}

// SAFETY: descriptors are immutable static data of the C++ side.
unsafe impl Sync for KernelDesc {}

impl KernelDesc {
    /// The kernel's `extern "C"` name.
    pub(crate) fn name(&self) -> &'static str {
        // SAFETY: `name` is a string literal of the generated tables.
        unsafe { CStr::from_ptr(self.name) }
            .to_str()
            .unwrap_or("<non-UTF-8 kernel name>")
    }

    /// Number of parameters of the kernel.
    pub(crate) fn nparams(&self) -> usize {
        self.nparams as usize
    }

    /// Whether parameter `i` (< nparams) is a pointer.
    pub(crate) fn param_is_pointer(&self, i: usize) -> bool {
        assert!(i < self.nparams());
        // SAFETY: `is_ptr` has `nparams + 1` entries.
        unsafe { *self.is_ptr.add(i) != 0 }
    }

    /// Size in bytes of parameter `i` (< nparams).
    pub(crate) fn param_size(&self, i: usize) -> usize {
        assert!(i < self.nparams());
        // SAFETY: `sizes` has `nparams + 1` entries.
        unsafe { *self.sizes.add(i) as usize }
    }
}

/// One launch (mirrors `gs_emu_launch` in `kernels/host/runtime.cc`).
#[repr(C)]
pub(crate) struct Launch {
    pub desc: *const KernelDesc,
    pub params: *mut *mut c_void,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: usize,
    pub seed: u64,
    pub random: i32,
    pub guard_shared: i32,
}

// SAFETY: a launch is read (never written) by the blocks that run it; the parameter
// buffers it points at outlive the launch, which returns only when every block is done.
unsafe impl Sync for Launch {}

extern "C" {
    fn gs_emu_kernel_count() -> u32;
    fn gs_emu_kernel(i: u32) -> *const KernelDesc;
    #[cfg(test)]
    fn gs_emu_test_kernel_count() -> u32;
    #[cfg(test)]
    fn gs_emu_test_kernel(i: u32) -> *const KernelDesc;
    /// Runs one block on the calling thread: 0 done, 1 deadlock, 2 out of memory.
    pub(crate) fn gs_emu_run_block(l: *const Launch, bx: u32, by: u32, bz: u32) -> i32;
    pub(crate) fn gs_emu_guarded_alloc(bytes: usize) -> *mut c_void;
    pub(crate) fn gs_emu_guarded_free(p: *mut c_void, bytes: usize);
    pub(crate) fn gs_emu_install_fault_handler();
    /// Test only: installs a SIGSEGV handler that repairs the faulting page.
    #[cfg(test)]
    pub(crate) fn gs_emu_test_install_recovering_handler();
    /// Test only: faults once outside any kernel; returns the faults repaired so far.
    #[cfg(test)]
    pub(crate) fn gs_emu_test_fault_outside_kernel() -> i32;
}

/// The descriptor of kernel `i` of `kernels/*.cu` (`None` past the end of the table).
pub(crate) fn kernel(i: u32) -> Option<&'static KernelDesc> {
    // SAFETY: the generated table returns null past its end, else a static descriptor.
    unsafe { gs_emu_kernel(i).as_ref() }
}

/// The descriptors of the kernels of `kernels/*.cu`, in kernel-id order.
pub(crate) fn kernels() -> impl Iterator<Item = &'static KernelDesc> {
    // SAFETY: the generated table has `count` non-null entries of static lifetime.
    (0..unsafe { gs_emu_kernel_count() }).map(|i| unsafe { &*gs_emu_kernel(i) })
}

#[cfg(test)]
/// The descriptors of the host-only test kernels of `kernels/host/test_kernels.cu`.
pub(crate) fn test_kernels() -> impl Iterator<Item = &'static KernelDesc> {
    // SAFETY: as for `kernels`.
    (0..unsafe { gs_emu_test_kernel_count() }).map(|i| unsafe { &*gs_emu_test_kernel(i) })
}
