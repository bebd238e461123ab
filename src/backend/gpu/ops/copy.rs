//! Contiguous copies, casts, `copy_`, `fill_` and `zero_`: `kernels/copy.cu`, plus
//! device-to-device copies and memsets where no kernel is needed.

use super::plan::{device_of, elementwise_config, empty, ptr, StridedLayout};
use crate::backend::gpu::{kernels::k, KernelArgs, KernelId};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

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
        (F16, F32) => k::CAST_F16_F32,
        (F16, F64) => k::CAST_F16_F64,
        (F16, I64) => k::CAST_F16_I64,
        (F32, F16) => k::CAST_F32_F16,
        (F32, F64) => k::CAST_F32_F64,
        (F32, I64) => k::CAST_F32_I64,
        (F64, F16) => k::CAST_F64_F16,
        (F64, F32) => k::CAST_F64_F32,
        (F64, I64) => k::CAST_F64_I64,
        (I64, F16) => k::CAST_I64_F16,
        (I64, F32) => k::CAST_I64_F32,
        (I64, F64) => k::CAST_I64_F64,
        _ => return None,
    })
}

/// Writes the elements of `src` (any view) into the dense `dst` of the same shape
/// (`dst_ptr`: its first element) converting to `dst_dtype`: one memcpy when `src` is
/// contiguous and no conversion is needed, else one kernel.
fn write_dense(op: &'static str, src: &Tensor, dst_ptr: u64, dst_dtype: DType) -> Result<()> {
    let n = src.numel();
    if n == 0 {
        return Ok(());
    }
    let dev = device_of(src)?;
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

/// See [`crate::backend::dispatch::contiguous`].
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    cast(x, x.dtype())
}

/// See [`crate::backend::dispatch::cast`].
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let out = empty(x.shape(), dtype, x.device())?;
    if out.numel() > 0 {
        write_dense("cast", x, ptr(&out)?, dtype)?;
    }
    Ok(out)
}

/// See [`crate::backend::dispatch::copy_`]: `dst` is contiguous (checked by dispatch).
pub fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    if dst.numel() == 0 {
        return Ok(());
    }
    write_dense("copy_", src, ptr(dst)?, dst.dtype())
}

/// See [`crate::backend::dispatch::fill_`]: `t` is contiguous (checked by dispatch).
pub fn fill_(t: &Tensor, value: f64) -> Result<()> {
    let n = t.numel();
    if n == 0 {
        return Ok(());
    }
    let kernel = match t.dtype() {
        DType::F16 => k::FILL_F16,
        DType::F32 => k::FILL_F32,
        DType::F64 => k::FILL_F64,
        DType::I64 => k::FILL_I64,
    };
    let mut args = KernelArgs::new();
    args.push(ptr(t)?).push(n as u64).push(value);
    device_of(t)?.launch(kernel, elementwise_config(n), &mut args)
}

/// See [`crate::backend::dispatch::zero_`]: one memset of the view's elements.
pub fn zero_(t: &Tensor) -> Result<()> {
    let n = t.numel();
    if n == 0 {
        return Ok(());
    }
    device_of(t)?.memset_zero(ptr(t)?, n * t.dtype().size_in_bytes())
}
