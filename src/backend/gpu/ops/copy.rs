//! Contiguous copies, casts, `copy_`, `fill_` and `zero_`: `kernels/copy.cu`, plus
//! device-to-device copies and memsets where no kernel is needed.

use super::plan::{elementwise_config, ptr, StridedLayout};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, KernelId};
use crate::backend::Memory;
use crate::base::{checked_numel, CpuStorage, DType, Error, RawTensor, Result, StorageCell};

/// The bitwise strided-copy kernel for an element width.
fn copy_kernel(dtype: DType) -> KernelId {
    match dtype.size_in_bytes() {
        2 => k::COPY_B16,
        4 => k::COPY_B32,
        _ => k::COPY_B64,
    }
}

/// The conversion kernel from `from` to `to` (different dtypes).
fn cast_kernel(from: DType, to: DType) -> Option<KernelId> {
    use DType::*;
    Some(match (from, to) {
        (F16, BF16) => k::CAST_F16_BF16,
        (F16, F32) => k::CAST_F16_F32,
        (F16, F64) => k::CAST_F16_F64,
        (F16, I64) => k::CAST_F16_I64,
        (BF16, F16) => k::CAST_BF16_F16,
        (BF16, F32) => k::CAST_BF16_F32,
        (BF16, F64) => k::CAST_BF16_F64,
        (BF16, I64) => k::CAST_BF16_I64,
        (F32, F16) => k::CAST_F32_F16,
        (F32, BF16) => k::CAST_F32_BF16,
        (F32, F64) => k::CAST_F32_F64,
        (F32, I64) => k::CAST_F32_I64,
        (F64, F16) => k::CAST_F64_F16,
        (F64, BF16) => k::CAST_F64_BF16,
        (F64, F32) => k::CAST_F64_F32,
        (F64, I64) => k::CAST_F64_I64,
        (I64, F16) => k::CAST_I64_F16,
        (I64, BF16) => k::CAST_I64_BF16,
        (I64, F32) => k::CAST_I64_F32,
        (I64, F64) => k::CAST_I64_F64,
        _ => return None,
    })
}

/// Writes the elements of `src` (any view) into the dense `dst` of the same shape
/// (`dst_ptr`: its first element) converting to `dst_dtype`: one memcpy when `src` is
/// contiguous and no conversion is needed, else one kernel.
fn write_dense(
    dev: &GpuDevice,
    op: &'static str,
    src: &RawTensor,
    dst_ptr: u64,
    dst_dtype: DType,
) -> Result<()> {
    let n = src.numel();
    if n == 0 {
        return Ok(());
    }
    let kernel = if src.dtype() == dst_dtype {
        if src.is_contiguous() {
            return dev.dtod(ptr(src)?, dst_ptr, n * dst_dtype.size_in_bytes());
        }
        copy_kernel(dst_dtype)
    } else {
        cast_kernel(src.dtype(), dst_dtype).ok_or_else(|| {
            Error::invalid(
                op,
                format!("no conversion from {} to {dst_dtype}", src.dtype()),
            )
        })?
    };
    let mut args = KernelArgs::new();
    args.push(ptr(src)?)
        .push(StridedLayout::of(op, src)?)
        .push(dst_ptr)
        .push(n as u64);
    dev.launch(kernel, elementwise_config(n), &mut args)
}

/// The bytes of `n` elements of `dtype`, or `OutOfMemory` when they overflow.
fn byte_len(dev: &GpuDevice, n: usize, dtype: DType) -> Result<usize> {
    n.checked_mul(dtype.size_in_bytes())
        .ok_or(Error::OutOfMemory {
            device: dev.device(),
            bytes: usize::MAX,
        })
}

impl Memory for GpuDevice {
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<RawTensor> {
        let n = checked_numel("empty", shape)?;
        let buffer = self.alloc(byte_len(self, n, dtype)?)?;
        Ok(RawTensor::dense(
            StorageCell::on_device(buffer, dtype, n)?,
            shape,
        ))
    }

    fn upload(&self, host: CpuStorage, shape: &[usize]) -> Result<RawTensor> {
        let t = self.empty(shape, host.dtype())?;
        self.htod(host.as_bytes(), t.device_ptr()?)?;
        Ok(t)
    }

    fn download(&self, x: &RawTensor) -> Result<CpuStorage> {
        let dense;
        let x = if x.is_contiguous() {
            x
        } else {
            dense = self.cast(x, x.dtype())?;
            &dense
        };
        let mut out = CpuStorage::zeros(x.dtype(), x.numel())?;
        self.dtoh(ptr(x)?, out.as_bytes_mut())?;
        self.check_status()?;
        Ok(out)
    }

    fn cast(&self, x: &RawTensor, dtype: DType) -> Result<RawTensor> {
        let out = self.empty(x.shape(), dtype)?;
        if out.numel() > 0 {
            write_dense(self, "cast", x, ptr(&out)?, dtype)?;
        }
        Ok(out)
    }

    fn copy_(&self, dst: &RawTensor, src: &RawTensor) -> Result<()> {
        if dst.numel() == 0 {
            return Ok(());
        }
        write_dense(self, "copy_", src, ptr(dst)?, dst.dtype())
    }

    fn write_host(&self, dst: &RawTensor, host: &CpuStorage) -> Result<()> {
        self.htod(host.as_bytes(), ptr(dst)?)
    }

    fn fill_(&self, t: &RawTensor, value: f64) -> Result<()> {
        let n = t.numel();
        if n == 0 {
            return Ok(());
        }
        let kernel = match t.dtype() {
            DType::F16 => k::FILL_F16,
            DType::BF16 => k::FILL_BF16,
            DType::F32 => k::FILL_F32,
            DType::F64 => k::FILL_F64,
            DType::I64 => k::FILL_I64,
        };
        let mut args = KernelArgs::new();
        args.push(ptr(t)?).push(n as u64).push(value);
        self.launch(kernel, elementwise_config(n), &mut args)
    }

    fn zero_(&self, t: &RawTensor) -> Result<()> {
        let n = t.numel();
        if n == 0 {
            return Ok(());
        }
        self.memset_zero(ptr(t)?, n * t.dtype().size_in_bytes())
    }
}
