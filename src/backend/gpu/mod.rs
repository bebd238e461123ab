//! The one launch path shared by the CUDA backend and its host emulation.
//!
//! A GPU device is a [`DeviceApi`] (CUDA through cudarc, or the emulator) wrapped in a
//! [`GpuDevice`] that counts every launch, copy, memset, allocation and synchronisation.
//! Everything that plans a launch (grid sizes, argument packing, multi-tensor tables)
//! lives above this trait and so runs, unchanged, on both.

mod alloc;
mod args;
mod collective;
mod counters;
mod graph;
pub(crate) mod kernels;
mod ops;
mod status;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) use crate::backend::collective::{Collective, Comm};
pub(crate) use alloc::Allocator;
pub(crate) use args::{KernelArgs, LaunchConfig};
pub(crate) use counters::{Counters, Event};
pub(crate) use graph::{CapturedGraph, DeviceGraph};
pub(crate) use kernels::KernelId;
pub(crate) use status::Status;

use crate::backend::{CounterSnapshot, MemoryStats};
use crate::base::{DType, Device, DeviceBuffer, Error, Result};

/// A row-major, optionally batched GEMM: `C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]`,
/// with `op(A)` of shape `[m, k]` and `op(B)` of shape `[k, n]`. Pointers are device
/// addresses; leading dims and batch strides are in elements.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by cuBLAS only
pub(crate) struct GemmDesc {
    /// Element type of A, B and C (accumulation is in f32 for f16, else in the dtype).
    pub dtype: DType,
    /// A is stored as `[k, m]` (transposed).
    pub trans_a: bool,
    /// B is stored as `[n, k]` (transposed).
    pub trans_b: bool,
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Device address of A.
    pub a: u64,
    /// Leading dimension (row stride) of A as stored.
    pub lda: usize,
    /// Batch stride of A (0: shared by every batch).
    pub stride_a: usize,
    /// Device address of B.
    pub b: u64,
    /// Leading dimension of B as stored.
    pub ldb: usize,
    /// Batch stride of B.
    pub stride_b: usize,
    /// Device address of C.
    pub c: u64,
    /// Leading dimension of C.
    pub ldc: usize,
    /// Batch stride of C.
    pub stride_c: usize,
    /// Number of batches.
    pub batch: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the existing C.
    pub beta: f32,
}

/// The parameters of one launch as `cuLaunchKernel` takes them: a pointer per parameter.
pub(crate) type Params<'a> = &'a mut [*mut c_void];

/// A stream of a device's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// The device's own stream, on which gradstep queues all its work.
    Own,
    /// A stream another library created in the device's primary context (a `CUstream`).
    Foreign(u64),
}

/// What a GPU backend must provide. Implemented by the CUDA backend and the emulator;
/// only these calls differ between them.
///
/// # Safety
/// An implementation must queue all work of the device in one order (a stream): a copy,
/// memset or launch issued after another sees its effects, and `dtoh`/`synchronize`
/// return only when everything issued before is complete. Calls may come from several
/// host threads at once and must then be serialised as if issued one after the other.
/// `alloc` must return memory that no other allocation overlaps.
pub(crate) unsafe trait DeviceApi: Send + Sync {
    /// A human-readable name of the device (e.g. `NVIDIA H100 80GB HBM3`).
    fn name(&self) -> String;
    /// Allocates `bytes` (> 0) of device memory, aligned to at least 256 bytes.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees an allocation.
    ///
    /// # Safety
    /// `ptr` came from `alloc` of this device and no launch still in flight uses it.
    unsafe fn free(&self, ptr: u64);
    /// Sets `bytes` bytes at `ptr` to zero, in stream order.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` is memory of this device that nothing else writes meanwhile.
    unsafe fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()>;
    /// Copies host bytes to the device, in stream order (`src` may be dropped on return).
    ///
    /// # Safety
    /// `dst..dst + src.len()` is memory of this device.
    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()>;
    /// Copies host bytes to the device at once, outside stream order and outside any
    /// capture under way (it is not recorded); returns when the copy is complete.
    ///
    /// # Safety
    /// `dst..dst + src.len()` is memory of this device that no queued or recorded work
    /// uses before this call returns.
    unsafe fn write_now(&self, src: &[u8], dst: u64) -> Result<()>;
    /// Copies device bytes to the host; returns when the copy is complete.
    ///
    /// # Safety
    /// `src..src + dst.len()` is memory of this device.
    unsafe fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copies between two device ranges, in stream order.
    ///
    /// # Safety
    /// Both ranges are memory of this device holding `bytes` bytes.
    unsafe fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()>;
    /// Waits until all queued work is done.
    fn synchronize(&self) -> Result<()>;
    /// Makes `waiter` wait, on the device and without blocking the host, until the work
    /// queued on `on` so far is done.
    ///
    /// # Safety
    /// A [`Stream::Foreign`] is a live stream of this device's context.
    unsafe fn stream_wait(&self, waiter: Stream, on: Stream) -> Result<()>;
    /// Launches a kernel by id, with `params` packed as `cuLaunchKernel` takes them.
    ///
    /// # Safety
    /// `args` match the kernel's C signature and every pointer argument addresses
    /// device memory of sufficient size for the kernel's accesses.
    unsafe fn launch(&self, kernel: KernelId, cfg: &LaunchConfig, args: Params<'_>) -> Result<()>;
    /// Runs a GEMM through a vendor library. `Ok(false)` when the backend has none, in
    /// which case the caller launches gradstep's own matmul kernel.
    ///
    /// # Safety
    /// The pointers of `g` address device memory holding the matrices it describes.
    unsafe fn gemm(&self, _g: &GemmDesc) -> Result<bool> {
        Ok(false)
    }
    /// Starts recording the work issued from now on into a graph instead of running it.
    fn begin_capture(&self) -> Result<()>;
    /// Ends the recording: the graph of the work issued since `begin_capture`.
    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>>;
    /// Abandons a recording.
    fn abort_capture(&self);
    /// Runs a graph this backend recorded, in stream order.
    ///
    /// # Safety
    /// The memory the graph's work uses is still allocated to it.
    unsafe fn launch_graph(&self, g: &dyn DeviceGraph) -> Result<()>;
    /// Performs one rank's part of a collective with `comm`, in stream order. Backends
    /// without collectives (or handed a communicator of another backend) refuse.
    ///
    /// # Safety
    /// `c.send` holds `c.count` elements and `c.recv` `c.recv_count(world)` elements of
    /// `c.dtype`, in memory of this device.
    unsafe fn collective(&self, comm: &Comm, c: &Collective) -> Result<()> {
        let _ = (comm, c);
        Err(Error::invalid(
            "collective",
            format!("{} has no collectives", self.name()),
        ))
    }
    /// Whether freed blocks may be cached for reuse (not under the emulator's sanitizer,
    /// which guards each buffer's exact end and must see every use after a free).
    fn caches_blocks(&self) -> bool {
        true
    }
}

/// A GPU device (CUDA or emulated): the launch path, the counters and the caching
/// allocator. It implements every primitive family (`ops/`), so it is the GPU backend.
pub(crate) struct GpuDevice {
    device: Device,
    api: Arc<dyn DeviceApi>,
    mem: Arc<Allocator>,
    counters: Arc<Counters>,
    per_kernel: Vec<std::sync::atomic::AtomicU64>,
    /// The sticky error record of the checking kernels (set once, at creation).
    status: OnceLock<Status>,
    /// Whether a capture is under way (mirrors `capture`, for the hot paths).
    capturing: std::sync::atomic::AtomicBool,
    capture: graph::CaptureCell,
    /// Signalled when a capture ends (threads waiting to issue work go on).
    capture_ended: std::sync::Condvar,
    /// Held (shared) by every thread not capturing while it issues one call, and taken
    /// exclusively to begin a capture: a call that passed the capture gate finishes
    /// before a capture starts, so no other thread's work lands in a graph.
    issue_lock: std::sync::RwLock<()>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuDevice({}, {})", self.device, self.api.name())
    }
}

impl GpuDevice {
    /// Wraps a backend.
    fn new(device: Device, api: Arc<dyn DeviceApi>) -> Self {
        let counters = Arc::new(Counters::default());
        let cached = api.caches_blocks();
        GpuDevice {
            device,
            mem: Arc::new(Allocator::new(
                device,
                api.clone(),
                counters.clone(),
                cached,
            )),
            api,
            counters,
            per_kernel: KernelId::all().map(|_| Default::default()).collect(),
            status: OnceLock::new(),
            capturing: Default::default(),
            capture: Default::default(),
            capture_ended: Default::default(),
            issue_lock: Default::default(),
        }
    }

    /// The sticky error record, for the checking kernels' arguments.
    pub(crate) fn status(&self) -> Result<&Status> {
        if let Some(s) = self.status.get() {
            return Ok(s);
        }
        let s = Status::new(self.alloc_zeroed(status::SLOTS * status::STATUS_BYTES)?);
        Ok(self.status.get_or_init(|| s))
    }

    /// Reports (and clears) an error a kernel recorded since the last check. Reads the
    /// record: a host synchronisation, done only where one happens anyway.
    pub(crate) fn check_status(&self) -> Result<()> {
        if self.capturing() {
            return Err(graph::refused(
                "a host synchronisation (reading back a value)",
            ));
        }
        let Some(s) = self.status.get() else {
            return Ok(());
        };
        let mut bytes: status::StatusBytes = [0; status::STATUS_BYTES];
        self.dtoh(s.ptr(), &mut bytes)?;
        match Status::error_of(&bytes) {
            None => Ok(()),
            Some(e) => {
                self.memset_zero(s.ptr(), status::STATUS_BYTES)?;
                Err(e)
            }
        }
    }

    /// Which device this is.
    pub(crate) fn device(&self) -> Device {
        self.device
    }

    /// The backend's name for the device.
    pub(crate) fn name(&self) -> String {
        self.api.name()
    }

    /// The current counter totals.
    pub(crate) fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The memory counters of the caching allocator.
    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.mem.stats()
    }

    /// Restarts the allocator's peaks at the current values.
    pub(crate) fn reset_peak_memory_stats(&self) {
        self.mem.reset_peaks()
    }

    /// Gives cached free blocks back to the driver.
    pub(crate) fn empty_cache(&self) {
        self.mem.release_cached()
    }

    /// How many times each kernel was launched on this device, by [`KernelId`] index.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))] // the self-test's coverage
    pub(crate) fn launches_per_kernel(&self) -> Vec<u64> {
        self.per_kernel
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// A buffer of `bytes` bytes (uninitialised), from the cache when it has a block.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        let issue = self.issue(); // waits while another thread captures
        let mine = issue.mine;
        if bytes == 0 {
            // SAFETY: an empty buffer owns nothing and releases nothing.
            return Ok(unsafe { DeviceBuffer::from_raw(self.mem.clone(), 0, 0) });
        }
        let (ptr, _) = self.mem.take(bytes, mine)?;
        // SAFETY: the block was just handed out by `mem` for `bytes` bytes.
        Ok(unsafe { DeviceBuffer::from_raw(self.mem.clone(), ptr, bytes) })
    }

    /// A zeroed buffer.
    pub(crate) fn alloc_zeroed(&self, bytes: usize) -> Result<DeviceBuffer> {
        let b = self.alloc(bytes)?;
        self.memset_zero(b.ptr(), bytes)?;
        Ok(b)
    }

    /// A buffer holding `src`, for data a captured step reads but does not write from the
    /// host (a launch table): uploaded in stream order, or, during a capture, written at
    /// once into a block no captured work has used, held for the graph (a replay reads
    /// what was written; the upload itself is not part of the graph). Counted as a copy.
    pub(crate) fn upload_fixed(&self, src: &[u8]) -> Result<DeviceBuffer> {
        if !self.capturing() {
            let b = self.alloc(src.len())?;
            self.htod(src, b.ptr())?;
            return Ok(b);
        }
        if src.is_empty() {
            return self.alloc(0);
        }
        let (ptr, _) = self.mem.take_fixed(src.len())?;
        // SAFETY: the block was just handed out by `mem` for `src.len()` bytes.
        let b = unsafe { DeviceBuffer::from_raw(self.mem.clone(), ptr, src.len()) };
        self.counters.record(Event::HtoD);
        // SAFETY: a fixed block was free before (no queued work uses it: the capture
        // started after a synchronisation) and no captured work used it.
        unsafe { self.api.write_now(src, ptr) }?;
        Ok(b)
    }

    /// Launches `kernel` over `cfg` with `args`. Counted. Crate-private: the op that
    /// builds `args` guarantees they match the kernel's signature and that every pointer
    /// addresses device memory of this device large enough for the kernel's accesses.
    pub(crate) fn launch(
        &self,
        kernel: KernelId,
        cfg: LaunchConfig,
        args: &mut KernelArgs,
    ) -> Result<()> {
        if args.param_bytes() > 4096 {
            return Err(Error::Kernel {
                kernel: kernel.name().to_string(),
                msg: format!(
                    "{} bytes of arguments exceed the 4096-byte limit",
                    args.param_bytes()
                ),
            });
        }
        let _issue = self.issue(); // waits while another thread captures
        self.counters.record(Event::Launch);
        self.per_kernel[kernel.0 as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut params = args.as_params();
        // SAFETY: the caller's contract above.
        unsafe { self.api.launch(kernel, &cfg, &mut params) }
    }

    /// Zeroes `bytes` bytes at `ptr` (device memory of this device). Counted; a no-op for 0.
    pub(crate) fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let _issue = self.issue(); // waits while another thread captures
        self.counters.record(Event::Memset);
        // SAFETY: crate-private; callers pass ranges of their own device buffers.
        unsafe { self.api.memset_zero(ptr, bytes) }
    }

    /// Copies host bytes to `dst` (device memory of this device). Counted.
    pub(crate) fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let issue = self.issue();
        if issue.mine {
            return Err(graph::refused("a copy from the host (an upload)"));
        }
        self.counters.record(Event::HtoD);
        // SAFETY: crate-private; callers pass ranges of their own device buffers.
        unsafe { self.api.htod(src, dst) }
    }

    /// Copies device bytes to the host, synchronising. Counted.
    pub(crate) fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        let issue = self.issue();
        if issue.mine {
            return Err(graph::refused(
                "a host synchronisation (a copy to the host)",
            ));
        }
        self.counters.record(Event::DtoH);
        // SAFETY: crate-private; callers pass ranges of their own device buffers.
        unsafe { self.api.dtoh(src, dst) }
    }

    /// Copies between device ranges of this device. Counted.
    pub(crate) fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let _issue = self.issue(); // waits while another thread captures
        self.counters.record(Event::DtoD);
        // SAFETY: crate-private; callers pass ranges of their own device buffers.
        unsafe { self.api.dtod(src, dst, bytes) }
    }

    /// Makes `waiter` wait on the device for the work queued on `on` so far. Counted.
    ///
    /// # Safety
    /// A [`Stream::Foreign`] is a live stream of this device's context.
    pub(crate) unsafe fn stream_wait(&self, waiter: Stream, on: Stream) -> Result<()> {
        if waiter == on {
            return Ok(());
        }
        let _issue = self.issue(); // waits while another thread captures
        self.counters.record(Event::StreamWait);
        // SAFETY: forwarded contract.
        unsafe { self.api.stream_wait(waiter, on) }
    }

    /// Waits for all queued work and reports a deferred kernel error. Counted.
    pub(crate) fn synchronize(&self) -> Result<()> {
        let issue = self.issue();
        if issue.mine {
            return Err(graph::refused("a host synchronisation"));
        }
        self.counters.record(Event::Sync);
        self.api.synchronize()?;
        drop(issue);
        self.check_status()
    }

    /// A vendor GEMM when the backend has one (counted as one launch); `Ok(false)` otherwise.
    pub(crate) fn gemm(&self, g: &GemmDesc) -> Result<bool> {
        let _issue = self.issue(); // waits while another thread captures
                                   // SAFETY: crate-private; the matmul planner describes its own operands.
        let done = unsafe { self.api.gemm(g)? };
        if done {
            self.counters.record(Event::Launch);
        }
        Ok(done)
    }
}

/// The process-wide handle of a GPU device, created on first use and cached.
pub(crate) fn get(device: Device) -> Result<Arc<GpuDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<Device, Arc<GpuDevice>>>> = OnceLock::new();
    let mut map = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = map.get(&device) {
        return Ok(d.clone());
    }
    let api: Arc<dyn DeviceApi> = match device {
        #[cfg(feature = "emu")]
        Device::Emu(ordinal) => Arc::new(crate::backend::emu::EmuApi::new(ordinal)?),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => Arc::new(crate::backend::cuda::CudaApi::new(ordinal)?),
        _ => return Err(crate::backend::not_built(device)),
    };
    let d = Arc::new(GpuDevice::new(device, api));
    // Zeroed now, eagerly: a first use inside a capture could not zero it.
    d.status()?;
    map.insert(device, d.clone());
    Ok(d)
}
