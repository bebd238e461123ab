//! Tensors: shared storage and a layout, with autograd metadata.
//!
//! This layer holds the [`Tensor`] type, its creation and movement between devices and
//! dtypes, the checked primitives (which validate arguments and call the device's
//! backend), and the backward graph that ops record ([`Node`]). The
//! differentiable operations are `impl Tensor` blocks in [`crate::ops`]; the engine that
//! runs backward is [`crate::autograd`].
//!
//! A tensor's storage is not reachable from outside the crate, so its memory can only be
//! changed through the checked operations, and a device buffer is never swapped under a
//! pointer that a kernel uses:
//!
//! ```compile_fail
//! use gradstep::{DType, Device, Tensor};
//! let t = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
//! let _ = t.storage(); // error[E0624]: method `storage` is private
//! ```

pub(crate) mod grad_mode;
pub(crate) mod graph;
pub(crate) mod prim;

use std::sync::{Arc, Mutex, MutexGuard};

use half::{bf16, f16};

pub use crate::base::{
    broadcast_shapes, checked_numel, contiguous_strides, normalize_dim, CpuStorage, DType, Device,
    Element, Layout, Rng, StridedIndex,
};
pub use graph::{AutogradMeta, BackwardCtx, Node, SavedTensor};

use crate::backend::backend;
use crate::base::{bf16_from_f64, f16_from_f64, Error, RawTensor, Result, StorageCell};

/// An n-dimensional array on a device, cheap to clone (clones share data and identity).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

pub(crate) struct TensorImpl {
    pub(crate) raw: RawTensor,
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

/// Wraps host data as a `CpuStorage` of its element type.
fn storage_of<T: Element>(data: Vec<T>) -> CpuStorage {
    let any: Box<dyn std::any::Any> = Box::new(data);
    match T::DTYPE {
        DType::F16 => CpuStorage::F16(*any.downcast::<Vec<f16>>().expect("dtype")),
        DType::BF16 => CpuStorage::BF16(*any.downcast::<Vec<bf16>>().expect("dtype")),
        DType::F32 => CpuStorage::F32(*any.downcast::<Vec<f32>>().expect("dtype")),
        DType::F64 => CpuStorage::F64(*any.downcast::<Vec<f64>>().expect("dtype")),
        DType::I64 => CpuStorage::I64(*any.downcast::<Vec<i64>>().expect("dtype")),
    }
}

impl Tensor {
    // ---- construction from parts -------------------------------------------------

    /// A tensor over a raw tensor (no autograd history).
    pub(crate) fn from_raw(raw: RawTensor) -> Tensor {
        Tensor(Arc::new(TensorImpl {
            raw,
            autograd: Mutex::new(AutogradMeta::default()),
        }))
    }

    /// A view of the same storage with another layout (no autograd history); an error
    /// when the layout reaches outside the storage.
    pub(crate) fn with_layout(&self, layout: Layout) -> Result<Tensor> {
        Ok(Tensor::from_raw(self.0.raw.with_layout(layout)?))
    }

    /// A new handle on the same view (no autograd history).
    pub(crate) fn alias(&self) -> Tensor {
        Tensor::from_raw(self.0.raw.clone())
    }

    /// A contiguous tensor of `shape` on `device`: zeroed on the CPU, uninitialised on a
    /// GPU (every caller overwrites it).
    pub(crate) fn empty(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_raw(backend(device)?.empty(shape, dtype)?))
    }

    // ---- accessors ---------------------------------------------------------------

    /// The storage and layout, without autograd.
    pub(crate) fn raw(&self) -> &RawTensor {
        &self.0.raw
    }

    /// Sizes of each dim.
    pub fn shape(&self) -> &[usize] {
        self.0.raw.shape()
    }

    /// Alias of [`Self::shape`].
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.raw.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.raw.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.raw.dtype()
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.0.raw.device()
    }

    /// The view's layout.
    pub fn layout(&self) -> &Layout {
        self.0.raw.layout()
    }

    /// Whether the view is row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.raw.is_contiguous()
    }

    /// The shared storage (crate-private: its memory is written only through the
    /// primitives, so a device pointer taken from it stays valid).
    pub(crate) fn storage(&self) -> &Arc<StorageCell> {
        self.0.raw.storage()
    }

    /// How many in-place modifications the storage has had (PyTorch's `_version`).
    pub fn version(&self) -> u64 {
        self.storage().version()
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
        self.0.raw.shares_storage(&other.0.raw)
    }

    pub(crate) fn meta(&self) -> MutexGuard<'_, AutogradMeta> {
        self.0.autograd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device address of the first element of this view (GPU tensors only). Reading the
    /// address is safe; writing through it is the caller's `unsafe` business.
    pub fn device_ptr(&self) -> Result<u64> {
        self.0.raw.device_ptr()
    }

    // ---- creation ----------------------------------------------------------------

    /// A tensor from a vector of elements and a shape.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        let n = checked_numel("from_vec", shape)?;
        if data.len() != n {
            return Err(Error::invalid(
                "from_vec",
                format!(
                    "{} elements do not fill shape {shape:?} ({n} elements)",
                    data.len()
                ),
            ));
        }
        Tensor::from_cpu_storage(storage_of(data), shape, device)
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
        let n = checked_numel("from_f64s", shape)?;
        crate::base::ensure_host_fits(n, dtype)?;
        if data.len() != n {
            return Err(Error::invalid(
                "from_f64s",
                format!("{} elements do not fill shape {shape:?}", data.len()),
            ));
        }
        let cpu = match dtype {
            DType::F16 => CpuStorage::F16(data.iter().map(|&v| f16_from_f64(v)).collect()),
            DType::BF16 => CpuStorage::BF16(data.iter().map(|&v| bf16_from_f64(v)).collect()),
            DType::F32 => CpuStorage::F32(data.iter().map(|&v| v as f32).collect()),
            DType::F64 => CpuStorage::F64(data.to_vec()),
            DType::I64 => CpuStorage::I64(data.iter().map(|&v| v as i64).collect()),
        };
        Tensor::from_cpu_storage(cpu, shape, device)
    }

    /// Moves host storage to `device` as a tensor of `shape`.
    pub fn from_cpu_storage(cpu: CpuStorage, shape: &[usize], device: Device) -> Result<Tensor> {
        if checked_numel("from_cpu_storage", shape)? != cpu.len() {
            return Err(Error::invalid(
                "from_cpu_storage",
                format!("{} elements do not fill shape {shape:?}", cpu.len()),
            ));
        }
        Ok(Tensor::from_raw(backend(device)?.upload(cpu, shape)?))
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let t = Tensor::empty(shape, dtype, device)?;
        if device != Device::Cpu {
            prim::zero_(&t)?;
        }
        Ok(t)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// Every element equal to `value` (converted to `dtype`).
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let t = Tensor::empty(shape, dtype, device)?;
        prim::fill_(&t, value)?;
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
        let n = checked_numel("randn", shape)?;
        crate::base::ensure_host_fits(n, DType::F64)?;
        crate::base::ensure_host_fits(n, dtype)?;
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
        let n = checked_numel("rand", shape)?;
        crate::base::ensure_host_fits(n, DType::F64)?;
        crate::base::ensure_host_fits(n, dtype)?;
        let v: Vec<f64> = (0..n).map(|_| rng.uniform_range(lo, hi)).collect();
        Tensor::from_f64s(&v, shape, dtype, device)
    }

    // ---- movement ----------------------------------------------------------------

    /// The elements in row-major order as host storage of the tensor's dtype (waits for
    /// the device, and reports a deferred device-side error).
    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        backend(self.device())?.download(self.raw())
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
            CpuStorage::BF16(v) => Box::new(v),
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
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
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
        prim::cast(self, dtype)
    }
}
