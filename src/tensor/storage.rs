//! The memory behind tensors: host vectors or a device buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use half::f16;

use crate::backend::gpu::DeviceBuffer;
use crate::tensor::DType;

/// Host storage, one vector per dtype.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    /// f16 elements.
    F16(Vec<f16>),
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
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F16(v) => v.len(),
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Zero-filled storage.
    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
        }
    }

    /// The raw bytes (native endian), for copies to a device or a file.
    pub fn as_bytes(&self) -> &[u8] {
        fn b<T>(v: &[T]) -> &[u8] {
            // SAFETY: plain-old-data element types; the byte view covers the same memory.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match self {
            CpuStorage::F16(v) => b(v),
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
            CpuStorage::F32(v) => b(v),
            CpuStorage::F64(v) => b(v),
            CpuStorage::I64(v) => b(v),
        }
    }
}

/// Device storage: a buffer of `len` elements of `dtype`.
#[derive(Debug)]
pub struct GpuStorage {
    /// The allocation.
    pub buffer: DeviceBuffer,
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
}

impl GpuStorage {
    /// Device address of element `i`.
    pub fn ptr_at(&self, i: usize) -> u64 {
        self.buffer.ptr() + (i * self.dtype.size_in_bytes()) as u64
    }
}

/// Host or device storage.
#[derive(Debug)]
pub enum Storage {
    /// On the host.
    Cpu(CpuStorage),
    /// On a GPU (CUDA or emulated).
    Gpu(GpuStorage),
}

impl Storage {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(c) => c.len(),
            Storage::Gpu(g) => g.len,
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Storage shared by every view of it, with the version counter that autograd uses to
/// detect in-place changes to saved tensors.
#[derive(Debug)]
pub struct StorageCell {
    data: RwLock<Storage>,
    version: AtomicU64,
    /// Device address and element size of a GPU storage, fixed for its lifetime: device
    /// pointers are read without the lock (the multi-tensor step reads thousands).
    device: Option<(u64, usize)>,
}

impl StorageCell {
    /// Wraps storage.
    pub fn new(s: Storage) -> Self {
        let device = match &s {
            Storage::Gpu(g) => Some((g.buffer.ptr(), g.dtype.size_in_bytes())),
            Storage::Cpu(_) => None,
        };
        StorageCell {
            data: RwLock::new(s),
            version: AtomicU64::new(0),
            device,
        }
    }

    /// Device address of element `i` of a GPU storage (None on the host).
    pub fn device_ptr_at(&self, i: usize) -> Option<u64> {
        self.device.map(|(base, size)| base + (i * size) as u64)
    }

    /// Shared access.
    pub fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access. Does not bump the version: in-place ops call [`Self::bump_version`].
    pub fn write(&self) -> RwLockWriteGuard<'_, Storage> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of in-place modifications so far.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records an in-place modification.
    pub fn bump_version(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}
