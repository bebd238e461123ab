//! Memory of the CPU backend: new tensors, host transfers, copies, casts, `add_` and
//! the fills.

use crate::backend::Memory;
use crate::base::{checked_numel, CpuStorage, DType, Element, RawTensor, Result, StorageCell};

use super::elem::{output, read, with_any, write, write_from, CpuElem};
use super::strided::{contiguous_cow, map1, zip1};
use super::CpuBackend;

/// One element converted between dtypes: round to nearest between floats, truncation
/// toward zero (saturating, NaN to 0) from float to i64.
#[inline(always)]
fn convert<I: Element, O: Element>(x: I) -> O {
    O::from_f64(x.to_f64())
}

fn cast_t<I: CpuElem, O: CpuElem>(x: &RawTensor) -> Result<RawTensor> {
    let v = read::<I, _>("cast", x, |s, l| map1(s, l, convert::<I, O>))?;
    Ok(output(v, x.shape()))
}

fn contiguous_t<T: CpuElem>(x: &RawTensor) -> Result<RawTensor> {
    let v = read::<T, _>("contiguous", x, |s, l| contiguous_cow(s, l).into_owned())?;
    Ok(output(v, x.shape()))
}

impl Memory for CpuBackend {
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<RawTensor> {
        let n = checked_numel("empty", shape)?;
        Ok(RawTensor::dense(
            StorageCell::host(CpuStorage::zeros(dtype, n)?),
            shape,
        ))
    }

    fn upload(&self, host: CpuStorage, shape: &[usize]) -> Result<RawTensor> {
        Ok(RawTensor::dense(StorageCell::host(host), shape))
    }

    fn download(&self, x: &RawTensor) -> Result<CpuStorage> {
        with_any!(x.dtype(), |T| read::<T, _>("to_cpu", x, |s, l| {
            T::wrap(contiguous_cow(s, l).into_owned())
        }))
    }

    fn cast(&self, x: &RawTensor, dtype: DType) -> Result<RawTensor> {
        if dtype == x.dtype() {
            return with_any!(x.dtype(), |T| contiguous_t::<T>(x));
        }
        with_any!(x.dtype(), |I| with_any!(dtype, |O| cast_t::<I, O>(x)))
    }

    fn copy_(&self, dst: &RawTensor, src: &RawTensor) -> Result<()> {
        with_any!(dst.dtype(), |T| write_from::<T>(
            "copy_",
            dst,
            src,
            |d, s, l| { zip1(d, s, l, |o, x| *o = x) }
        ))
    }

    fn write_host(&self, dst: &RawTensor, host: &CpuStorage) -> Result<()> {
        with_any!(dst.dtype(), |T| {
            let src = T::slice(host).ok_or_else(|| {
                crate::base::Error::invalid("copy_", "host data of another dtype")
            })?;
            write::<T, _>("copy_", dst, |d| d.copy_from_slice(src))
        })
    }

    fn fill_(&self, t: &RawTensor, value: f64) -> Result<()> {
        with_any!(t.dtype(), |T| write::<T, _>("fill_", t, |d| d
            .fill(<T as Element>::from_f64(value))))
    }

    fn zero_(&self, t: &RawTensor) -> Result<()> {
        with_any!(t.dtype(), |T| write::<T, _>("zero_", t, |d| d
            .fill(T::default())))
    }
}
