//! Element types.

use std::fmt;

use half::f16;

/// The element type of a tensor.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE half precision; computed in f32, stored in f16.
    F16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision (gradient checks and references).
    F64,
    /// 64-bit signed integers (class indices, embedding indices).
    I64,
}

impl DType {
    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the dtype holds floating-point values.
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }

    /// The name used in kernel names and files (`f16`, `f32`, `f64`, `i64`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }

    /// Parses `f16|float16|half`, `f32|float32|float`, `f64|float64|double`, `i64|int64|long`.
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f16" | "float16" | "half" => DType::F16,
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            "i64" | "int64" | "long" => DType::I64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

mod sealed {
    /// Keeps [`super::Element`] implemented by gradstep's element types only.
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i64 {}
}

/// A Rust type that can be the element of a tensor: `half::f16`, `f32`, `f64` or `i64`.
/// Sealed: other crates cannot add element types.
///
/// ```compile_fail
/// struct Mine;
/// impl gradstep::Element for Mine {} // the trait is sealed
/// ```
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static + fmt::Debug {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Converts to f64 (exact for every element type but large i64).
    fn to_f64(self) -> f64;
    /// Converts from f64 with round-to-nearest.
    fn from_f64(v: f64) -> Self;
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}

/// `Element` for a primitive number type, converting with `as` (round to nearest for
/// floats; truncation toward zero, saturating, NaN to 0 for i64).
macro_rules! element_as {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    )*};
}

element_as!(f32 => F32, f64 => F64, i64 => I64);
