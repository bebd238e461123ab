//! The CPU loops of gradient clipping and unscaling: a norm's terms folded per block of
//! a grad (in f32 for f16, bf16 and f32, in f64 for f64, as the kernels do; blocks in
//! parallel, combined in order so the result does not depend on the threads), and an
//! elementwise scale or clamp in place. Views that are not contiguous are read through
//! their layout, one element at a time.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::backend::cpu::f16conv::Half;
use crate::base::{Error, Result};
use crate::optim::clip::NormKind;
use crate::tensor::{CpuStorage, Tensor};

/// Elements per parallel block.
const BLOCK: usize = 1 << 14;
/// Independent accumulators per block (lanes the compiler can vectorise).
const LANES: usize = 16;

/// What [`apply`] does to each element.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ElemOp {
    /// Times the factor (in f32 when the factor is an f32 value and the grad is not f64).
    Scale(f64),
    /// Clamped to `[lo, hi]`; NaN stays NaN.
    Clamp(f64, f64),
}

macro_rules! fold_block {
    ($name:ident, $t:ty) => {
        /// The combined terms of `c` for `kind`, accumulated in lanes.
        fn $name(c: &[$t], kind: NormKind) -> f64 {
            let (body, tail) = c.split_at(c.len() / LANES * LANES);
            let sum = |term: &dyn Fn($t) -> $t| -> f64 {
                let mut acc = [0.0 as $t; LANES];
                for ch in body.chunks_exact(LANES) {
                    for j in 0..LANES {
                        acc[j] += term(ch[j]);
                    }
                }
                let s: $t = acc.iter().sum::<$t>() + tail.iter().map(|&x| term(x)).sum::<$t>();
                s as f64
            };
            let extreme = |max: bool| -> f64 {
                let init = if max { 0.0 } else { <$t>::INFINITY };
                let mut acc = [init; LANES];
                let mut nan = false;
                for ch in body.chunks_exact(LANES) {
                    for j in 0..LANES {
                        let a = ch[j].abs();
                        nan |= a.is_nan();
                        acc[j] = if (a > acc[j]) == max { a } else { acc[j] };
                    }
                }
                let pick = |a: $t, b: $t| if (a > b) == max { a } else { b };
                let r = acc.iter().chain(tail).map(|x| x.abs()).fold(init, pick);
                nan |= tail.iter().any(|x| x.is_nan());
                if nan {
                    f64::NAN
                } else {
                    r as f64
                }
            };
            match kind {
                NormKind::L2 => sum(&|x| x * x),
                NormKind::L1 => sum(&|x| x.abs()),
                NormKind::L0 => sum(&|x| if x != 0.0 { 1.0 } else { 0.0 }),
                NormKind::Inf => extreme(true),
                NormKind::NegInf => extreme(false),
                NormKind::P(p) => sum(&|x| x.abs().powf(p as $t)),
            }
        }
    };
}

fold_block!(fold_f32, f32);
fold_block!(fold_f64, f64);

/// The terms of a dense slice, blocks in parallel, combined in block order.
fn fold_dense<T: Sync>(s: &[T], kind: NormKind, block: impl Fn(&[T]) -> f64 + Sync + Send) -> f64 {
    let parts: Vec<f64> = s.par_chunks(BLOCK).map(block).collect();
    parts
        .into_iter()
        .fold(kind.identity(), |a, b| kind.combine(a, b))
}

/// A 16-bit block folded in f32.
fn fold_half<H: Half>(c: &[H], kind: NormKind) -> f64 {
    let mut w = vec![0f32; c.len()];
    H::widen(c, &mut w);
    fold_f32(&w, kind)
}

fn no_host(what: &str) -> Error {
    Error::Optim(format!("{what}: a CPU grad without host storage"))
}

/// The combined terms (for `kind`) of every element of a CPU grad.
pub(crate) fn fold(g: &Tensor, kind: NormKind) -> Result<f64> {
    let guard = g.storage().read().ok_or_else(|| no_host("clip"))?;
    if !g.is_contiguous() {
        let idx = g.layout().indices();
        let fold = |vals: &mut dyn Iterator<Item = f64>| {
            vals.fold(kind.identity(), |acc, v| {
                kind.combine(acc, kind.term(v.abs()))
            })
        };
        return Ok(match &*guard {
            CpuStorage::F16(v) => fold(&mut idx.map(|i| v[i].to_f64())),
            CpuStorage::BF16(v) => fold(&mut idx.map(|i| v[i].to_f64())),
            CpuStorage::F32(v) => fold(&mut idx.map(|i| f64::from(v[i]))),
            CpuStorage::F64(v) => fold(&mut idx.map(|i| v[i])),
            CpuStorage::I64(_) => return Err(Error::Optim("clip: an i64 grad".into())),
        });
    }
    let (o, n) = (g.layout().offset(), g.numel());
    Ok(match &*guard {
        CpuStorage::F16(v) => fold_dense(&v[o..o + n], kind, |c| fold_half::<f16>(c, kind)),
        CpuStorage::BF16(v) => fold_dense(&v[o..o + n], kind, |c| fold_half::<bf16>(c, kind)),
        CpuStorage::F32(v) => fold_dense(&v[o..o + n], kind, |c| fold_f32(c, kind)),
        CpuStorage::F64(v) => fold_dense(&v[o..o + n], kind, |c| fold_f64(c, kind)),
        CpuStorage::I64(_) => return Err(Error::Optim("clip: an i64 grad".into())),
    })
}

impl ElemOp {
    fn f64(self, x: f64) -> f64 {
        match self {
            ElemOp::Scale(c) => x * c,
            ElemOp::Clamp(_, _) if x.is_nan() => x,
            ElemOp::Clamp(lo, hi) => x.max(lo).min(hi),
        }
    }

    /// In f32: exact for a scale by an f32 value and a clamp to f32 bounds; a wider
    /// factor goes through f64 (then each product is rounded once).
    fn f32(self, x: f32) -> f32 {
        match self {
            ElemOp::Scale(c) if f64::from(c as f32) == c => x * c as f32,
            ElemOp::Scale(c) => (f64::from(x) * c) as f32,
            ElemOp::Clamp(_, _) if x.is_nan() => x,
            ElemOp::Clamp(lo, hi) => x.max(lo as f32).min(hi as f32),
        }
    }

    fn block_f32(self, c: &mut [f32]) {
        c.iter_mut().for_each(|x| *x = self.f32(*x));
    }

    fn block_half<H: Half>(self, c: &mut [H]) {
        let mut w = vec![0f32; c.len()];
        H::widen(c, &mut w);
        self.block_f32(&mut w);
        H::narrow(&w, c);
    }
}

/// Applies `op` to every element of a CPU grad in place (computed in f32 for f16, bf16
/// and f32 grads, in f64 for f64; clamp bounds are those of the grad's dtype).
pub(crate) fn apply(g: &Tensor, op: ElemOp) -> Result<()> {
    {
        let mut guard = g.storage().write().ok_or_else(|| no_host("clip"))?;
        if g.is_contiguous() {
            let (o, n) = (g.layout().offset(), g.numel());
            match &mut *guard {
                CpuStorage::F16(v) => v[o..o + n]
                    .par_chunks_mut(BLOCK)
                    .for_each(|c| op.block_half(c)),
                CpuStorage::BF16(v) => v[o..o + n]
                    .par_chunks_mut(BLOCK)
                    .for_each(|c| op.block_half(c)),
                CpuStorage::F32(v) => v[o..o + n]
                    .par_chunks_mut(BLOCK)
                    .for_each(|c| op.block_f32(c)),
                CpuStorage::F64(v) => v[o..o + n]
                    .par_chunks_mut(BLOCK)
                    .for_each(|c| c.iter_mut().for_each(|x| *x = op.f64(*x))),
                CpuStorage::I64(_) => return Err(Error::Optim("clip: an i64 grad".into())),
            }
        } else {
            let idx = g.layout().indices();
            match &mut *guard {
                CpuStorage::F16(v) => idx.for_each(|i| v[i] = f16::from_f32(op.f32(v[i].to_f32()))),
                CpuStorage::BF16(v) => {
                    idx.for_each(|i| v[i] = bf16::from_f32(op.f32(v[i].to_f32())))
                }
                CpuStorage::F32(v) => idx.for_each(|i| v[i] = op.f32(v[i])),
                CpuStorage::F64(v) => idx.for_each(|i| v[i] = op.f64(v[i])),
                CpuStorage::I64(_) => return Err(Error::Optim("clip: an i64 grad".into())),
            }
        }
    }
    g.storage().bump_version();
    Ok(())
}
