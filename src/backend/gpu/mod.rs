//! The one launch path shared by the CUDA backend and its host emulation.
//!
//! A GPU device is a [`DeviceApi`] (CUDA through cudarc, or the emulator) wrapped in a
//! [`GpuDevice`] that counts every launch, copy, memset, allocation and synchronisation.
//! Everything that plans a launch (grid sizes, argument packing, multi-tensor tables)
//! lives above this trait and so runs, unchanged, on both.

mod args;
mod counters;
pub mod kernels;
pub mod ops;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

pub use args::{KernelArgs, LaunchConfig};
pub use counters::{CounterSnapshot, Counters, Event};
pub use kernels::KernelId;

use crate::error::{Error, Result};
use crate::tensor::{DType, Device};

/// A row-major, optionally batched GEMM: `C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]`,
/// with `op(A)` of shape `[m, k]` and `op(B)` of shape `[k, n]`. Pointers are device
/// addresses; leading dims and batch strides are in elements.
#[derive(Clone, Copy, Debug)]
pub struct GemmDesc {
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

/// What a GPU backend must provide. Implemented by the CUDA backend and the emulator;
/// only these calls differ between them.
pub trait DeviceApi: Send + Sync {
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
    fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()>;
    /// Copies host bytes to the device, in stream order.
    fn htod(&self, src: &[u8], dst: u64) -> Result<()>;
    /// Copies device bytes to the host; returns when the copy is complete.
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copies between two device ranges, in stream order.
    fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()>;
    /// Waits until all queued work is done.
    fn synchronize(&self) -> Result<()>;
    /// Launches a kernel by id, with `params` packed as `cuLaunchKernel` takes them.
    ///
    /// # Safety
    /// `params` match the kernel's C signature and every pointer argument addresses
    /// device memory of sufficient size for the kernel's accesses.
    unsafe fn launch(
        &self,
        kernel: KernelId,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()>;
    /// Runs a GEMM through a vendor library. `Ok(false)` when the backend has none, in
    /// which case the caller launches gradstep's own matmul kernel.
    fn gemm(&self, _g: &GemmDesc) -> Result<bool> {
        Ok(false)
    }
}

/// A GPU device (CUDA or emulated) with its counters.
pub struct GpuDevice {
    device: Device,
    api: Box<dyn DeviceApi>,
    counters: Counters,
    per_kernel: Vec<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuDevice({}, {})", self.device, self.api.name())
    }
}

impl GpuDevice {
    /// Wraps a backend.
    pub fn new(device: Device, api: Box<dyn DeviceApi>) -> Self {
        GpuDevice {
            device,
            api,
            counters: Counters::default(),
            per_kernel: KernelId::all().map(|_| Default::default()).collect(),
        }
    }

    /// Which device this is.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The backend's name for the device.
    pub fn name(&self) -> String {
        self.api.name()
    }

    /// The current counter totals.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// How many times each kernel was launched on this device, by [`KernelId`] index.
    pub fn launches_per_kernel(&self) -> Vec<u64> {
        self.per_kernel
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Allocates a buffer of `bytes` bytes (uninitialised).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        let ptr = if bytes == 0 {
            0
        } else {
            self.counters.record(Event::Alloc);
            self.api.alloc(bytes)?
        };
        Ok(DeviceBuffer {
            dev: self.clone(),
            ptr,
            bytes,
        })
    }

    /// Allocates a zeroed buffer.
    pub fn alloc_zeroed(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        let b = self.alloc(bytes)?;
        self.memset_zero(b.ptr, bytes)?;
        Ok(b)
    }

    /// Launches `kernel` over `cfg` with `args`. Counted.
    pub fn launch(&self, kernel: KernelId, cfg: LaunchConfig, args: &mut KernelArgs) -> Result<()> {
        if args.param_bytes() > 4096 {
            return Err(Error::Kernel {
                kernel: kernel.name().to_string(),
                msg: format!(
                    "{} bytes of arguments exceed the 4096-byte limit",
                    args.param_bytes()
                ),
            });
        }
        self.counters.record(Event::Launch);
        self.per_kernel[kernel.0 as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut params = args.as_params();
        // SAFETY: the op that built `args` for this kernel guarantees they match its signature.
        unsafe { self.api.launch(kernel, &cfg, &mut params) }
    }

    /// Zeroes `bytes` bytes at `ptr`. Counted; a no-op for 0 bytes.
    pub fn memset_zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.counters.record(Event::Memset);
        self.api.memset_zero(ptr, bytes)
    }

    /// Copies host bytes to `dst`. Counted.
    pub fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.counters.record(Event::HtoD);
        self.api.htod(src, dst)
    }

    /// Copies device bytes to the host, synchronising. Counted.
    pub fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.counters.record(Event::DtoH);
        self.api.dtoh(src, dst)
    }

    /// Copies between device ranges. Counted.
    pub fn dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.counters.record(Event::DtoD);
        self.api.dtod(src, dst, bytes)
    }

    /// Waits for all queued work. Counted.
    pub fn synchronize(&self) -> Result<()> {
        self.counters.record(Event::Sync);
        self.api.synchronize()
    }

    /// A vendor GEMM when the backend has one (counted as one launch); `Ok(false)` otherwise.
    pub fn gemm(&self, g: &GemmDesc) -> Result<bool> {
        let done = self.api.gemm(g)?;
        if done {
            self.counters.record(Event::Launch);
        }
        Ok(done)
    }
}

/// An owned device allocation; freed on drop.
pub struct DeviceBuffer {
    dev: Arc<GpuDevice>,
    ptr: u64,
    bytes: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer({:#x}, {} bytes on {})",
            self.ptr, self.bytes, self.dev.device
        )
    }
}

impl DeviceBuffer {
    /// Device address of the first byte (0 for an empty buffer).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The device that owns the buffer.
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ptr != 0 {
            // SAFETY: the pointer came from this device's alloc; work is stream-ordered.
            unsafe { self.dev.api.free(self.ptr) };
        }
    }
}

/// The process-wide handle of a GPU device, created on first use and cached.
pub fn get(device: Device) -> Result<Arc<GpuDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<Device, Arc<GpuDevice>>>> = OnceLock::new();
    let mut map = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = map.get(&device) {
        return Ok(d.clone());
    }
    let api: Box<dyn DeviceApi> = match device {
        Device::Emu => Box::new(crate::backend::emu::EmuApi::new()?),
        Device::Cuda(ordinal) => Box::new(crate::backend::cuda::CudaApi::new(ordinal)?),
        Device::Cpu => {
            return Err(Error::invalid("gpu device", "the CPU is not a GPU device"));
        }
    };
    let d = Arc::new(GpuDevice::new(device, api));
    map.insert(device, d.clone());
    Ok(d)
}
