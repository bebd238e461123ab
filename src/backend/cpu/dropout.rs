//! Dropout masks from the counter-based generator shared by every backend.

use crate::backend::Random;
use crate::base::DType;
use crate::base::Result;

use super::elem::{output, with_float, Acc, Float};
use super::strided::for_chunks;
use super::CpuBackend;
use crate::base::RawTensor;

/// The 24-bit uniform draw `(z >> 40)` of element `i` for `seed` (splitmix64 of a
/// Weyl sequence); `u = draw * 2^-24`.
#[inline(always)]
pub(super) fn draw(seed: u64, i: u64) -> u32 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as u32
}

/// The smallest draw that keeps an element: `u >= p` exactly when
/// `draw >= ceil(p * 2^24)` (`p * 2^24` is exact in f64).
pub(super) fn keep_threshold(p: f64) -> u32 {
    (p * (1u64 << 24) as f64).ceil() as u32
}

fn mask_t<T: Float>(shape: &[usize], p: f64, seed: u64) -> Result<RawTensor> {
    let n: usize = shape.iter().product();
    let keep = T::store(T::A::ONE / (T::A::ONE - T::A::of_f64(p)));
    let threshold = keep_threshold(p);
    let zero = T::store(T::A::ZERO);
    let mut out = vec![T::default(); n];
    for_chunks(&mut out, 1, |start, out| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = if draw(seed, (start + i) as u64) >= threshold {
                keep
            } else {
                zero
            };
        }
    });
    Ok(output(out, shape))
}

impl Random for CpuBackend {
    fn dropout_mask(&self, shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<RawTensor> {
        with_float!(dtype, "dropout_mask", |T| mask_t::<T>(shape, p, seed))
    }
}
