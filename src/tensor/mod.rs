//! Tensors: shared storage plus a layout, with autograd metadata.
//!
//! This module holds the data structure, creation and movement between devices and
//! dtypes. The differentiable operations are `impl Tensor` blocks in [`crate::ops`].

mod device;
mod dtype;
mod layout;
mod rng;
mod storage;

use std::sync::{Arc, Mutex, MutexGuard};

use half::f16;

pub use device::Device;
pub use dtype::{DType, Element};
pub use layout::{broadcast_shapes, contiguous_strides, normalize_dim, Layout, StridedIndex};
pub use rng::Rng;
pub use storage::{CpuStorage, GpuStorage, Storage, StorageCell};

use crate::autograd::AutogradMeta;
use crate::backend::{dispatch, gpu};
use crate::error::{Error, Result};

/// An n-dimensional array on a device, cheap to clone (clones share data and identity).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

pub(crate) struct TensorImpl {
    pub(crate) storage: Arc<StorageCell>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) autograd: Mutex<AutogradMeta>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(shape={:?}, dtype={}, device={}, requires_grad={})",
            self.shape(),
            self.dtype(),
            self.device(),
            self.requires_grad()
        )
    }
}

impl Tensor {
    // ---- construction from parts -------------------------------------------------

    /// A tensor over existing storage (no autograd history).
    pub(crate) fn from_storage(
        storage: Arc<StorageCell>,
        layout: Layout,
        dtype: DType,
        device: Device,
    ) -> Tensor {
        Tensor(Arc::new(TensorImpl {
            storage,
            layout,
            dtype,
            device,
            autograd: Mutex::new(AutogradMeta::default()),
        }))
    }

    /// A contiguous tensor owning new storage.
    pub(crate) fn from_new_storage(s: Storage, shape: &[usize], device: Device) -> Tensor {
        let dtype = match &s {
            Storage::Cpu(c) => c.dtype(),
            Storage::Gpu(g) => g.dtype,
        };
        Tensor::from_storage(
            Arc::new(StorageCell::new(s)),
            Layout::contiguous(shape),
            dtype,
            device,
        )
    }

    /// A view of the same storage with another layout (no autograd history).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_storage(self.0.storage.clone(), layout, self.dtype(), self.device())
    }

    /// Uninitialised-or-zeroed contiguous storage of `shape` on `device` (zeroed on CPU,
    /// uninitialised on a GPU: every caller overwrites it).
    pub(crate) fn empty(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let s = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::zeros(dtype, n)),
            _ => {
                check_gpu_dtype("empty", dtype, device)?;
                let dev = gpu::get(device)?;
                Storage::Gpu(GpuStorage {
                    buffer: dev.alloc(n * dtype.size_in_bytes())?,
                    dtype,
                    len: n,
                })
            }
        };
        Ok(Tensor::from_new_storage(s, shape, device))
    }

    // ---- accessors ---------------------------------------------------------------

    /// Sizes of each dim.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// Alias of [`Self::shape`].
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.0.device
    }

    /// The view's layout.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// Whether the view is row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// The shared storage.
    pub fn storage(&self) -> &Arc<StorageCell> {
        &self.0.storage
    }

    /// Whether two handles are the same tensor (not just equal values).
    pub fn same_tensor(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A stable identity for the lifetime of the tensor (for maps keyed by tensor).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Whether two tensors view the same storage.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn meta(&self) -> MutexGuard<'_, AutogradMeta> {
        self.0.autograd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device address of the first element of this view (GPU tensors only).
    pub fn device_ptr(&self) -> Result<u64> {
        self.0
            .storage
            .device_ptr_at(self.0.layout.offset())
            .ok_or_else(|| Error::invalid("device_ptr", "tensor is on the cpu"))
    }

    // ---- creation ----------------------------------------------------------------

    /// A tensor from a vector of elements and a shape.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::invalid(
                "from_vec",
                format!(
                    "{} elements do not fill shape {shape:?} ({n} elements)",
                    data.len()
                ),
            ));
        }
        // SAFETY-free dispatch through Any: the element type decides the storage variant.
        let any: Box<dyn std::any::Any> = Box::new(data);
        let cpu = match T::DTYPE {
            DType::F16 => CpuStorage::F16(*any.downcast::<Vec<f16>>().expect("dtype")),
            DType::F32 => CpuStorage::F32(*any.downcast::<Vec<f32>>().expect("dtype")),
            DType::F64 => CpuStorage::F64(*any.downcast::<Vec<f64>>().expect("dtype")),
            DType::I64 => CpuStorage::I64(*any.downcast::<Vec<i64>>().expect("dtype")),
        };
        Tensor::from_cpu_storage(cpu, shape, device)
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A tensor from f64 values converted to `dtype` (round to nearest).
    pub fn from_f64s(
        data: &[f64],
        shape: &[usize],
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let cpu = match dtype {
            DType::F16 => CpuStorage::F16(data.iter().map(|&v| f16::from_f64(v)).collect()),
            DType::F32 => CpuStorage::F32(data.iter().map(|&v| v as f32).collect()),
            DType::F64 => CpuStorage::F64(data.to_vec()),
            DType::I64 => CpuStorage::I64(data.iter().map(|&v| v as i64).collect()),
        };
        if cpu.len() != shape.iter().product::<usize>() {
            return Err(Error::invalid(
                "from_f64s",
                format!("{} elements do not fill shape {shape:?}", data.len()),
            ));
        }
        Tensor::from_cpu_storage(cpu, shape, device)
    }

    /// Moves host storage to `device`.
    pub fn from_cpu_storage(cpu: CpuStorage, shape: &[usize], device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::from_new_storage(Storage::Cpu(cpu), shape, device)),
            _ => {
                check_gpu_dtype("to_device", cpu.dtype(), device)?;
                let dev = gpu::get(device)?;
                let buffer = dev.alloc(cpu.as_bytes().len())?;
                dev.htod(cpu.as_bytes(), buffer.ptr())?;
                let s = GpuStorage {
                    buffer,
                    dtype: cpu.dtype(),
                    len: cpu.len(),
                };
                Ok(Tensor::from_new_storage(Storage::Gpu(s), shape, device))
            }
        }
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::empty(shape, dtype, device),
            _ => {
                let t = Tensor::empty(shape, dtype, device)?;
                dispatch::zero_(&t)?;
                Ok(t)
            }
        }
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// Every element equal to `value` (converted to `dtype`).
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let t = Tensor::empty(shape, dtype, device)?;
        dispatch::fill_(&t, value)?;
        Ok(t)
    }

    /// Zeros with the shape, dtype and device of `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }

    /// Uniform in [0, 1), drawn on the host from `seed`.
    pub fn rand(shape: &[usize], seed: u64, dtype: DType, device: Device) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        Tensor::rand_with(shape, &mut rng, 0.0, 1.0, dtype, device)
    }

    /// Standard normal, drawn on the host from `seed`.
    pub fn randn(shape: &[usize], seed: u64, dtype: DType, device: Device) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        Tensor::from_f64s(&v, shape, dtype, device)
    }

    /// Uniform in [lo, hi) from a caller's generator.
    pub fn rand_with(
        shape: &[usize],
        rng: &mut Rng,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.uniform_range(lo, hi)).collect();
        Tensor::from_f64s(&v, shape, dtype, device)
    }

    // ---- movement ----------------------------------------------------------------

    /// The elements in row-major order as host storage of the tensor's dtype.
    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        let t = if self.is_contiguous() {
            self.clone()
        } else {
            dispatch::contiguous(self)?
        };
        let n = t.numel();
        let off = t.layout().offset();
        let guard = t.0.storage.read();
        let r = match &*guard {
            Storage::Cpu(c) => Ok(match c {
                CpuStorage::F16(v) => CpuStorage::F16(v[off..off + n].to_vec()),
                CpuStorage::F32(v) => CpuStorage::F32(v[off..off + n].to_vec()),
                CpuStorage::F64(v) => CpuStorage::F64(v[off..off + n].to_vec()),
                CpuStorage::I64(v) => CpuStorage::I64(v[off..off + n].to_vec()),
            }),
            Storage::Gpu(g) => {
                let mut out = CpuStorage::zeros(t.dtype(), n);
                g.buffer.device().dtoh(g.ptr_at(off), out.as_bytes_mut())?;
                Ok(out)
            }
        };
        r
    }

    /// The elements in row-major order; `T` must be the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let any: Box<dyn std::any::Any> = match self.to_cpu_storage()? {
            CpuStorage::F16(v) => Box::new(v),
            CpuStorage::F32(v) => Box::new(v),
            CpuStorage::F64(v) => Box::new(v),
            CpuStorage::I64(v) => Box::new(v),
        };
        Ok(*any.downcast::<Vec<T>>().expect("dtype checked"))
    }

    /// The elements in row-major order, converted to f64.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(match self.to_cpu_storage()? {
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v,
            CpuStorage::I64(v) => v.iter().map(|&x| x as f64).collect(),
        })
    }

    /// The single value of a one-element tensor, as f64 (synchronises with the device).
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "item",
                format!(
                    "a tensor of shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// A copy on `device` (the same tensor when already there). The copy has no autograd
    /// history: it is a new leaf.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let cpu = self.to_cpu_storage()?;
        Tensor::from_cpu_storage(cpu, self.shape(), device)
    }

    /// A copy converted to `dtype` (the same tensor when already of that dtype). The copy
    /// has no autograd history.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        dispatch::cast(self, dtype)
    }
}

/// Errors for dtypes the GPU backends do not hold. They hold every dtype: the ops kernels
/// cover f16, f32 and f64 (f64 at full precision, for gradient checks and references on
/// the emulator), and i64 for indices, copies, casts and fills; an op without a kernel for
/// a dtype reports `Unsupported` itself.
pub(crate) fn check_gpu_dtype(_op: &'static str, _dtype: DType, _device: Device) -> Result<()> {
    Ok(())
}
