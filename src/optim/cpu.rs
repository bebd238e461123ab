//! CPU update loops: the reference math of every optimizer, shared by the three
//! implementations (for-loop: one sequential pass per tensor; fused: one rayon pass per
//! tensor doing the whole update; foreach: one pass per elementary op).
//!
//! f16 tensors are loaded into f32, updated in f32 and stored once (the fused semantics
//! of the PyTorch reference cases); f64 tensors compute in f64.

use std::ops::{Add, Div, Mul, Neg, Sub};

use half::f16;
use rayon::prelude::*;

use crate::tensor::{CpuStorage, DType};

/// Elements per rayon task of the fused CPU pass.
const FUSED_CHUNK: usize = 16 * 1024;

/// A compute type: f32 (for f16 and f32 tensors) or f64.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Elem<R = Self>
    + 'static
{
    /// Converts (rounds) an f64 scalar.
    fn of(v: f64) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn finite(self) -> bool;
}

/// A storage element type with its compute type.
pub trait Elem: Copy + Send + Sync + 'static {
    /// The compute type.
    type R: Real;
    /// The dtype of this element.
    const DTYPE: DType;
    /// Widens to the compute type.
    fn load(self) -> Self::R;
    /// Rounds a compute value to the element type.
    fn store(r: Self::R) -> Self;
    /// The vector of a host storage of this dtype.
    fn vec_mut(c: &mut CpuStorage) -> Option<&mut Vec<Self>>;
}

macro_rules! real {
    ($t:ty, $d:expr, $variant:ident) => {
        impl Real for $t {
            fn of(v: f64) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn finite(self) -> bool {
                self.is_finite()
            }
        }
        impl Elem for $t {
            type R = $t;
            const DTYPE: DType = $d;
            fn load(self) -> $t {
                self
            }
            fn store(r: $t) -> $t {
                r
            }
            fn vec_mut(c: &mut CpuStorage) -> Option<&mut Vec<$t>> {
                match c {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
real!(f32, DType::F32, F32);
real!(f64, DType::F64, F64);

impl Elem for f16 {
    type R = f32;
    const DTYPE: DType = DType::F16;
    fn load(self) -> f32 {
        self.to_f32()
    }
    fn store(r: f32) -> f16 {
        f16::from_f32(r)
    }
    fn vec_mut(c: &mut CpuStorage) -> Option<&mut Vec<f16>> {
        match c {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }
}

/// SGD scalars of one tensor, in the compute type.
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars<R> {
    /// `-lr`.
    pub neg_lr: R,
    /// Momentum factor (0: no buffer).
    pub momentum: R,
    /// `1 - dampening`.
    pub one_minus_dampening: R,
    /// Weight decay (coupled, added to the gradient).
    pub weight_decay: R,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Whether a momentum buffer is used.
    pub has_momentum: bool,
    /// The momentum buffer is new: it takes the gradient as is.
    pub first: bool,
}

/// Adam/AdamW scalars of one tensor, in the compute type (bias corrections computed in
/// f64 on the host).
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars<R> {
    /// Weight decay.
    pub weight_decay: R,
    /// AdamW: `1 - lr * weight_decay`, the decoupled decay factor.
    pub decay: R,
    /// `1 - beta1`, the weight of the first-moment lerp.
    pub lerp_w: R,
    /// `beta2`.
    pub beta2: R,
    /// `1 - beta2`.
    pub one_minus_beta2: R,
    /// `eps`.
    pub eps: R,
    /// `-lr / (1 - beta1^t)`.
    pub neg_step_size: R,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: R,
    /// Keep the running maximum of the second moment.
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
}

/// The update of one tensor.
#[derive(Clone, Copy, Debug)]
pub enum Update<R> {
    /// SGD.
    Sgd(SgdScalars<R>),
    /// Adam or AdamW.
    Adam(AdamScalars<R>),
}

/// One update plus the gradient unscaling of mixed precision.
#[derive(Clone, Copy, Debug)]
pub struct Job<R> {
    /// The update rule and its scalars.
    pub update: Update<R>,
    /// Divide the gradient by this and write the quotient back into `.grad`.
    pub grad_scale: Option<R>,
}

/// The slices one update touches. Missing buffers are empty slices.
pub struct Lanes<'a, E: Elem> {
    /// The parameter.
    pub p: &'a mut [E],
    /// Its gradient (written only when unscaling).
    pub g: &'a mut [E],
    /// Momentum buffer (SGD) or exp_avg (Adam).
    pub b0: &'a mut [E],
    /// exp_avg_sq (Adam).
    pub b1: &'a mut [E],
    /// max_exp_avg_sq (Adam with amsgrad).
    pub b2: &'a mut [E],
    /// f32 master weights of an f16 parameter (empty when none).
    pub master: &'a mut [E::R],
}

fn split<T>(s: &mut [T], mid: usize) -> (&mut [T], &mut [T]) {
    if s.is_empty() {
        (&mut [], &mut [])
    } else {
        s.split_at_mut(mid)
    }
}

impl<'a, E: Elem> Lanes<'a, E> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, mid: usize) -> (Lanes<'a, E>, Lanes<'a, E>) {
        let (p0, p1) = self.p.split_at_mut(mid);
        let (g0, g1) = split(self.g, mid);
        let (a0, a1) = split(self.b0, mid);
        let (c0, c1) = split(self.b1, mid);
        let (d0, d1) = split(self.b2, mid);
        let (m0, m1) = split(self.master, mid);
        (
            Lanes {
                p: p0,
                g: g0,
                b0: a0,
                b1: c0,
                b2: d0,
                master: m0,
            },
            Lanes {
                p: p1,
                g: g1,
                b0: a1,
                b1: c1,
                b2: d1,
                master: m1,
            },
        )
    }
}

/// torch's lerp: `a + w * (b - a)` for `w < 0.5`, else `b - (b - a) * (1 - w)`.
#[inline]
pub fn lerp<R: Real>(a: R, b: R, w: R) -> R {
    if w < R::of(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (R::of(1.0) - w)
    }
}

#[inline]
fn max<R: Real>(a: R, b: R) -> R {
    // NaN propagates like torch.maximum.
    if a.partial_cmp(&a).is_none() || a > b {
        a
    } else {
        b
    }
}

/// One element of SGD: returns the new parameter.
#[inline]
pub fn sgd_elem<R: Real>(s: &SgdScalars<R>, p: R, g: R, buf: Option<&mut R>) -> R {
    let mut g = if s.maximize { -g } else { g };
    if s.weight_decay != R::of(0.0) {
        g = g + s.weight_decay * p;
    }
    if let (true, Some(b)) = (s.has_momentum, buf) {
        *b = if s.first {
            g
        } else {
            *b * s.momentum + s.one_minus_dampening * g
        };
        g = if s.nesterov { g + s.momentum * *b } else { *b };
    }
    p + s.neg_lr * g
}

/// One element of Adam/AdamW: updates the moments and returns the new parameter.
#[inline]
pub fn adam_elem<R: Real>(
    s: &AdamScalars<R>,
    p: R,
    g: R,
    m: &mut R,
    v: &mut R,
    vmax: Option<&mut R>,
) -> R {
    let mut p = p;
    let mut g = if s.maximize { -g } else { g };
    if s.weight_decay != R::of(0.0) {
        if s.decoupled {
            p = p * s.decay;
        } else {
            g = g + s.weight_decay * p;
        }
    }
    *m = lerp(*m, g, s.lerp_w);
    *v = *v * s.beta2 + s.one_minus_beta2 * g * g;
    let second = match (s.amsgrad, vmax) {
        (true, Some(x)) => {
            *x = max(*x, *v);
            *x
        }
        _ => *v,
    };
    let denom = second.sqrt() / s.bc2_sqrt + s.eps;
    p + s.neg_step_size * (*m / denom)
}

/// Applies `job` to element `i` of `l`.
#[inline]
fn apply_elem<E: Elem>(job: &Job<E::R>, l: &mut Lanes<'_, E>, i: usize) {
    let has_master = !l.master.is_empty();
    let p = if has_master {
        l.master[i]
    } else {
        l.p[i].load()
    };
    let mut g = l.g[i].load();
    if let Some(scale) = job.grad_scale {
        g = g / scale;
        l.g[i] = E::store(g);
    }
    let np = match &job.update {
        Update::Sgd(s) => {
            if s.has_momentum {
                let mut b = l.b0[i].load();
                let r = sgd_elem(s, p, g, Some(&mut b));
                l.b0[i] = E::store(b);
                r
            } else {
                sgd_elem(s, p, g, None)
            }
        }
        Update::Adam(s) => {
            let (mut m, mut v) = (l.b0[i].load(), l.b1[i].load());
            let r = if s.amsgrad {
                let mut x = l.b2[i].load();
                let r = adam_elem(s, p, g, &mut m, &mut v, Some(&mut x));
                l.b2[i] = E::store(x);
                r
            } else {
                adam_elem(s, p, g, &mut m, &mut v, None)
            };
            l.b0[i] = E::store(m);
            l.b1[i] = E::store(v);
            r
        }
    };
    if has_master {
        l.master[i] = np;
    }
    l.p[i] = E::store(np);
}

/// The for-loop form: one sequential pass over the tensor.
pub fn run_seq<E: Elem>(job: &Job<E::R>, mut l: Lanes<'_, E>) {
    for i in 0..l.len() {
        apply_elem(job, &mut l, i);
    }
}

/// The fused form: one rayon-parallel pass doing the whole update.
pub fn run_fused<E: Elem>(job: &Job<E::R>, l: Lanes<'_, E>) {
    let mut parts = Vec::new();
    let mut rest = l;
    while rest.len() > FUSED_CHUNK {
        let (a, b) = rest.split_at(FUSED_CHUNK);
        parts.push(a);
        rest = b;
    }
    parts.push(rest);
    parts.into_par_iter().for_each(|l| run_seq(job, l));
}

/// The foreach form: each elementary op is its own pass over the tensor, through
/// compute-type temporaries (so f16 follows the fused semantics).
pub fn run_foreach<E: Elem>(job: &Job<E::R>, l: Lanes<'_, E>) {
    type V<R> = Vec<R>;
    fn load<E: Elem>(s: &[E]) -> V<E::R> {
        s.iter().map(|x| x.load()).collect()
    }
    fn store<E: Elem>(d: &mut [E], s: &[E::R]) {
        d.iter_mut().zip(s).for_each(|(d, &s)| *d = E::store(s));
    }
    let mut p = if l.master.is_empty() {
        load(l.p)
    } else {
        l.master.to_vec()
    };
    let mut g = load(l.g);
    if let Some(scale) = job.grad_scale {
        g.iter_mut().for_each(|x| *x = *x / scale);
        store(l.g, &g);
    }
    let zero = E::R::of(0.0);
    match &job.update {
        Update::Sgd(s) => {
            if s.maximize {
                g.iter_mut().for_each(|x| *x = -*x);
            }
            if s.weight_decay != zero {
                g.iter_mut()
                    .zip(&p)
                    .for_each(|(x, &p)| *x = *x + s.weight_decay * p);
            }
            if s.has_momentum {
                let mut b = load(l.b0);
                if s.first {
                    b.copy_from_slice(&g);
                } else {
                    b.iter_mut()
                        .zip(&g)
                        .for_each(|(b, &g)| *b = *b * s.momentum + s.one_minus_dampening * g);
                }
                if s.nesterov {
                    g.iter_mut()
                        .zip(&b)
                        .for_each(|(g, &b)| *g = *g + s.momentum * b);
                } else {
                    g.copy_from_slice(&b);
                }
                store(l.b0, &b);
            }
            p.iter_mut()
                .zip(&g)
                .for_each(|(p, &g)| *p = *p + s.neg_lr * g);
        }
        Update::Adam(s) => {
            if s.maximize {
                g.iter_mut().for_each(|x| *x = -*x);
            }
            if s.weight_decay != zero {
                if s.decoupled {
                    p.iter_mut().for_each(|p| *p = *p * s.decay);
                } else {
                    g.iter_mut()
                        .zip(&p)
                        .for_each(|(x, &p)| *x = *x + s.weight_decay * p);
                }
            }
            let mut m = load(l.b0);
            m.iter_mut()
                .zip(&g)
                .for_each(|(m, &g)| *m = lerp(*m, g, s.lerp_w));
            let mut v = load(l.b1);
            v.iter_mut().for_each(|v| *v = *v * s.beta2);
            v.iter_mut()
                .zip(&g)
                .for_each(|(v, &g)| *v = *v + s.one_minus_beta2 * g * g);
            let mut den = if s.amsgrad {
                let mut x = load(l.b2);
                x.iter_mut().zip(&v).for_each(|(x, &v)| *x = max(*x, v));
                store(l.b2, &x);
                x
            } else {
                v.clone()
            };
            den.iter_mut()
                .for_each(|d| *d = d.sqrt() / s.bc2_sqrt + s.eps);
            p.iter_mut()
                .zip(m.iter().zip(&den))
                .for_each(|(p, (&m, &d))| *p = *p + s.neg_step_size * (m / d));
            store(l.b0, &m);
            store(l.b1, &v);
        }
    }
    if !l.master.is_empty() {
        l.master.copy_from_slice(&p);
    }
    store(l.p, &p);
}

/// Whether any element of `g` is infinite or NaN.
pub fn any_non_finite<E: Elem>(g: &[E]) -> bool {
    g.par_iter().any(|x| !x.load().finite())
}
