//! Element types of the CPU backend: storage access for every dtype and the arithmetic
//! type each float dtype computes in (f32 for f16 and f32, f64 for f64).

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use half::{bf16, f16};

use crate::base::{lock_host, CpuStorage, DType, Device, Element, Layout, RawTensor, StorageCell};
use crate::base::{Error, Result};

use super::strided::contiguous_cow;

/// An element type the CPU backend stores: typed access to [`CpuStorage`].
pub(crate) trait CpuElem: Element + Default {
    /// The elements of `s` when it holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// The elements of `s`, mutable, when it holds this type.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    /// Wraps a vector as storage.
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

macro_rules! cpu_elem {
    ($t:ty, $variant:ident) => {
        impl CpuElem for $t {
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}

cpu_elem!(f16, F16);
cpu_elem!(bf16, BF16);
cpu_elem!(f32, F32);
cpu_elem!(f64, F64);
cpu_elem!(i64, I64);

/// The arithmetic type of float kernels (f32 or f64).
pub(crate) trait Acc:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + 'static
{
    /// 0
    const ZERO: Self;
    /// 1
    const ONE: Self;
    /// -infinity
    const NEG_INFINITY: Self;
    /// Round-to-nearest conversion.
    fn of_f64(v: f64) -> Self;
    /// `e^x`
    fn exp(self) -> Self;
    /// natural log
    fn ln(self) -> Self;
    /// square root
    fn sqrt(self) -> Self;
    /// hyperbolic tangent
    fn tanh(self) -> Self;
    /// the error function
    fn erf(self) -> Self;
    /// absolute value
    fn abs(self) -> Self;
    /// whether the value is NaN
    fn is_nan(self) -> bool;
}

macro_rules! acc {
    ($t:ty, $erf:path) => {
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn of_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

acc!(f32, libm::erff);
acc!(f64, libm::erf);

/// A float element type: stored as itself, computed in [`Float::A`].
pub(crate) trait Float: CpuElem {
    /// The arithmetic type.
    type A: Acc + CpuElem;
    /// Widens to the arithmetic type.
    fn load(self) -> Self::A;
    /// Rounds from the arithmetic type (once).
    fn store(v: Self::A) -> Self;
}

/// `Float` for a 16-bit float computed in f32.
macro_rules! float_half {
    ($t:ty) => {
        impl Float for $t {
            type A = f32;
            #[inline(always)]
            fn load(self) -> f32 {
                <$t as super::f16conv::Half>::to_f32(self)
            }
            #[inline(always)]
            fn store(v: f32) -> Self {
                <$t as super::f16conv::Half>::from_f32(v)
            }
        }
    };
}

float_half!(f16);
float_half!(bf16);

macro_rules! float_self {
    ($t:ty) => {
        impl Float for $t {
            type A = $t;
            #[inline(always)]
            fn load(self) -> $t {
                self
            }
            #[inline(always)]
            fn store(v: $t) -> Self {
                v
            }
        }
    };
}

float_self!(f32);
float_self!(f64);

/// Runs `$body` with `$T` bound to the Rust type of a float dtype, and `$i64` for I64.
macro_rules! with_dtype {
    ($dtype:expr, |$T:ident| $body:expr, $i64:pat => $other:expr) => {
        match $dtype {
            crate::base::DType::F16 => {
                type $T = half::f16;
                $body
            }
            crate::base::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            crate::base::DType::F32 => {
                type $T = f32;
                $body
            }
            crate::base::DType::F64 => {
                type $T = f64;
                $body
            }
            $i64 => $other,
        }
    };
}

/// Runs `$body` with `$T` bound to the Rust type of a float dtype; I64 is an
/// `Unsupported` error naming `$op`.
macro_rules! with_float {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        crate::backend::cpu::elem::with_dtype!($dtype, |$T| $body, dtype @ crate::base::DType::I64 => {
            Err(crate::base::Error::Unsupported {
                op: $op,
                dtype,
                device: crate::base::Device::Cpu,
            })
        })
    };
}

/// Runs `$body` with `$T` bound to the Rust type of any dtype.
macro_rules! with_any {
    ($dtype:expr, |$T:ident| $body:expr) => {
        crate::backend::cpu::elem::with_dtype!($dtype, |$T| $body, crate::base::DType::I64 => {
            type $T = i64;
            $body
        })
    };
}

pub(crate) use {with_any, with_dtype, with_float};

fn typed<'a, T: CpuElem>(op: &'static str, s: &'a CpuStorage) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| {
        Error::invalid(
            op,
            format!("expected {} storage, found {}", T::DTYPE, s.dtype()),
        )
    })
}

fn typed_mut<'a, T: CpuElem>(op: &'static str, s: &'a mut CpuStorage) -> Result<&'a mut [T]> {
    let found = s.dtype();
    T::slice_mut(s)
        .ok_or_else(|| Error::invalid(op, format!("expected {} storage, found {found}", T::DTYPE)))
}

/// Checks that a view lies inside its storage (a broken layout is an error, not a panic).
fn check_extent(op: &'static str, layout: &Layout, len: usize) -> Result<()> {
    if layout.storage_extent() > len {
        return Err(Error::invalid(
            op,
            format!(
                "view {:?} reaches past its storage of {len} elements",
                layout
            ),
        ));
    }
    Ok(())
}

fn host_error(op: &'static str) -> Error {
    Error::invalid(op, "expected host storage, found device storage")
}

/// Calls `f` with the whole storage slice of `t` (read lock held) and its layout.
pub(crate) fn read<T: CpuElem, R>(
    op: &'static str,
    t: &RawTensor,
    f: impl FnOnce(&[T], &Layout) -> R,
) -> Result<R> {
    let guard = t.storage().read().ok_or_else(|| host_error(op))?;
    let s = typed::<T>(op, &guard)?;
    check_extent(op, t.layout(), s.len())?;
    Ok(f(s, t.layout()))
}

/// Like [`read`] for two tensors of one element type; a storage shared by both is
/// locked once, distinct ones in the global lock order.
pub(crate) fn read2<T: CpuElem, R>(
    op: &'static str,
    a: &RawTensor,
    b: &RawTensor,
    f: impl FnOnce(&[T], &Layout, &[T], &Layout) -> R,
) -> Result<R> {
    if a.shares_storage(b) {
        return read(op, a, |s, la| {
            check_extent(op, b.layout(), s.len())?;
            Ok(f(s, la, s, b.layout()))
        })?;
    }
    let guards = lock_host(&[(a.storage(), false), (b.storage(), false)])?;
    let (sa, sb) = (typed::<T>(op, &guards[0])?, typed::<T>(op, &guards[1])?);
    check_extent(op, a.layout(), sa.len())?;
    check_extent(op, b.layout(), sb.len())?;
    Ok(f(sa, a.layout(), sb, b.layout()))
}

/// The elements of the contiguous view `dst` within its storage slice `s`.
fn dst_region<'a, T: CpuElem>(
    op: &'static str,
    dst: &RawTensor,
    s: &'a mut CpuStorage,
) -> Result<&'a mut [T]> {
    let layout = dst.layout();
    if !layout.is_contiguous() {
        return Err(Error::invalid(op, "the destination must be contiguous"));
    }
    let s = typed_mut::<T>(op, s)?;
    check_extent(op, layout, s.len())?;
    let start = layout.offset();
    Ok(&mut s[start..start + layout.numel()])
}

/// Calls `f` with the elements of the contiguous view `t` (write lock held): only the
/// view's own region of a possibly larger storage.
pub(crate) fn write<T: CpuElem, R>(
    op: &'static str,
    t: &RawTensor,
    f: impl FnOnce(&mut [T]) -> R,
) -> Result<R> {
    let mut guard = t.storage().write().ok_or_else(|| host_error(op))?;
    Ok(f(dst_region::<T>(op, t, &mut guard)?))
}

/// Calls `f(dst elements, src storage, src layout)` with `dst` locked for writing and
/// `src` for reading, in the global lock order. A source sharing `dst`'s storage is first
/// copied out, so overlapping views read the old values.
pub(crate) fn write_from<T: CpuElem>(
    op: &'static str,
    dst: &RawTensor,
    src: &RawTensor,
    f: impl FnOnce(&mut [T], &[T], &Layout),
) -> Result<()> {
    if dst.shares_storage(src) {
        let copy = read::<T, _>(op, src, |s, l| contiguous_cow(s, l).into_owned())?;
        let layout = Layout::contiguous(src.shape());
        return write::<T, _>(op, dst, |d| f(d, &copy, &layout));
    }
    let mut guards = lock_host(&[(dst.storage(), true), (src.storage(), false)])?;
    let (gd, gs) = guards.split_at_mut(1);
    let s = typed::<T>(op, &gs[0])?;
    check_extent(op, src.layout(), s.len())?;
    let d = dst_region::<T>(op, dst, gd[0].get_mut().ok_or_else(|| host_error(op))?)?;
    f(d, s, src.layout());
    Ok(())
}

/// A new contiguous CPU tensor owning `v`.
pub(crate) fn output<T: CpuElem>(v: Vec<T>, shape: &[usize]) -> RawTensor {
    RawTensor::dense(StorageCell::host(T::wrap(v)), shape)
}

/// The values of a small auxiliary tensor (statistics, a loss gradient) as f64.
pub(crate) fn small_f64(op: &'static str, t: &RawTensor, len: usize) -> Result<Vec<f64>> {
    if t.device() != Device::Cpu || !t.dtype().is_float() || t.numel() != len {
        return Err(Error::invalid(
            op,
            format!(
                "expected a float cpu tensor of {len} elements, got {:?} {} on {}",
                t.shape(),
                t.dtype(),
                t.device()
            ),
        ));
    }
    with_float!(t.dtype(), op, |T| read::<T, _>(op, t, |s, l| {
        l.indices().map(|i| s[i].to_f64()).collect()
    }))
}

/// The values of an index tensor (i64) in row-major order.
pub(crate) fn indices(op: &'static str, t: &RawTensor) -> Result<Vec<i64>> {
    if t.dtype() != DType::I64 || t.device() != Device::Cpu {
        return Err(Error::invalid(
            op,
            format!(
                "indices must be an i64 cpu tensor, got {} on {}",
                t.dtype(),
                t.device()
            ),
        ));
    }
    read::<i64, _>(op, t, |s, l| contiguous_cow(s, l).into_owned())
}
