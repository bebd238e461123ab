//! f16 <-> f32 slice conversion, eight lanes at a time with the F16C instructions where
//! the CPU has them (checked once), else through `half` element by element. Both round
//! to nearest even, so the results are the same. bf16 <-> f32 (a shift, and a rounding
//! of the low 16 bits) in plain loops the compiler vectorises. [`Half`] names both.

use half::{bf16, f16};

/// A 16-bit float stored on the CPU and computed in f32: f16 or bf16.
pub(crate) trait Half: Copy + Send + Sync + Default + 'static {
    /// The exact f32 value.
    fn to_f32(self) -> f32;
    /// `v` rounded to nearest even.
    fn from_f32(v: f32) -> Self;
    /// Widens `src` into `dst` (equal lengths).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Rounds `src` into `dst` (equal lengths).
    fn narrow(src: &[f32], dst: &mut [Self]);
    /// Widens a short array, inlined into a caller compiled for AVX2 and F16C.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    unsafe fn widen_inline<const N: usize>(src: &[Self; N], dst: &mut [f32; N]);
    /// Rounds a short array, inlined as [`Half::widen_inline`].
    ///
    /// # Safety
    /// As [`Half::widen_inline`].
    unsafe fn narrow_inline<const N: usize>(src: &[f32; N], dst: &mut [Self; N]);
}

impl Half for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
    fn widen(src: &[f16], dst: &mut [f32]) {
        widen(src, dst)
    }
    fn narrow(src: &[f32], dst: &mut [f16]) {
        narrow(src, dst)
    }
    #[inline(always)]
    unsafe fn widen_inline<const N: usize>(src: &[f16; N], dst: &mut [f32; N]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's CPU has F16C; the arrays have equal lengths.
        unsafe {
            x86::widen_body(src, dst)
        }
        #[cfg(not(target_arch = "x86_64"))]
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
    }
    #[inline(always)]
    unsafe fn narrow_inline<const N: usize>(src: &[f32; N], dst: &mut [f16; N]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `widen_inline`.
        unsafe {
            x86::narrow_body(src, dst)
        }
        #[cfg(not(target_arch = "x86_64"))]
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = f16::from_f32(*s));
    }
}

impl Half for bf16 {
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
    fn widen(src: &[bf16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "widen: length mismatch");
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2 was detected; lengths are equal.
            return unsafe { x86::widen_bf16(src, dst) };
        }
        widen_bf16(src, dst);
    }
    fn narrow(src: &[f32], dst: &mut [bf16]) {
        assert_eq!(src.len(), dst.len(), "narrow: length mismatch");
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: as in `widen`.
            return unsafe { x86::narrow_bf16(src, dst) };
        }
        narrow_bf16(src, dst);
    }
    #[inline(always)]
    unsafe fn widen_inline<const N: usize>(src: &[bf16; N], dst: &mut [f32; N]) {
        widen_bf16(src, dst)
    }
    #[inline(always)]
    unsafe fn narrow_inline<const N: usize>(src: &[f32; N], dst: &mut [bf16; N]) {
        narrow_bf16(src, dst)
    }
}

/// Whether the CPU has AVX2, for the bf16 loops (compiled for it, chosen at run time).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// bf16 -> f32 (a shift), for the compiler to vectorise.
#[inline(always)]
fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = f32::from_bits(u32::from(s.to_bits()) << 16));
}

/// f32 -> bf16 rounded to nearest even, for the compiler to vectorise.
#[inline(always)]
fn narrow_bf16(src: &[f32], dst: &mut [bf16]) {
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = bf16::from_bits(bf16_bits_rn(s.to_bits())));
}

/// The bf16 bits of the f32 with bits `x`, rounded to nearest even; a NaN stays a quiet
/// NaN. Branch-free, so slice loops vectorise (`half`'s conversion does not).
#[inline(always)]
fn bf16_bits_rn(x: u32) -> u16 {
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (x >> 16) | 0x40 } else { rounded }) as u16
}

/// Whether the CPU converts with F16C (detected once, then a cached flag).
#[cfg(target_arch = "x86_64")]
fn f16c() -> bool {
    std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx")
}

/// Whether the CPU has AVX2 and F16C, for loops that convert inside their vector body.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_f16c() -> bool {
    avx2() && f16c()
}

/// Widens `src` into `dst` (equal lengths).
pub(crate) fn widen(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if f16c() {
        // SAFETY: F16C and AVX were detected; lengths are equal.
        return unsafe { x86::widen(src, dst) };
    }
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
}

/// Rounds `src` into `dst` (equal lengths).
pub(crate) fn narrow(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "narrow: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if f16c() {
        // SAFETY: as in `widen`.
        return unsafe { x86::narrow(src, dst) };
    }
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = f16::from_f32(*s));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::{bf16, f16};
    use std::arch::x86_64::{
        __m128i, _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
        _mm_loadu_si128, _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT,
    };

    /// # Safety
    /// The CPU must have F16C and AVX; `src` and `dst` have equal lengths.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        // SAFETY: the CPU has F16C; equal lengths (the caller's contract).
        unsafe { widen_body(src, dst) }
    }

    /// The body of [`widen`], inlined into callers compiled with F16C.
    ///
    /// # Safety
    /// The CPU must have F16C and AVX; `src` and `dst` have equal lengths.
    #[inline(always)]
    pub(super) unsafe fn widen_body(src: &[f16], dst: &mut [f32]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= both lengths; unaligned loads and stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for i in n..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// The portable bf16 loop compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2; `src` and `dst` have equal lengths.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
        super::widen_bf16(src, dst)
    }

    /// The portable bf16 loop compiled with AVX2.
    ///
    /// # Safety
    /// As [`widen_bf16`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn narrow_bf16(src: &[f32], dst: &mut [bf16]) {
        super::narrow_bf16(src, dst)
    }

    /// # Safety
    /// As [`widen`].
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [f16]) {
        // SAFETY: as in `widen`.
        unsafe { narrow_body(src, dst) }
    }

    /// The body of [`narrow`], inlined into callers compiled with F16C.
    ///
    /// # Safety
    /// As [`widen_body`].
    #[inline(always)]
    pub(super) unsafe fn narrow_body(src: &[f32], dst: &mut [f16]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: as in `widen`.
            unsafe {
                let f = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), h);
            }
        }
        for i in n..src.len() {
            dst[i] = f16::from_f32(src[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_narrowing_matches_half_on_every_neighbour_of_every_bf16() {
        let mut src = vec![
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
        ];
        for b in 0..=u16::MAX {
            let w = <bf16 as Half>::to_f32(bf16::from_bits(b));
            assert!(w.to_bits() == bf16::from_bits(b).to_f32().to_bits() || w.is_nan());
            if w.is_finite() {
                let x = w.to_bits();
                // The value, its f32 neighbours, the midpoint to the next bf16 and beside it.
                for v in [
                    x,
                    x + 1,
                    x.wrapping_sub(1),
                    x + 0x8000,
                    x + 0x7fff,
                    x + 0x8001,
                ] {
                    src.push(f32::from_bits(v));
                }
            }
        }
        let mut narrowed = vec![bf16::ZERO; src.len()];
        <bf16 as Half>::narrow(&src, &mut narrowed);
        for (s, h) in src.iter().zip(&narrowed) {
            let want = bf16::from_f32(*s);
            assert!(
                want.to_bits() == h.to_bits() || (want.is_nan() && h.is_nan()),
                "{s}"
            );
        }
    }

    #[test]
    fn matches_half_on_every_f16_and_on_rounding_cases() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut wide = vec![0f32; all.len()];
        widen(&all, &mut wide);
        for (h, w) in all.iter().zip(&wide) {
            assert!(h.to_f32().to_bits() == w.to_bits() || (h.is_nan() && w.is_nan()));
        }
        // Halfway cases, subnormals, overflow, and every f16 nudged up and down by one
        // f32 ulp.
        let mut src: Vec<f32> = vec![65520.0, 65519.99, 1e-8, 3e-8, -6e-8, 1e5, f32::INFINITY];
        for w in wide.iter().filter(|w| w.is_finite()) {
            src.push(f32::from_bits(w.to_bits() + 1));
            src.push(f32::from_bits(w.to_bits().saturating_sub(1)));
        }
        let mut narrowed = vec![f16::ZERO; src.len()];
        narrow(&src, &mut narrowed);
        for (s, h) in src.iter().zip(&narrowed) {
            assert_eq!(f16::from_f32(*s).to_bits(), h.to_bits(), "{s}");
        }
    }
}
