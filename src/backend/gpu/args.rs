//! Kernel launch configuration and argument packing, shared by CUDA and emulation.

use std::ffi::c_void;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks per grid (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig {
            grid: (blocks.max(1), 1, 1),
            block: (threads, 1, 1),
            shared_bytes: 0,
        }
    }

    /// A 1-D launch covering `n` items with `threads` per block and `per_thread` items each,
    /// capped at `max_blocks` blocks (kernels use grid-stride loops).
    pub fn for_elements(n: usize, threads: u32, per_thread: usize, max_blocks: u32) -> Self {
        let per_block = threads as usize * per_thread.max(1);
        let blocks = n.div_ceil(per_block).clamp(1, max_blocks as usize) as u32;
        Self::linear(blocks, threads)
    }

    /// Sets the dynamic shared memory.
    #[cfg(test)]
    pub fn with_shared(mut self, bytes: u32) -> Self {
        self.shared_bytes = bytes;
        self
    }
}

/// The arguments of one launch, packed as `cuLaunchKernel` takes them: one `void*` per
/// parameter pointing at the parameter's bytes.
///
/// Each argument is copied into its own 16-byte aligned slot, so the `void**` stays valid
/// for as long as this value lives and is not pushed to.
#[derive(Default)]
pub struct KernelArgs {
    slots: Vec<Box<[u128]>>,
    /// Kernel-argument bytes (for the 4 KB parameter limit).
    bytes: usize,
}

impl KernelArgs {
    /// No arguments yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a by-value argument (a scalar, a device pointer as `u64`, or a `#[repr(C)]`
    /// struct mirrored in C).
    pub fn push<T: Copy>(&mut self, v: T) -> &mut Self {
        let words = std::mem::size_of::<T>().div_ceil(16).max(1);
        assert!(std::mem::align_of::<T>() <= 16);
        let mut slot = vec![0u128; words].into_boxed_slice();
        // SAFETY: the slot holds at least size_of::<T>() bytes, 16-byte aligned.
        unsafe { std::ptr::write(slot.as_mut_ptr() as *mut T, v) };
        self.bytes =
            self.bytes.next_multiple_of(std::mem::align_of::<T>()) + std::mem::size_of::<T>();
        self.slots.push(slot);
        self
    }

    /// Parameter bytes as the kernel sees them (before the final alignment).
    pub fn param_bytes(&self) -> usize {
        self.bytes
    }

    /// The `void**` array for the launch.
    pub fn as_params(&mut self) -> Vec<*mut c_void> {
        self.slots
            .iter_mut()
            .map(|s| s.as_mut_ptr() as *mut c_void)
            .collect()
    }
}
