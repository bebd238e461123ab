//! The memory behind tensors: host vectors or a device buffer, shared by every view.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use half::{bf16, f16};

use super::{DType, Device, Error, Layout, Result};

/// Host storage, one vector per dtype.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum CpuStorage {
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements.
    I64(Vec<i64>),
}

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Zero-filled storage; `OutOfMemory` instead of an abort when the host cannot hold it.
    pub fn zeros(dtype: DType, n: usize) -> Result<Self> {
        fn vec<T: Clone>(zero: T, n: usize, dtype: DType) -> Result<Vec<T>> {
            debug_assert_eq!(std::mem::size_of::<T>(), dtype.size_in_bytes());
            let mut v = super::try_vec_with_capacity(n)?;
            v.resize(n, zero);
            Ok(v)
        }
        Ok(match dtype {
            DType::F16 => CpuStorage::F16(vec(f16::ZERO, n, dtype)?),
            DType::BF16 => CpuStorage::BF16(vec(bf16::ZERO, n, dtype)?),
            DType::F32 => CpuStorage::F32(vec(0.0, n, dtype)?),
            DType::F64 => CpuStorage::F64(vec(0.0, n, dtype)?),
            DType::I64 => CpuStorage::I64(vec(0, n, dtype)?),
        })
    }

    /// The raw bytes (native endian), for copies to a device or a file.
    pub fn as_bytes(&self) -> &[u8] {
        fn b<T>(v: &[T]) -> &[u8] {
            // SAFETY: plain-old-data element types; the byte view covers the same memory.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match self {
            CpuStorage::F16(v) => b(v),
            CpuStorage::BF16(v) => b(v),
            CpuStorage::F32(v) => b(v),
            CpuStorage::F64(v) => b(v),
            CpuStorage::I64(v) => b(v),
        }
    }

    /// The raw bytes, mutable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        fn b<T>(v: &mut [T]) -> &mut [u8] {
            // SAFETY: plain-old-data element types where every bit pattern is valid.
            unsafe {
                std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v))
            }
        }
        match self {
            CpuStorage::F16(v) => b(v),
            CpuStorage::BF16(v) => b(v),
            CpuStorage::F32(v) => b(v),
            CpuStorage::F64(v) => b(v),
            CpuStorage::I64(v) => b(v),
        }
    }
}

/// What hands device memory out and takes it back: a GPU device (CUDA or emulated).
///
/// # Safety
/// `release` must accept exactly the `(ptr, bytes)` pairs this allocator handed out.
#[cfg(gpu)]
pub(crate) unsafe trait DeviceMemory: Send + Sync {
    /// The device the memory is on.
    fn device(&self) -> Device;
    /// Takes back an allocation.
    ///
    /// # Safety
    /// `(ptr, bytes)` came from this allocator, is released once, and any work still
    /// queued that uses it is ordered before the memory's next use.
    unsafe fn release(&self, ptr: u64, bytes: usize);
}

/// An owned device allocation, returned to its allocator on drop. Its address is fixed
/// for its lifetime: the device pointer kernels use is derived from the buffer itself.
#[cfg(gpu)]
pub(crate) struct DeviceBuffer {
    owner: Arc<dyn DeviceMemory>,
    ptr: u64,
    bytes: usize,
}

#[cfg(gpu)]
impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer({:#x}, {} bytes on {})",
            self.ptr,
            self.bytes,
            self.owner.device()
        )
    }
}

#[cfg(gpu)]
impl DeviceBuffer {
    /// Wraps an allocation of `owner`.
    ///
    /// # Safety
    /// `(ptr, bytes)` was handed out by `owner` and is owned by nothing else.
    pub(crate) unsafe fn from_raw(owner: Arc<dyn DeviceMemory>, ptr: u64, bytes: usize) -> Self {
        DeviceBuffer { owner, ptr, bytes }
    }

    /// Device address of the first byte (0 for an empty buffer).
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The device the buffer is on.
    pub(crate) fn device(&self) -> Device {
        self.owner.device()
    }
}

#[cfg(gpu)]
impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.bytes != 0 {
            // SAFETY: the buffer owns the allocation (from_raw's contract); device work is
            // stream-ordered, so work queued before the drop completes before reuse.
            unsafe { self.owner.release(self.ptr, self.bytes) };
        }
    }
}

/// Host or device memory of a storage.
enum Data {
    /// Host vectors, behind a lock: in-place CPU ops write them.
    Host(RwLock<CpuStorage>),
    /// A device buffer: never replaced, written only by device work in stream order.
    #[cfg(gpu)]
    Device(DeviceBuffer),
}

/// Storage shared by every view of it: the memory, its dtype, device and length, and
/// the version counter that autograd uses to detect in-place changes to saved tensors.
pub(crate) struct StorageCell {
    data: Data,
    dtype: DType,
    device: Device,
    len: usize,
    version: AtomicU64,
}

impl std::fmt::Debug for StorageCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Storage({} x {} on {})",
            self.len, self.dtype, self.device
        )
    }
}

impl StorageCell {
    /// Host storage.
    pub(crate) fn host(s: CpuStorage) -> Self {
        StorageCell {
            dtype: s.dtype(),
            device: Device::Cpu,
            len: s.len(),
            data: Data::Host(RwLock::new(s)),
            version: AtomicU64::new(0),
        }
    }

    #[cfg(gpu)]
    /// Device storage of `len` elements of `dtype` in `buffer` (which holds at least them).
    pub(crate) fn on_device(buffer: DeviceBuffer, dtype: DType, len: usize) -> Result<Self> {
        if len.checked_mul(dtype.size_in_bytes()) > Some(buffer.bytes()) {
            return Err(Error::invalid(
                "storage",
                format!(
                    "{len} elements of {dtype} do not fit a buffer of {} bytes",
                    buffer.bytes()
                ),
            ));
        }
        Ok(StorageCell {
            dtype,
            device: buffer.device(),
            len,
            data: Data::Device(buffer),
            version: AtomicU64::new(0),
        })
    }

    /// Element type.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the memory is.
    pub(crate) fn device(&self) -> Device {
        self.device
    }

    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Device address of element `i` of a device storage (None on the host).
    #[cfg_attr(not(gpu), allow(unused_variables))]
    pub(crate) fn device_ptr_at(&self, i: usize) -> Option<u64> {
        match &self.data {
            #[cfg(gpu)]
            Data::Device(b) => Some(b.ptr() + (i * self.dtype.size_in_bytes()) as u64),
            Data::Host(_) => None,
        }
    }

    /// Shared access to host memory (None for device storage).
    pub(crate) fn read(&self) -> Option<RwLockReadGuard<'_, CpuStorage>> {
        match &self.data {
            Data::Host(l) => Some(l.read().unwrap_or_else(|e| e.into_inner())),
            #[cfg(gpu)]
            Data::Device(_) => None,
        }
    }

    /// Exclusive access to host memory (None for device storage). Does not bump the
    /// version: in-place ops call [`Self::bump_version`]. Callers that hold more than one
    /// storage lock take them through `backend::cpu::locks`, in one global order.
    pub(crate) fn write(&self) -> Option<RwLockWriteGuard<'_, CpuStorage>> {
        match &self.data {
            Data::Host(l) => Some(l.write().unwrap_or_else(|e| e.into_inner())),
            #[cfg(gpu)]
            Data::Device(_) => None,
        }
    }

    /// The number of in-place modifications so far.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records an in-place modification.
    pub(crate) fn bump_version(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// A lock on the host memory of one storage, shared or exclusive.
pub(crate) enum HostGuard<'a> {
    /// Shared.
    Read(RwLockReadGuard<'a, CpuStorage>),
    /// Exclusive.
    Write(RwLockWriteGuard<'a, CpuStorage>),
}

impl Deref for HostGuard<'_> {
    type Target = CpuStorage;
    fn deref(&self) -> &CpuStorage {
        match self {
            HostGuard::Read(g) => g,
            HostGuard::Write(g) => g,
        }
    }
}

impl HostGuard<'_> {
    /// The memory, mutable (None for a shared lock).
    pub(crate) fn get_mut(&mut self) -> Option<&mut CpuStorage> {
        match self {
            HostGuard::Read(_) => None,
            HostGuard::Write(g) => Some(g),
        }
    }
}

/// Locks the host memory of several distinct storages, `(storage, exclusive)` each, in
/// the order of their addresses: the one global lock order, so that two threads locking
/// the same storages (`a.add_(b)` against `b.add_(a)`) never deadlock. Returns the guards
/// in request order; an error for device storage or a storage named twice.
pub(crate) fn lock_host<'a>(req: &[(&'a StorageCell, bool)]) -> Result<Vec<HostGuard<'a>>> {
    let mut order: Vec<usize> = (0..req.len()).collect();
    order.sort_by_key(|&i| req[i].0 as *const StorageCell as usize);
    if order
        .windows(2)
        .any(|w| std::ptr::eq(req[w[0]].0, req[w[1]].0))
    {
        return Err(Error::invalid("lock", "a storage is named twice"));
    }
    let mut guards: Vec<Option<HostGuard<'a>>> = (0..req.len()).map(|_| None).collect();
    for i in order {
        let (cell, exclusive) = req[i];
        let device = || Error::invalid("lock", "expected host storage, found device storage");
        guards[i] = Some(if exclusive {
            HostGuard::Write(cell.write().ok_or_else(device)?)
        } else {
            HostGuard::Read(cell.read().ok_or_else(device)?)
        });
    }
    Ok(guards.into_iter().flatten().collect())
}

/// Storage and a layout into it, without autograd: what backends take and return.
/// Its layout always lies inside its storage (checked where views are made).
#[derive(Clone, Debug)]
pub(crate) struct RawTensor {
    storage: Arc<StorageCell>,
    layout: Layout,
}

impl RawTensor {
    /// A view of `storage`; an error when `layout` reaches past its end.
    pub(crate) fn new(storage: Arc<StorageCell>, layout: Layout) -> Result<Self> {
        if layout.storage_extent() > storage.len() {
            return Err(Error::invalid(
                "view",
                format!(
                    "a view of shape {:?}, strides {:?} and offset {} reaches past its storage of {} elements",
                    layout.shape(),
                    layout.strides(),
                    layout.offset(),
                    storage.len()
                ),
            ));
        }
        Ok(RawTensor { storage, layout })
    }

    /// New storage seen as a contiguous tensor of `shape` (whose element count the
    /// storage holds exactly).
    pub(crate) fn dense(storage: StorageCell, shape: &[usize]) -> Self {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        RawTensor {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
        }
    }

    /// Another view of the same storage (checked like [`Self::new`]).
    pub(crate) fn with_layout(&self, layout: Layout) -> Result<Self> {
        RawTensor::new(self.storage.clone(), layout)
    }

    /// The shared storage.
    pub(crate) fn storage(&self) -> &Arc<StorageCell> {
        &self.storage
    }

    /// The view's layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Sizes of each dim.
    pub(crate) fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Number of dims.
    pub(crate) fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub(crate) fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Element type.
    pub(crate) fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Where the data lives.
    pub(crate) fn device(&self) -> Device {
        self.storage.device()
    }

    /// Whether the view is row-major without gaps.
    pub(crate) fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether two views share storage.
    pub(crate) fn shares_storage(&self, other: &RawTensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Device address of the view's first element (device storage only).
    pub(crate) fn device_ptr(&self) -> Result<u64> {
        self.storage
            .device_ptr_at(self.layout.offset())
            .ok_or_else(|| Error::invalid("device_ptr", "the tensor is on the cpu"))
    }
}
