//! Element types of the CPU backend: storage access for every dtype and the arithmetic
//! type each float dtype computes in (f32 for f16 and f32, f64 for f64).

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};
use std::sync::Arc;

use half::f16;

use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, DType, Device, Element, Layout, Storage, Tensor};

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

impl Float for f16 {
    type A = f32;
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        f16::from_f32(v)
    }
}

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

/// Runs `$body` with `$T` bound to the Rust type of a float dtype; I64 is an
/// `Unsupported` error naming `$op`.
macro_rules! with_float {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        match $dtype {
            crate::tensor::DType::F16 => {
                type $T = half::f16;
                $body
            }
            crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            dtype @ crate::tensor::DType::I64 => Err(crate::error::Error::Unsupported {
                op: $op,
                dtype,
                device: crate::tensor::Device::Cpu,
            }),
        }
    };
}

/// Runs `$body` with `$T` bound to the Rust type of any dtype.
macro_rules! with_any {
    ($dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            crate::tensor::DType::F16 => {
                type $T = half::f16;
                $body
            }
            crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            crate::tensor::DType::I64 => {
                type $T = i64;
                $body
            }
        }
    };
}

pub(crate) use {with_any, with_float};

fn typed<'a, T: CpuElem>(op: &'static str, s: &'a Storage) -> Result<&'a [T]> {
    match s {
        Storage::Cpu(c) => T::slice(c).ok_or_else(|| {
            Error::invalid(
                op,
                format!("expected {} storage, found {}", T::DTYPE, c.dtype()),
            )
        }),
        Storage::Gpu(_) => Err(Error::invalid(
            op,
            "expected host storage, found device storage",
        )),
    }
}

fn typed_mut<'a, T: CpuElem>(op: &'static str, s: &'a mut Storage) -> Result<&'a mut [T]> {
    match s {
        Storage::Cpu(c) => {
            let found = c.dtype();
            T::slice_mut(c).ok_or_else(|| {
                Error::invalid(op, format!("expected {} storage, found {found}", T::DTYPE))
            })
        }
        Storage::Gpu(_) => Err(Error::invalid(
            op,
            "expected host storage, found device storage",
        )),
    }
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

/// Calls `f` with the whole storage slice of `t` (read lock held) and its layout.
pub(crate) fn read<T: CpuElem, R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&[T], &Layout) -> R,
) -> Result<R> {
    let guard = t.storage().read();
    let s = typed::<T>(op, &guard)?;
    check_extent(op, t.layout(), s.len())?;
    Ok(f(s, t.layout()))
}

/// Like [`read`] for two tensors of one element type; a storage shared by both is
/// locked once.
pub(crate) fn read2<T: CpuElem, R>(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl FnOnce(&[T], &Layout, &[T], &Layout) -> R,
) -> Result<R> {
    if Arc::ptr_eq(a.storage(), b.storage()) {
        return read(op, a, |s, la| {
            check_extent(op, b.layout(), s.len())?;
            Ok(f(s, la, s, b.layout()))
        })?;
    }
    let ga = a.storage().read();
    let gb = b.storage().read();
    let (sa, sb) = (typed::<T>(op, &ga)?, typed::<T>(op, &gb)?);
    check_extent(op, a.layout(), sa.len())?;
    check_extent(op, b.layout(), sb.len())?;
    Ok(f(sa, a.layout(), sb, b.layout()))
}

/// Calls `f` with the elements of the contiguous view `t` (write lock held): only the
/// view's own region of a possibly larger storage.
pub(crate) fn write<T: CpuElem, R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&mut [T]) -> R,
) -> Result<R> {
    let layout = t.layout();
    if !layout.is_contiguous() {
        return Err(Error::invalid(op, "the destination must be contiguous"));
    }
    let mut guard = t.storage().write();
    let s = typed_mut::<T>(op, &mut guard)?;
    check_extent(op, layout, s.len())?;
    let start = layout.offset();
    Ok(f(&mut s[start..start + layout.numel()]))
}

/// A new contiguous CPU tensor owning `v`.
pub(crate) fn output<T: CpuElem>(v: Vec<T>, shape: &[usize]) -> Tensor {
    debug_assert_eq!(v.len(), shape.iter().product::<usize>());
    Tensor::from_new_storage(Storage::Cpu(T::wrap(v)), shape, Device::Cpu)
}

/// The values of a small auxiliary tensor (statistics, a loss gradient) as f64.
pub(crate) fn small_f64(op: &'static str, t: &Tensor, len: usize) -> Result<Vec<f64>> {
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
    t.to_vec_f64()
}

/// The values of an index tensor (i64) in row-major order.
pub(crate) fn indices(op: &'static str, t: &Tensor) -> Result<Vec<i64>> {
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
    t.to_vec::<i64>()
}
