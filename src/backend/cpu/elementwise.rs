//! Elementwise ops: unary functions, broadcast binary arithmetic, affine.

use crate::backend::{BinaryOp, Elementwise, UnaryOp};
use crate::base::{broadcast_shapes, RawTensor, Result};

use super::elem::{output, read, read2, with_float, write_from, Acc, Float};
use super::strided::{map1, zip1, zip2};
use super::CpuBackend;

/// `sqrt(2 / pi)`
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// `1 / sqrt(2)`
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2 pi)`
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// The cubic coefficient of the tanh GELU approximation.
const GELU_KAPPA: f64 = 0.044_715;

/// Exact GELU: `x * Phi(x)`.
#[inline(always)]
fn gelu<A: Acc>(x: A) -> A {
    let half = A::of_f64(0.5);
    half * x * (A::ONE + (x * A::of_f64(FRAC_1_SQRT_2)).erf())
}

/// Derivative of exact GELU: `Phi(x) + x * phi(x)`.
#[inline(always)]
fn gelu_grad<A: Acc>(x: A) -> A {
    let half = A::of_f64(0.5);
    let cdf = half * (A::ONE + (x * A::of_f64(FRAC_1_SQRT_2)).erf());
    let pdf = (-half * x * x).exp() * A::of_f64(FRAC_1_SQRT_2PI);
    cdf + x * pdf
}

/// The tanh GELU's inner tangent, `tanh(sqrt(2/pi) * (x + 0.044715 x^3))`.
#[inline(always)]
fn gelu_tanh_inner<A: Acc>(x: A) -> A {
    (A::of_f64(SQRT_2_OVER_PI) * (x + A::of_f64(GELU_KAPPA) * x * x * x)).tanh()
}

/// Tanh-approximated GELU, as PyTorch's `approximate="tanh"`.
#[inline(always)]
fn gelu_tanh<A: Acc>(x: A) -> A {
    A::of_f64(0.5) * x * (A::ONE + gelu_tanh_inner(x))
}

/// Derivative of the tanh-approximated GELU (PyTorch's formula).
#[inline(always)]
fn gelu_tanh_grad<A: Acc>(x: A) -> A {
    let half = A::of_f64(0.5);
    let t = gelu_tanh_inner(x);
    let d_inner = A::of_f64(SQRT_2_OVER_PI) * (A::ONE + A::of_f64(3.0 * GELU_KAPPA) * x * x);
    half * (A::ONE + t) + half * x * (A::ONE - t * t) * d_inner
}

/// Elementwise `f` over a float tensor, computed in `T::A`.
fn map_float<T: Float>(x: &RawTensor, f: impl Fn(T::A) -> T::A + Sync + Send) -> Result<RawTensor> {
    let v = read::<T, _>("unary", x, |s, l| map1(s, l, |v: T| T::store(f(v.load()))))?;
    Ok(output(v, x.shape()))
}

fn unary_t<T: Float>(op: UnaryOp, x: &RawTensor) -> Result<RawTensor> {
    let zero = <T::A as Acc>::ZERO;
    let one = <T::A as Acc>::ONE;
    match op {
        UnaryOp::Neg => map_float::<T>(x, |v| -v),
        UnaryOp::Exp => map_float::<T>(x, |v| v.exp()),
        UnaryOp::Log => map_float::<T>(x, |v| v.ln()),
        UnaryOp::Sqrt => map_float::<T>(x, |v| v.sqrt()),
        UnaryOp::Tanh => map_float::<T>(x, |v| v.tanh()),
        UnaryOp::Sigmoid => map_float::<T>(x, |v| one / (one + (-v).exp())),
        // NaN passes through, as in PyTorch.
        UnaryOp::Relu => map_float::<T>(x, |v| if v < zero { zero } else { v }),
        UnaryOp::Gelu => map_float::<T>(x, gelu),
        UnaryOp::GeluTanh => map_float::<T>(x, gelu_tanh),
        UnaryOp::Step => map_float::<T>(x, |v| if v > zero { one } else { zero }),
        UnaryOp::GeluGrad => map_float::<T>(x, gelu_grad),
        UnaryOp::GeluTanhGrad => map_float::<T>(x, gelu_tanh_grad),
        UnaryOp::Recip => map_float::<T>(x, |v| one / v),
        UnaryOp::Square => map_float::<T>(x, |v| v * v),
        UnaryOp::Abs => map_float::<T>(x, |v| v.abs()),
    }
}

fn zip_float<T: Float>(
    a: &RawTensor,
    b: &RawTensor,
    shape: &[usize],
    f: impl Fn(T::A, T::A) -> T::A + Sync + Send,
) -> Result<RawTensor> {
    let la = a.layout().broadcast_to(shape)?;
    let lb = b.layout().broadcast_to(shape)?;
    let n: usize = shape.iter().product();
    let v = read2::<T, _>("binary", a, b, |sa, _, sb, _| {
        let mut out = vec![T::default(); n];
        zip2(&mut out, sa, &la, sb, &lb, |o, x: T, y: T| {
            *o = T::store(f(x.load(), y.load()))
        });
        out
    })?;
    Ok(output(v, shape))
}

fn binary_t<T: Float>(
    op: BinaryOp,
    a: &RawTensor,
    b: &RawTensor,
    s: &[usize],
) -> Result<RawTensor> {
    match op {
        BinaryOp::Add => zip_float::<T>(a, b, s, |x, y| x + y),
        BinaryOp::Sub => zip_float::<T>(a, b, s, |x, y| x - y),
        BinaryOp::Mul => zip_float::<T>(a, b, s, |x, y| x * y),
        BinaryOp::Div => zip_float::<T>(a, b, s, |x, y| x / y),
        BinaryOp::ThresholdBackward => {
            zip_float::<T>(a, b, s, |x, y| if y <= T::A::ZERO { T::A::ZERO } else { x })
        }
    }
}

fn add_t<T: Float>(dst: &RawTensor, src: &RawTensor, alpha: f64) -> Result<()> {
    let alpha = T::A::of_f64(alpha);
    write_from::<T>("add_", dst, src, |d, s, l| {
        zip1(d, s, l, |o: &mut T, x: T| {
            *o = T::store(o.load() + alpha * x.load())
        })
    })
}

impl Elementwise for CpuBackend {
    fn unary(&self, op: UnaryOp, x: &RawTensor) -> Result<RawTensor> {
        with_float!(x.dtype(), "unary", |T| unary_t::<T>(op, x))
    }

    fn binary(&self, op: BinaryOp, a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
        let shape = broadcast_shapes("binary", a.shape(), b.shape())?;
        with_float!(a.dtype(), "binary", |T| binary_t::<T>(op, a, b, &shape))
    }

    fn affine(&self, x: &RawTensor, mul: f64, add: f64) -> Result<RawTensor> {
        with_float!(x.dtype(), "affine", |T| {
            let (m, c) = (<T as Float>::A::of_f64(mul), <T as Float>::A::of_f64(add));
            map_float::<T>(x, |v| v * m + c)
        })
    }

    fn add_(&self, dst: &RawTensor, src: &RawTensor, alpha: f64) -> Result<()> {
        with_float!(dst.dtype(), "add_", |T| add_t::<T>(dst, src, alpha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite difference in f64.
    fn fd(f: fn(f64) -> f64, x: f64) -> f64 {
        let h = 1e-6;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn gelu_derivatives_match_finite_differences() {
        for i in -40..=40 {
            let x = i as f64 * 0.15;
            assert!(
                (gelu_grad(x) - fd(gelu::<f64>, x)).abs() < 1e-8,
                "gelu'({x})"
            );
            assert!(
                (gelu_tanh_grad(x) - fd(gelu_tanh::<f64>, x)).abs() < 1e-8,
                "gelu_tanh'({x})"
            );
        }
    }

    #[test]
    fn gelu_values() {
        // Phi(1) = 0.841344746068543.
        assert!((gelu(1.0f64) - 0.841_344_746_068_543).abs() < 1e-14);
        assert!((gelu_tanh(1.0f64) - 0.841_191_990_607_477_2).abs() < 1e-12);
    }
}
