//! Element types.

use std::fmt;

use half::{bf16, f16};

/// The element type of a tensor.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE half precision; computed in f32, stored in f16.
    F16,
    /// bfloat16 (f32's exponent, 8 bits of significand); computed in f32, stored in bf16.
    BF16,
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
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the dtype holds floating-point values.
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }

    /// Whether the dtype is a 16-bit float (f16 or bf16), stored so and computed in f32.
    pub const fn is_half(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }

    /// The name used in kernel names and files (`f16`, `bf16`, `f32`, `f64`, `i64`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }

    /// Parses `f16|float16|half`, `bf16|bfloat16`, `f32|float32|float`,
    /// `f64|float64|double`, `i64|int64|long`.
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
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
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i64 {}
}

/// A Rust type that can be the element of a tensor: `half::f16`, `half::bf16`, `f32`,
/// `f64` or `i64`.
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
        f16_from_f64(v)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        bf16_from_f64(v)
    }
}

/// `v` rounded once to the nearest bf16 (ties to even). `half::bf16::from_f64` drops the
/// low 32 bits of the significand before rounding, which can turn a value just above a
/// tie into a tie; the kernels round the same way as this.
pub fn bf16_from_f64(v: f64) -> bf16 {
    bf16::from_bits(round_f64_to_bits::<8, 7>(v))
}

/// `v` rounded once to the nearest f16 (ties to even). `half::f16::from_f64` goes through
/// f32 where the CPU has F16C, and that first rounding can move a value onto a tie (e.g.
/// `1 + 2^-11 + 2^-40` would become 1.0 instead of `1 + 2^-10`); the kernels round the
/// same way as this.
pub fn f16_from_f64(v: f64) -> f16 {
    f16::from_bits(round_f64_to_bits::<5, 10>(v))
}

/// The bits of `v` rounded once (to nearest, ties to even) to a binary float with `E`
/// exponent and `M` significand bits (at most 16 in all): subnormals, overflow to
/// infinity, and NaN kept quiet with the top payload bits.
fn round_f64_to_bits<const E: u32, const M: u32>(v: f64) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 48) & 0x8000) as u16;
    let exp = ((x >> 52) & 0x7ff) as i32;
    let man = x & ((1 << 52) - 1);
    let max_exp = (1i32 << E) - 1;
    let inf = (max_exp as u16) << M;
    if exp == 0x7ff {
        let nan = if man != 0 {
            (1 << (M - 1)) | (man >> (52 - M)) as u16
        } else {
            0
        };
        return sign | inf | nan;
    }
    let e = exp - 1023 + (max_exp >> 1);
    if e >= max_exp {
        return sign | inf;
    }
    let (q, rem, halfway) = if e <= 0 {
        if e < -(M as i32) {
            return sign; // below half the smallest subnormal
        }
        let m = man | (1 << 52);
        let shift = (53 - M as i32 - e) as u32;
        (m >> shift, m & ((1 << shift) - 1), 1u64 << (shift - 1))
    } else {
        (
            ((e as u64) << M) | (man >> (52 - M)),
            man & ((1 << (52 - M)) - 1),
            1u64 << (51 - M),
        )
    };
    let q = if rem > halfway || (rem == halfway && q & 1 == 1) {
        q + 1 // may carry into inf: correct
    } else {
        q
    };
    sign | q as u16
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_from_f64_rounds_once_like_the_exact_conversion() {
        let tie_through_f32 = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(f16_from_f64(tie_through_f32).to_f64(), 1.0 + 2f64.powi(-10));
        assert_eq!(f16_from_f64(1.0 + 2f64.powi(-11)).to_f64(), 1.0); // a true tie: even
                                                                      // Every f16 value, the midpoints between neighbours, and specials.
        for bits in 0..=0x7bffu16 {
            let a = f16::from_bits(bits).to_f64();
            let b = f16::from_bits(bits + 1).to_f64();
            for v in [a, -a, (a + b) / 2.0, a + (b - a) * 0.25, a + (b - a) * 0.75] {
                let want = f16::from_f32(v as f32); // exact here: v fits in f32
                assert_eq!(f16_from_f64(v).to_bits(), want.to_bits(), "{v}");
            }
        }
        assert_eq!(f16_from_f64(65520.0).to_bits(), 0x7c00); // rounds up to inf
        assert_eq!(f16_from_f64(f64::NEG_INFINITY).to_bits(), 0xfc00);
        assert!(f16_from_f64(f64::NAN).is_nan());
        assert_eq!(f16_from_f64(2f64.powi(-26)).to_bits(), 0);
        assert_eq!(f16_from_f64(2f64.powi(-25) * 1.5).to_bits(), 1);
    }

    #[test]
    fn bf16_from_f64_rounds_once_like_the_exact_conversion() {
        let above_tie = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(bf16_from_f64(above_tie).to_f64(), 1.0 + 2f64.powi(-7));
        assert_eq!(bf16_from_f64(1.0 + 2f64.powi(-8)).to_f64(), 1.0); // a true tie: even
                                                                      // Every finite bf16 value, midpoints and quarter points, against the f32 path
                                                                      // (exact here: these values fit in f32, and bf16::from_f32 rounds once).
        for bits in 0..0x7f7fu16 {
            let a = bf16::from_bits(bits).to_f64();
            let b = bf16::from_bits(bits + 1).to_f64();
            for v in [a, -a, (a + b) / 2.0, a + (b - a) * 0.25, a + (b - a) * 0.75] {
                let want = bf16::from_f32(v as f32);
                assert_eq!(bf16_from_f64(v).to_bits(), want.to_bits(), "{v}");
            }
        }
        assert_eq!(bf16_from_f64(f64::MAX).to_bits(), 0x7f80);
        assert_eq!(bf16_from_f64(f64::NEG_INFINITY).to_bits(), 0xff80);
        assert!(bf16_from_f64(f64::NAN).is_nan());
        assert_eq!(bf16_from_f64(2f64.powi(-134)).to_bits(), 0); // a tie with 0: even
        assert_eq!(bf16_from_f64(2f64.powi(-134) * 1.5).to_bits(), 1);
    }
}
