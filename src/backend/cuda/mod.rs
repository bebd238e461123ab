//! The CUDA backend (cudarc): context, stream, module cache, launches, cuBLAS.
//!
//! Every device has one context (the primary one), one non-blocking stream on which all
//! work is queued in order, PTX modules loaded once, and a `CUfunction` per kernel found
//! once. Memory is allocated and freed in stream order (`cuMemAllocAsync`) where the
//! device supports memory pools.

mod blas;
mod error;
mod graph;
mod modules;
#[cfg(feature = "nccl")]
pub(crate) mod nccl;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUresult;
use cudarc::driver::{result as cu, CudaContext, CudaStream};

use crate::backend::gpu::{
    DeviceApi, DeviceGraph, GemmDesc, KernelId, LaunchConfig, Params, Stream,
};
use crate::base::Device;
use crate::base::{Error, Result};

/// Whether libcuda can be loaded (probed once; cudarc panics on a driver call without it).
fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the driver library.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Number of CUDA devices; [`Error::NoCudaDriver`] when libcuda cannot be loaded,
/// [`Error::Cuda`] when the driver fails to initialise. Never panics.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoCudaDriver);
    }
    match cu::init() {
        Ok(()) => {}
        Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => return Ok(0),
        Err(e) => return Err(error::cuda("cuInit", e)),
    }
    let n = cu::device::get_count().map_err(|e| error::cuda("cuDeviceGetCount", e))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A CUDA device: its context, its stream, its kernels and a cuBLAS handle.
pub struct CudaApi {
    device: Device,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: modules::KernelCache,
    /// Created on the first GEMM; `None` inside when libcublas is missing.
    blas: OnceLock<Option<blas::Blas>>,
    /// Whether `cuMemAllocAsync` is supported (memory pools).
    async_alloc: bool,
    /// Whether the stream is being captured (allocations then must not be stream
    /// ordered, or they would become nodes of the graph).
    capturing: std::sync::atomic::AtomicBool,
}

impl CudaApi {
    /// Opens device `ordinal`: retains its primary context and creates the stream.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoSuchDevice { ordinal, count });
        }
        let device = Device::Cuda(ordinal);
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| error::cuda(format!("creating a context on {device}"), e))?;
        // SAFETY: gradstep queues all work of a device on one stream and never uses
        // cudarc's CudaSlice, so cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| error::cuda(format!("creating a stream on {device}"), e))?;
        let async_alloc = ctx.has_async_alloc();
        Ok(CudaApi {
            device,
            ctx,
            stream,
            kernels: modules::KernelCache::new(),
            blas: OnceLock::new(),
            async_alloc,
            capturing: Default::default(),
        })
    }

    /// Makes the context current on the calling thread (a no-op when it already is).
    fn bind(&self, what: &str) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| error::cuda(format!("{what} on {}", self.device), e))
    }

    /// The cuBLAS handle, created on first use.
    fn blas(&self) -> Result<Option<&blas::Blas>> {
        if let Some(b) = self.blas.get() {
            return Ok(b.as_ref());
        }
        self.bind("creating a cuBLAS handle")?;
        let b = blas::Blas::new(self.stream.clone())?;
        // A racing thread may have set it first; either handle is equivalent.
        let _ = self.blas.set(b);
        Ok(self.blas.get().and_then(|b| b.as_ref()))
    }
}

// SAFETY: all work is queued on the device's one stream, which the driver orders and
// makes safe to use from several threads; dtoh and synchronize wait for the stream.
unsafe impl DeviceApi for CudaApi {
    fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| self.device.to_string())
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind("cuMemAlloc")?;
        // SAFETY: the stream belongs to this context; the memory is handed out uninitialised
        // as raw bytes, and every later use is queued on the same stream.
        let r = unsafe {
            if self.async_alloc && !self.capturing.load(Ordering::Acquire) {
                cu::malloc_async(self.stream.cu_stream(), bytes)
            } else {
                cu::malloc_sync(bytes)
            }
        };
        r.map_err(|e| error::alloc(self.device, bytes, e))
    }

    unsafe fn free(&self, ptr: u64) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // The caller guarantees `ptr` came from `alloc`; freeing is stream-ordered, so work
        // already queued that uses it completes first. Errors (a destroyed context at
        // exit) leave nothing to recover.
        let _ = if self.async_alloc {
            cu::free_async(ptr, self.stream.cu_stream())
        } else {
            cu::free_sync(ptr)
        };
    }

    unsafe fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        self.bind("cuMemsetD8Async")?;
        // SAFETY: `ptr..ptr+bytes` is device memory of this context (GpuDevice's contract).
        unsafe { cu::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| error::cuda(format!("cuMemsetD8Async of {bytes} bytes"), e))
    }

    unsafe fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        self.bind("cuMemcpyHtoDAsync")?;
        // SAFETY: `dst` holds `src.len()` bytes. `src` is pageable host memory, so the
        // driver has copied it into a staging buffer before the call returns and the
        // slice may be dropped afterwards.
        unsafe { cu::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| error::cuda(format!("copying {} bytes to {}", src.len(), self.device), e))
    }

    unsafe fn write_now(&self, src: &[u8], dst: u64) -> Result<()> {
        self.bind("cuMemcpyHtoD")?;
        // SAFETY: `dst` holds `src.len()` bytes that no queued or captured work uses (the
        // caller's contract). A synchronous copy on the legacy stream: not part of a
        // capture of the device's (non-blocking) stream, allowed in relaxed capture mode.
        unsafe { cu::memcpy_htod_sync(dst, src) }
            .map_err(|e| error::cuda(format!("copying {} bytes to {}", src.len(), self.device), e))
    }

    unsafe fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.bind("cuMemcpyDtoHAsync")?;
        let (bytes, device) = (dst.len(), self.device);
        let what = || format!("copying {bytes} bytes from {device}");
        // SAFETY: `src` holds `dst.len()` bytes; the stream is synchronised before `dst`
        // is released to the caller.
        unsafe { cu::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| error::cuda(what(), e))?;
        self.stream
            .synchronize()
            .map_err(|e| error::cuda(what(), e))
    }

    unsafe fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.bind("cuMemcpyDtoDAsync")?;
        // SAFETY: both ranges are device memory of this context holding `bytes` bytes.
        unsafe { cu::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| error::cuda(format!("copying {bytes} bytes on {}", self.device), e))
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| error::cuda(format!("synchronizing {}", self.device), e))
    }

    unsafe fn stream_wait(&self, waiter: Stream, on: Stream) -> Result<()> {
        use cudarc::driver::sys::{CUevent_flags, CUevent_wait_flags, CUstream};
        self.bind("cuStreamWaitEvent")?;
        let raw = |s: Stream| match s {
            Stream::Own => self.stream.cu_stream(),
            Stream::Foreign(p) => p as CUstream,
        };
        let what = || format!("making a stream of {} wait for another", self.device);
        let event = cu::event::create(CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| error::cuda(what(), e))?;
        // SAFETY: the event was just created; both streams are live (the caller's contract
        // for a foreign one). Destroying an event that a stream still waits on is allowed:
        // its resources are released once the wait completes.
        let r = unsafe {
            cu::event::record(event, raw(on)).and_then(|()| {
                cu::stream::wait_event(
                    raw(waiter),
                    event,
                    CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                )
            })
        };
        // SAFETY: as above.
        let _ = unsafe { cu::event::destroy(event) };
        r.map_err(|e| error::cuda(what(), e))
    }

    unsafe fn launch(&self, kernel: KernelId, cfg: &LaunchConfig, args: Params<'_>) -> Result<()> {
        self.bind("cuLaunchKernel")?;
        let f = self.kernels.function(&self.ctx, kernel)?;
        // SAFETY: `f` lives as long as the cache; the caller guarantees `args` match the
        // kernel's signature and address device memory large enough for its accesses.
        unsafe {
            cu::launch_kernel(
                f,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                args,
            )
        }
        .map_err(|e| error::kernel(kernel.name(), &format!("cuLaunchKernel {cfg:?}"), e))
    }

    #[cfg(feature = "nccl")]
    unsafe fn collective(
        &self,
        comm: &crate::backend::gpu::Comm,
        c: &crate::backend::gpu::Collective,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.nccl(comm, c) }
    }

    fn begin_capture(&self) -> Result<()> {
        use cudarc::driver::sys::CUstreamCaptureMode;
        self.bind("cuStreamBeginCapture")?;
        self.capturing.store(true, Ordering::Release);
        // Relaxed: the caching allocator may call cuMemAlloc during the capture.
        // SAFETY: the stream is this device's and lives as long as `self`.
        let r = unsafe {
            cu::stream::begin_capture(
                self.stream.cu_stream(),
                CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        };
        r.map_err(|e| {
            self.capturing.store(false, Ordering::Release);
            error::cuda(format!("starting a capture on {}", self.device), e)
        })
    }

    fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
        self.bind("cuStreamEndCapture")?;
        // SAFETY: the stream is this device's.
        let g = unsafe { cu::stream::end_capture(self.stream.cu_stream()) };
        self.capturing.store(false, Ordering::Release);
        let g = g.map_err(|e| error::cuda(format!("ending a capture on {}", self.device), e))?;
        // SAFETY: the graph just came from cuStreamEndCapture.
        Ok(Box::new(unsafe { graph::CudaGraph::instantiate(g)? }))
    }

    fn abort_capture(&self) {
        if self.bind("cuStreamEndCapture").is_ok() {
            // SAFETY: the stream is this device's; the graph, if any, is destroyed.
            if let Ok(g) = unsafe { cu::stream::end_capture(self.stream.cu_stream()) } {
                let _ = unsafe { cu::graph::destroy(g) };
            }
        }
        self.capturing.store(false, Ordering::Release);
    }

    unsafe fn launch_graph(&self, g: &dyn DeviceGraph) -> Result<()> {
        let g = g
            .as_any()
            .downcast_ref::<graph::CudaGraph>()
            .ok_or_else(|| Error::invalid("cuda", "a graph recorded by another backend"))?;
        self.bind("cuGraphLaunch")?;
        // SAFETY: the graph is this device's; the caller keeps its memory allocated.
        unsafe { cu::graph::launch(g.exec(), self.stream.cu_stream()) }
            .map_err(|e| error::cuda(format!("launching a graph on {}", self.device), e))
    }

    unsafe fn gemm(&self, g: &GemmDesc) -> Result<bool> {
        match self.blas()? {
            Some(b) => {
                self.bind("cuBLAS gemm")?;
                // SAFETY: forwarded contract: g's pointers address its matrices.
                unsafe { b.gemm(g) }
            }
            None => Ok(false),
        }
    }
}
