//! Copies, casts and the in-place ops (`add_`, `copy_`, `fill_`, `zero_`).

use std::sync::Arc;

use crate::error::Result;
use crate::tensor::{DType, Element, Layout, Tensor};

use super::elem::{output, read, with_any, with_float, write, Acc, CpuElem, Float};
use super::strided::{contiguous_cow, map1, zip1};

fn contiguous_t<T: CpuElem>(x: &Tensor) -> Result<Tensor> {
    let v = read::<T, _>("contiguous", x, |s, l| contiguous_cow(s, l).into_owned())?;
    Ok(output(v, x.shape()))
}

/// See [`crate::backend::dispatch::contiguous`].
pub(crate) fn contiguous(x: &Tensor) -> Result<Tensor> {
    with_any!(x.dtype(), |T| contiguous_t::<T>(x))
}

/// One element converted between dtypes: round to nearest between floats, truncation
/// toward zero (saturating, NaN to 0) from float to i64.
#[inline(always)]
fn convert<I: Element, O: Element>(x: I) -> O {
    O::from_f64(x.to_f64())
}

fn cast_t<I: CpuElem, O: CpuElem>(x: &Tensor) -> Result<Tensor> {
    let v = read::<I, _>("cast", x, |s, l| map1(s, l, convert::<I, O>))?;
    Ok(output(v, x.shape()))
}

/// See [`crate::backend::dispatch::cast`].
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == x.dtype() {
        return contiguous(x);
    }
    with_any!(x.dtype(), |I| with_any!(dtype, |O| cast_t::<I, O>(x)))
}

/// Calls `f(dst_elements, src_storage, src_layout)` with `dst` locked for writing. A
/// source sharing `dst`'s storage is first copied out, so overlapping views read the
/// old values.
fn with_dst_src<T: CpuElem>(
    op: &'static str,
    dst: &Tensor,
    src: &Tensor,
    f: impl FnOnce(&mut [T], &[T], &Layout),
) -> Result<()> {
    if Arc::ptr_eq(dst.storage(), src.storage()) {
        let copy = read::<T, _>(op, src, |s, l| contiguous_cow(s, l).into_owned())?;
        let layout = Layout::contiguous(src.shape());
        return write::<T, _>(op, dst, |d| f(d, &copy, &layout));
    }
    read::<T, _>(op, src, |s, l| write::<T, _>(op, dst, |d| f(d, s, l)))?
}

/// See [`crate::backend::dispatch::copy_`].
pub(crate) fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    with_any!(dst.dtype(), |T| with_dst_src::<T>(
        "copy_",
        dst,
        src,
        |d, s, l| { zip1(d, s, l, |o, x| *o = x) }
    ))
}

fn add_t<T: Float>(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    let alpha = T::A::of_f64(alpha);
    with_dst_src::<T>("add_", dst, src, |d, s, l| {
        zip1(d, s, l, |o: &mut T, x: T| {
            *o = T::store(o.load() + alpha * x.load())
        })
    })
}

/// See [`crate::backend::dispatch::add_`].
pub(crate) fn add_(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    with_float!(dst.dtype(), "add_", |T| add_t::<T>(dst, src, alpha))
}

/// See [`crate::backend::dispatch::fill_`].
pub(crate) fn fill_(t: &Tensor, value: f64) -> Result<()> {
    with_any!(t.dtype(), |T| write::<T, _>("fill_", t, |d| d
        .fill(T::from_f64(value))))
}

/// See [`crate::backend::dispatch::zero_`].
pub(crate) fn zero_(t: &Tensor) -> Result<()> {
    with_any!(t.dtype(), |T| write::<T, _>("zero_", t, |d| d
        .fill(T::default())))
}
