//! CPU update loops: the reference math of every optimizer, shared by the three
//! implementations (for-loop: one sequential pass per tensor; fused: one rayon pass per
//! tensor doing the whole update; foreach: one pass per elementary op).
//!
//! f16 tensors are loaded into f32, updated in f32 and stored once (the fused semantics
//! of the PyTorch reference cases); f64 tensors compute in f64.

use std::ops::{Add, Div, Mul, Neg, Sub};

use half::{bf16, f16};
use rayon::prelude::*;

use crate::backend::cpu::f16conv::Half;
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
    /// The elements of a host storage of this dtype.
    fn vec_ref(c: &CpuStorage) -> Option<&[Self]>;
    /// The slice itself when this type is its own compute type (f32, f64).
    fn as_compute(s: &mut [Self]) -> Option<&mut [Self::R]>;
    /// The slice itself, shared, when this type is its own compute type.
    fn as_compute_ref(s: &[Self]) -> Option<&[Self::R]>;
    /// Widens `src` into `dst` (equal lengths).
    fn load_slice(src: &[Self], dst: &mut [Self::R]);
    /// Rounds `src` into `dst` (equal lengths).
    fn store_slice(src: &[Self::R], dst: &mut [Self]);
    /// Widens one chunk, inlined into the update loop that calls it.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C (f16 converts with F16C instructions).
    unsafe fn load_chunk(src: &[Self; CHUNK], dst: &mut [Self::R; CHUNK]);
    /// Rounds one chunk, inlined into the update loop that calls it.
    ///
    /// # Safety
    /// As [`Elem::load_chunk`].
    unsafe fn store_chunk(src: &[Self::R; CHUNK], dst: &mut [Self; CHUNK]);
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
            fn vec_ref(c: &CpuStorage) -> Option<&[$t]> {
                match c {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn as_compute(s: &mut [$t]) -> Option<&mut [$t]> {
                Some(s)
            }
            fn as_compute_ref(s: &[$t]) -> Option<&[$t]> {
                Some(s)
            }
            fn load_slice(src: &[$t], dst: &mut [$t]) {
                dst.copy_from_slice(src);
            }
            fn store_slice(src: &[$t], dst: &mut [$t]) {
                dst.copy_from_slice(src);
            }
            #[inline(always)]
            unsafe fn load_chunk(src: &[$t; CHUNK], dst: &mut [$t; CHUNK]) {
                *dst = *src;
            }
            #[inline(always)]
            unsafe fn store_chunk(src: &[$t; CHUNK], dst: &mut [$t; CHUNK]) {
                *dst = *src;
            }
        }
    };
}
real!(f32, DType::F32, F32);
real!(f64, DType::F64, F64);

/// `Elem` for a 16-bit float computed in f32 (f16, bf16).
macro_rules! half_elem {
    ($t:ty, $d:expr, $variant:ident) => {
        impl Elem for $t {
            type R = f32;
            const DTYPE: DType = $d;
            fn load(self) -> f32 {
                Half::to_f32(self)
            }
            fn store(r: f32) -> $t {
                <$t as Half>::from_f32(r)
            }
            fn vec_mut(c: &mut CpuStorage) -> Option<&mut Vec<$t>> {
                match c {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn vec_ref(c: &CpuStorage) -> Option<&[$t]> {
                match c {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn as_compute(_: &mut [$t]) -> Option<&mut [f32]> {
                None
            }
            fn as_compute_ref(_: &[$t]) -> Option<&[f32]> {
                None
            }
            fn load_slice(src: &[$t], dst: &mut [f32]) {
                Half::widen(src, dst);
            }
            fn store_slice(src: &[f32], dst: &mut [$t]) {
                Half::narrow(src, dst);
            }
            #[inline(always)]
            unsafe fn load_chunk(src: &[$t; CHUNK], dst: &mut [f32; CHUNK]) {
                // SAFETY: the caller's CPU has AVX2 and F16C.
                unsafe { <$t as Half>::widen_inline(src, dst) }
            }
            #[inline(always)]
            unsafe fn store_chunk(src: &[f32; CHUNK], dst: &mut [$t; CHUNK]) {
                // SAFETY: as in `load_chunk`.
                unsafe { <$t as Half>::narrow_inline(src, dst) }
            }
        }
    };
}
half_elem!(f16, DType::F16, F16);
half_elem!(bf16, DType::BF16, BF16);

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

/// The slices one update touches. Missing buffers are empty slices. The state buffers
/// have their own element type `S`: the parameter's, or f32 when an f16 parameter keeps
/// f32 master weights.
pub struct Lanes<'a, E: Elem, S: Elem<R = E::R> = E> {
    /// The parameter.
    pub p: &'a mut [E],
    /// Its gradient: shared, or writable when the job unscales it in place.
    pub g: GradLane<'a, E>,
    /// Momentum buffer (SGD) or exp_avg (Adam).
    pub b0: &'a mut [S],
    /// exp_avg_sq (Adam).
    pub b1: &'a mut [S],
    /// max_exp_avg_sq (Adam with amsgrad).
    pub b2: &'a mut [S],
    /// f32 master weights of an f16 parameter (empty when none).
    pub master: &'a mut [E::R],
}

/// The gradient of an update: read only, or writable (required when the job unscales:
/// the quotient is written back into `.grad`).
pub enum GradLane<'a, E> {
    /// Read only.
    Read(&'a [E]),
    /// Read and written.
    Write(&'a mut [E]),
}

impl<'a, E> GradLane<'a, E> {
    fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            GradLane::Read(g) if g.is_empty() => (GradLane::Read(g), GradLane::Read(&[])),
            GradLane::Read(g) => {
                let (a, b) = g.split_at(mid);
                (GradLane::Read(a), GradLane::Read(b))
            }
            GradLane::Write(g) => {
                let (a, b) = split(g, mid);
                (GradLane::Write(a), GradLane::Write(b))
            }
        }
    }

    fn read(&self) -> &[E] {
        match self {
            GradLane::Read(g) => g,
            GradLane::Write(g) => g,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn into_read(self) -> &'a [E] {
        match self {
            GradLane::Read(g) => g,
            GradLane::Write(g) => g,
        }
    }
}

fn split<T>(s: &mut [T], mid: usize) -> (&mut [T], &mut [T]) {
    if s.is_empty() {
        (&mut [], &mut [])
    } else {
        s.split_at_mut(mid)
    }
}

impl<'a, E: Elem, S: Elem<R = E::R>> Lanes<'a, E, S> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at_mut(mid);
        let (g0, g1) = self.g.split_at(mid);
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

#[inline(always)]
fn max<R: Real>(a: R, b: R) -> R {
    // NaN propagates like torch.maximum.
    if a.partial_cmp(&a).is_none() || a > b {
        a
    } else {
        b
    }
}

/// One block of a tensor in the compute type: the parameter (or its master weights),
/// the gradient, and the state buffers (empty when unused).
struct Work<'a, R> {
    p: &'a mut [R],
    g: &'a [R],
    b0: &'a mut [R],
    b1: &'a mut [R],
    b2: &'a mut [R],
}

/// What one update loop walks, block by block: a [`Work`] is one block in the compute
/// type; [`Chunks`] widens its lanes [`CHUNK`] elements at a time inside the loop.
trait Blocks<R> {
    /// Calls `f` on every block in order.
    fn each(self, f: impl FnMut(Work<'_, R>));
}

impl<R> Blocks<R> for Work<'_, R> {
    #[inline(always)]
    fn each(self, mut f: impl FnMut(Work<'_, R>)) {
        f(self)
    }
}

/// Elements per chunk of [`Chunks`]: few enough that a chunk of every lane stays in L1,
/// enough that the compiler vectorizes the loop over a chunk rather than unrolling it
/// into scalar code (16 did that; 64 ran about 1.1x faster than 128 on the GPT-2 shapes).
const CHUNK: usize = 64;

/// Whole lanes (a multiple of [`CHUNK`] long) whose chunks are widened into stack arrays,
/// updated, and rounded back: one pass over memory, the conversions inlined into the
/// update's loop. Unscaling writes the quotient back into `.grad`.
///
/// Invariant: only built by [`update_chunks_avx2`], so the CPU has AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
struct Chunks<'a, E: Elem, S: Elem<R = E::R>> {
    lanes: Lanes<'a, E, S>,
    grad_scale: Option<E::R>,
}

/// Widens chunk `c` of a state lane into `y`; false when the lane is unused (empty).
///
/// # Safety
/// As [`Elem::load_chunk`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_state<S: Elem>(x: &[S], c: usize, y: &mut [S::R; CHUNK]) -> bool {
    match chunk(x, c) {
        // SAFETY: the caller's CPU has AVX2 and F16C.
        Some(x) => unsafe { S::load_chunk(x, y) },
        None => return false,
    }
    true
}

#[cfg(target_arch = "x86_64")]
impl<E: Elem, S: Elem<R = E::R>> Blocks<E::R> for Chunks<'_, E, S> {
    #[inline(always)]
    fn each(self, mut f: impl FnMut(Work<'_, E::R>)) {
        let Lanes {
            p,
            g,
            b0,
            b1,
            b2,
            master,
        } = self.lanes;
        let (gw, gr) = match (g, self.grad_scale) {
            (GradLane::Write(g), Some(_)) => (g, &[][..]),
            (g, _) => (&mut [][..], g.into_read()),
        };
        let zero = E::R::of(0.0);
        let [mut pb, mut gb, mut y0, mut y1, mut y2] = [[zero; CHUNK]; 5];
        // SAFETY (every conversion below): the CPU has AVX2 and F16C (the invariant).
        for c in 0..p.len() / CHUNK {
            let Some(pc) = chunk_mut(p, c) else { break };
            match chunk_mut(master, c) {
                Some(m) => pb = *m,
                None => unsafe { E::load_chunk(pc, &mut pb) },
            }
            match (chunk_mut(gw, c), chunk(gr, c), self.grad_scale) {
                (Some(g), _, Some(scale)) => unsafe {
                    E::load_chunk(g, &mut gb);
                    gb.iter_mut().for_each(|x| *x = *x / scale);
                    E::store_chunk(&gb, g);
                },
                (_, Some(g), _) => unsafe { E::load_chunk(g, &mut gb) },
                _ => break,
            }
            let u0 = unsafe { load_state(b0, c, &mut y0) };
            let u1 = unsafe { load_state(b1, c, &mut y1) };
            let u2 = unsafe { load_state(b2, c, &mut y2) };
            f(Work {
                p: &mut pb,
                g: &gb,
                b0: if u0 { &mut y0 } else { &mut [] },
                b1: if u1 { &mut y1 } else { &mut [] },
                b2: if u2 { &mut y2 } else { &mut [] },
            });
            if let Some(m) = chunk_mut(master, c) {
                *m = pb;
            }
            unsafe { E::store_chunk(&pb, pc) };
            for (x, y) in [(&mut *b0, &y0), (&mut *b1, &y1), (&mut *b2, &y2)] {
                if let Some(x) = chunk_mut(x, c) {
                    unsafe { S::store_chunk(y, x) }
                }
            }
        }
    }
}

/// Chunk `c` of a lane; `None` past its end (an unused lane is empty).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn chunk<T>(s: &[T], c: usize) -> Option<&[T; CHUNK]> {
    s.get(c * CHUNK..(c + 1) * CHUNK)?.try_into().ok()
}

/// Chunk `c` of a lane, writable; `None` past its end.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn chunk_mut<T>(s: &mut [T], c: usize) -> Option<&mut [T; CHUNK]> {
    s.get_mut(c * CHUNK..(c + 1) * CHUNK)?.try_into().ok()
}

/// The whole update of lanes of a 16-bit type (or with f32 master weights), a multiple
/// of [`CHUNK`] long, converting inside the vector loop.
///
/// # Safety
/// The CPU must have AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn update_chunks_avx2<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, lanes: Lanes<'_, E, S>) {
    update_block_any(
        &job.update,
        Chunks {
            lanes,
            grad_scale: job.grad_scale,
        },
    )
}

/// The whole update of one block: compiled for AVX2 as well and picked at run time (the
/// portable build's loops are 128 bits wide). Same results either way: Rust never fuses
/// a multiply and an add, so AVX2 only widens the vectors.
fn update_block<R: Real>(u: &Update<R>, w: Work<'_, R>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just checked).
        return unsafe { update_block_avx2(u, w) };
    }
    update_block_any(u, w)
}

/// [`update_block_any`] compiled with AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_block_avx2<R: Real>(u: &Update<R>, w: Work<'_, R>) {
    update_block_any(u, w)
}

#[inline(always)]
fn update_block_any<R: Real>(u: &Update<R>, w: impl Blocks<R>) {
    match u {
        Update::Sgd(s) => sgd_block(s, w),
        Update::Adam(s) => adam_block(s, w),
    }
}

/// SGD on one block. Every per-step choice is a const parameter, so each variant is a
/// branch-free loop the compiler vectorizes.
#[inline(always)]
fn sgd_block<R: Real>(s: &SgdScalars<R>, w: impl Blocks<R>) {
    #[inline(always)]
    fn wd<R: Real, const WD: bool>(s: &SgdScalars<R>, w: impl Blocks<R>) {
        match (s.has_momentum, s.first, s.nesterov) {
            (false, ..) => sgd_loop::<R, WD, false, false, false>(s, w),
            (true, false, false) => sgd_loop::<R, WD, true, false, false>(s, w),
            (true, false, true) => sgd_loop::<R, WD, true, false, true>(s, w),
            (true, true, false) => sgd_loop::<R, WD, true, true, false>(s, w),
            (true, true, true) => sgd_loop::<R, WD, true, true, true>(s, w),
        }
    }
    if s.weight_decay != R::of(0.0) {
        wd::<R, true>(s, w)
    } else {
        wd::<R, false>(s, w)
    }
}

/// One SGD variant: coupled weight decay (`WD`), a momentum buffer (`MOM`) that is new
/// this step (`FIRST`), Nesterov momentum (`NEST`).
#[inline(always)]
fn sgd_loop<R: Real, const WD: bool, const MOM: bool, const FIRST: bool, const NEST: bool>(
    s: &SgdScalars<R>,
    blocks: impl Blocks<R>,
) {
    let sign = R::of(if s.maximize { -1.0 } else { 1.0 });
    let (neg_lr, wd, mom, omd) = (s.neg_lr, s.weight_decay, s.momentum, s.one_minus_dampening);
    blocks.each(|w| {
        let p = w.p;
        let n = p.len();
        let g = &w.g[..n];
        let b = if MOM { &mut w.b0[..n] } else { &mut [][..] };
        for i in 0..n {
            let mut d = g[i] * sign;
            if WD {
                d = d + wd * p[i];
            }
            if MOM {
                let nb = if FIRST { d } else { b[i] * mom + omd * d };
                b[i] = nb;
                d = if NEST { d + mom * nb } else { nb };
            }
            p[i] = p[i] + neg_lr * d;
        }
    })
}

/// Adam/AdamW on one block, each variant a branch-free loop as for SGD.
#[inline(always)]
fn adam_block<R: Real>(s: &AdamScalars<R>, w: impl Blocks<R>) {
    #[inline(always)]
    fn wd<R: Real, const WD: bool, const DEC: bool>(s: &AdamScalars<R>, w: impl Blocks<R>) {
        match (s.amsgrad, s.lerp_w < R::of(0.5)) {
            (false, false) => adam_loop::<R, WD, DEC, false, false>(s, w),
            (false, true) => adam_loop::<R, WD, DEC, false, true>(s, w),
            (true, false) => adam_loop::<R, WD, DEC, true, false>(s, w),
            (true, true) => adam_loop::<R, WD, DEC, true, true>(s, w),
        }
    }
    match (s.weight_decay != R::of(0.0), s.decoupled) {
        (false, _) => wd::<R, false, false>(s, w),
        (true, false) => wd::<R, true, false>(s, w),
        (true, true) => wd::<R, true, true>(s, w),
    }
}

/// One Adam variant: weight decay (`WD`), decoupled (`DEC`, AdamW), the running maximum
/// of the second moment (`AMS`), and which side torch's lerp computes from (`LOW`:
/// `1 - beta1 < 0.5`).
#[inline(always)]
fn adam_loop<R: Real, const WD: bool, const DEC: bool, const AMS: bool, const LOW: bool>(
    s: &AdamScalars<R>,
    blocks: impl Blocks<R>,
) {
    let sign = R::of(if s.maximize { -1.0 } else { 1.0 });
    let (lw, omw) = (s.lerp_w, R::of(1.0) - s.lerp_w);
    blocks.each(|w| {
        let p = w.p;
        let n = p.len();
        let (g, m, v) = (&w.g[..n], &mut w.b0[..n], &mut w.b1[..n]);
        let x = if AMS { &mut w.b2[..n] } else { &mut [][..] };
        for i in 0..n {
            let mut pv = p[i];
            let mut d = g[i] * sign;
            if WD {
                if DEC {
                    pv = pv * s.decay;
                } else {
                    d = d + s.weight_decay * pv;
                }
            }
            let mi = m[i];
            let nm = if LOW {
                mi + lw * (d - mi)
            } else {
                d - (d - mi) * omw
            };
            m[i] = nm;
            let nv = v[i] * s.beta2 + s.one_minus_beta2 * d * d;
            v[i] = nv;
            let second = if AMS {
                let nx = max(x[i], nv);
                x[i] = nx;
                nx
            } else {
                nv
            };
            let denom = second.sqrt() / s.bc2_sqrt + s.eps;
            p[i] = pv + s.neg_step_size * (nm / denom);
        }
    })
}

/// Elements per block of the sequential pass: f16 lanes are widened into f32 buffers of
/// this size, updated, and rounded back.
const BLOCK: usize = 512;

/// One lane's block in the compute type: the lane itself when its type is the compute
/// type, else a widened copy in `buf` that [`Block::finish`] rounds back.
struct Block<'a, T: Elem> {
    lane: &'a mut [T],
    buf: &'a mut [T::R],
    widened: bool,
}

impl<'a, T: Elem> Block<'a, T> {
    /// Elements `range` of `lane` (an empty lane stays empty).
    fn new(lane: &'a mut [T], range: std::ops::Range<usize>, buf: &'a mut [T::R]) -> Self {
        let lane = if lane.is_empty() {
            lane
        } else {
            &mut lane[range]
        };
        let widened = T::as_compute(&mut []).is_none();
        let buf = &mut buf[..if widened { lane.len() } else { 0 }];
        if widened {
            T::load_slice(lane, buf);
        }
        Block { lane, buf, widened }
    }

    fn get(&mut self) -> &mut [T::R] {
        if self.widened {
            self.buf
        } else {
            T::as_compute(self.lane).unwrap_or_default()
        }
    }

    /// Rounds a widened block back into its lane.
    fn finish(self) {
        if self.widened {
            T::store_slice(self.buf, self.lane);
        }
    }
}

/// The for-loop form: one sequential pass over the tensor, block by block.
///
/// A tensor with a 16-bit lane is converted inside the vector loop, [`CHUNK`] elements
/// at a time, where the CPU has AVX2 and F16C (its last partial chunk, and every
/// other CPU, take the blocked pass of [`run_blocks`]; the results are the same). Adam
/// on f32 goes through the chunks too: copying a chunk of each lane before its
/// divisions and square roots keeps more loads in flight (GPT-2 shapes 1.1x faster on
/// an AVX-512 Xeon); SGD does not gain from it and runs in place.
pub fn run_seq<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, l: Lanes<'_, E, S>) {
    #[cfg(target_arch = "x86_64")]
    let chunked = widens::<E, S>() || matches!(job.update, Update::Adam(_));
    if chunked && crate::backend::cpu::f16conv::avx2_f16c() {
        let whole = l.len() / CHUNK * CHUNK;
        let (head, tail) = l.split_at(whole);
        // SAFETY: the CPU has AVX2 and F16C (just checked).
        unsafe { update_chunks_avx2(job, head) };
        return run_blocks(job, tail);
    }
    run_blocks(job, l)
}

/// Whether a lane of these types is widened into the compute type.
fn widens<E: Elem, S: Elem<R = E::R>>() -> bool {
    E::as_compute(&mut []).is_none() || S::as_compute(&mut []).is_none()
}

/// The blocked pass: lanes of the compute type updated in place; 16-bit lanes widened
/// [`BLOCK`] elements at a time into scratch buffers, updated and rounded back.
fn run_blocks<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, mut l: Lanes<'_, E, S>) {
    let widened = widens::<E, S>();
    let n = l.len();
    // Scratch for widened blocks, only when a lane is f16.
    let blk = if widened { n.min(BLOCK) } else { 0 };
    let mut scratch = vec![E::R::of(0.0); 5 * blk];
    let mut parts = scratch.chunks_mut(blk.max(1));
    let mut part = || parts.next().unwrap_or_default();
    let (bp, bg, b0, b1, b2) = (part(), part(), part(), part(), part());
    let has_master = !l.master.is_empty();
    for start in (0..n).step_by(BLOCK) {
        let r = start..(start + BLOCK).min(n);
        let mut g = GradBlock::new(&mut l.g, r.clone(), &mut *bg, job.grad_scale);
        let (mut x0, mut x1, mut x2) = (
            Block::new(&mut *l.b0, r.clone(), b0),
            Block::new(&mut *l.b1, r.clone(), b1),
            Block::new(&mut *l.b2, r.clone(), b2),
        );
        // The parameter in the compute type: its master weights, itself, or widened.
        if has_master {
            let p = &mut l.master[r.clone()];
            update_block(
                &job.update,
                Work {
                    p: &mut *p,
                    g: g.get(),
                    b0: x0.get(),
                    b1: x1.get(),
                    b2: x2.get(),
                },
            );
            E::store_slice(p, &mut l.p[r]);
        } else {
            let mut p = Block::new(&mut *l.p, r, bp);
            update_block(
                &job.update,
                Work {
                    p: p.get(),
                    g: g.get(),
                    b0: x0.get(),
                    b1: x1.get(),
                    b2: x2.get(),
                },
            );
            p.finish();
        }
        g.finish();
        [x0, x1, x2].into_iter().for_each(Block::finish);
    }
}

/// One block of the gradient in the compute type: the lane itself when it is read only
/// and of the compute type, else a widened copy; unscaled in place when the job scales,
/// and then rounded back into the (writable) lane by [`GradBlock::finish`].
enum GradBlock<'a, E: Elem> {
    /// Nothing to write back.
    Read(&'a [E::R]),
    /// Unscaled: written back into the lane.
    Unscaled(Block<'a, E>),
}

impl<'a, E: Elem> GradBlock<'a, E> {
    fn new(
        lane: &'a mut GradLane<'_, E>,
        range: std::ops::Range<usize>,
        buf: &'a mut [E::R],
        scale: Option<E::R>,
    ) -> Self {
        match (lane, scale) {
            (GradLane::Write(g), Some(scale)) => {
                let mut b = Block::new(g, range, buf);
                b.get().iter_mut().for_each(|x| *x = *x / scale);
                GradBlock::Unscaled(b)
            }
            (lane, _) => {
                let g = lane.read();
                let g = if g.is_empty() { g } else { &g[range] };
                match E::as_compute_ref(g) {
                    Some(c) => GradBlock::Read(c),
                    None => {
                        let buf = &mut buf[..g.len()];
                        E::load_slice(g, buf);
                        GradBlock::Read(buf)
                    }
                }
            }
        }
    }

    fn get(&mut self) -> &[E::R] {
        match self {
            GradBlock::Read(g) => g,
            GradBlock::Unscaled(b) => b.get(),
        }
    }

    fn finish(self) {
        if let GradBlock::Unscaled(b) = self {
            b.finish();
        }
    }
}

/// Runs `f` over chunks of `FUSED_CHUNK` elements of the lanes on the rayon pool; a
/// tensor of one chunk runs on this thread without a parallel iterator (whose set-up cost
/// about 3 us per tensor: f16 SGD over 1000 small tensors 6.5 -> 3.5 ms).
fn par_chunks<E: Elem, S: Elem<R = E::R>>(
    l: Lanes<'_, E, S>,
    f: impl Fn(Lanes<'_, E, S>) + Sync + Send,
) {
    if l.len() <= FUSED_CHUNK {
        return f(l);
    }
    let mut parts = Vec::new();
    let mut rest = l;
    while rest.len() > FUSED_CHUNK {
        let (a, b) = rest.split_at(FUSED_CHUNK);
        parts.push(a);
        rest = b;
    }
    parts.push(rest);
    parts.into_par_iter().for_each(f);
}

/// The fused form: one rayon-parallel pass doing the whole update.
pub fn run_fused<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, l: Lanes<'_, E, S>) {
    par_chunks(l, |l| run_seq(job, l));
}

/// The foreach form: each elementary op is its own pass (as torch's `_foreach_*` ops),
/// over chunks of the tensor in parallel.
pub fn run_foreach<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, l: Lanes<'_, E, S>) {
    par_chunks(l, |l| foreach_passes(job, l));
}

/// The elementary passes of the foreach form over one chunk, through compute-type
/// temporaries (so f16 follows the fused semantics).
fn foreach_passes<E: Elem, S: Elem<R = E::R>>(job: &Job<E::R>, l: Lanes<'_, E, S>) {
    type V<R> = Vec<R>;
    fn load<T: Elem>(s: &[T]) -> V<T::R> {
        let mut v = vec![T::R::of(0.0); s.len()];
        T::load_slice(s, &mut v);
        v
    }
    fn store<T: Elem>(d: &mut [T], s: &[T::R]) {
        T::store_slice(s, d);
    }
    let mut p = if l.master.is_empty() {
        load(l.p)
    } else {
        l.master.to_vec()
    };
    let mut g = load(l.g.read());
    if let Some(scale) = job.grad_scale {
        g.iter_mut().for_each(|x| *x = *x / scale);
        if let GradLane::Write(lane) = l.g {
            store(lane, &g);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `[lo, hi)`.
    fn vals(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    /// Every lane of one tensor.
    #[derive(Clone)]
    struct State<E, S> {
        p: Vec<E>,
        g: Vec<E>,
        b0: Vec<S>,
        b1: Vec<S>,
        b2: Vec<S>,
        master: Vec<f32>,
    }

    impl<E: Elem<R = f32>, S: Elem<R = f32>> State<E, S> {
        fn new(n: usize, buffers: usize, master: bool) -> Self {
            let lane = |k: usize, seed, lo, hi| -> Vec<S> {
                if k < buffers {
                    vals(n, seed, lo, hi).into_iter().map(S::store).collect()
                } else {
                    Vec::new()
                }
            };
            let p = vals(n, 1, -1.0, 1.0);
            State {
                p: p.iter().map(|&v| E::store(v)).collect(),
                g: vals(n, 2, -1.0, 1.0).into_iter().map(E::store).collect(),
                b0: lane(0, 3, -0.5, 0.5),
                b1: lane(1, 4, 0.0, 1.0),
                b2: lane(2, 5, 0.0, 1.0),
                master: if master { p } else { Vec::new() },
            }
        }

        fn lanes(&mut self, write_grad: bool) -> Lanes<'_, E, S> {
            Lanes {
                p: &mut self.p,
                g: if write_grad {
                    GradLane::Write(&mut self.g)
                } else {
                    GradLane::Read(&self.g)
                },
                b0: &mut self.b0,
                b1: &mut self.b1,
                b2: &mut self.b2,
                master: &mut self.master,
            }
        }

        /// The bits of every lane, widened.
        fn bits(&self) -> Vec<Vec<u32>> {
            fn b<T: Elem<R = f32>>(v: &[T]) -> Vec<u32> {
                v.iter().map(|x| x.load().to_bits()).collect()
            }
            vec![
                b(&self.p),
                b(&self.g),
                b(&self.b0),
                b(&self.b1),
                b(&self.b2),
                b(&self.master),
            ]
        }
    }

    fn sgd(momentum: bool, first: bool, nesterov: bool, wd: f32, maximize: bool) -> Update<f32> {
        Update::Sgd(SgdScalars {
            neg_lr: -0.1,
            momentum: 0.9,
            one_minus_dampening: 0.8,
            weight_decay: wd,
            nesterov,
            maximize,
            has_momentum: momentum,
            first,
        })
    }

    fn adam(wd: f32, decoupled: bool, amsgrad: bool, lerp_w: f32) -> Update<f32> {
        Update::Adam(AdamScalars {
            weight_decay: wd,
            decay: 1.0 - 0.001 * wd,
            lerp_w,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            neg_step_size: -0.05,
            bc2_sqrt: 0.0447,
            amsgrad,
            maximize: false,
            decoupled,
        })
    }

    /// The updates of the tests: every branch of the SGD and Adam loops.
    fn updates() -> Vec<(Update<f32>, usize)> {
        vec![
            (sgd(false, false, false, 0.0, false), 0),
            (sgd(true, true, false, 0.1, false), 1),
            (sgd(true, false, false, 0.0, true), 1),
            (sgd(true, false, true, 0.1, false), 1),
            (adam(0.0, false, false, 0.1), 2),
            (adam(0.1, false, true, 0.1), 3),
            (adam(0.1, true, false, 0.7), 2),
        ]
    }

    /// The converting pass of `run_seq` (chunks where the CPU has AVX2 and F16C) gives
    /// the blocked pass's bits on every lane, for lengths with and without a partial
    /// chunk, with f32 master weights, and with unscaling written back into `.grad`.
    fn chunks_match_blocks<E: Elem<R = f32>, S: Elem<R = f32>>(master: bool) {
        for n in [10, CHUNK, 5 * CHUNK + 37, FUSED_CHUNK + 3] {
            for (update, buffers) in updates() {
                for grad_scale in [None, Some(4.0f32)] {
                    let job = Job { update, grad_scale };
                    let mut got = State::<E, S>::new(n, buffers, master);
                    let mut want = got.clone();
                    let write = grad_scale.is_some();
                    run_seq(&job, got.lanes(write));
                    run_blocks(&job, want.lanes(write));
                    assert!(
                        got.bits() == want.bits(),
                        "{} n={n} {update:?} scale={grad_scale:?} master={master}",
                        std::any::type_name::<E>()
                    );
                    let before = State::<E, S>::new(n, buffers, master).bits();
                    assert_ne!(got.bits()[0], before[0], "the parameter was updated");
                }
            }
        }
    }

    #[test]
    fn converting_f16_updates_equal_the_blocked_pass() {
        chunks_match_blocks::<f16, f16>(false);
        chunks_match_blocks::<f16, f32>(true);
    }

    #[test]
    fn chunked_f32_updates_equal_the_in_place_pass() {
        chunks_match_blocks::<f32, f32>(false);
    }

    #[test]
    fn converting_bf16_updates_equal_the_blocked_pass() {
        chunks_match_blocks::<bf16, bf16>(false);
        chunks_match_blocks::<bf16, f32>(true);
    }
}
