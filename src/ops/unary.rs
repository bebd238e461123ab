//! Elementwise functions of one tensor and the scalar affine map.

use crate::backend::{BinaryOp, UnaryOp};
use crate::base::Result;
use crate::tensor::graph::{needs_grad, non_differentiable, record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Which GELU: exact (`x * Phi(x)`) or the tanh approximation (PyTorch's `approximate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GeluApproximate {
    /// `approximate='none'`.
    #[default]
    None,
    /// `approximate='tanh'`.
    Tanh,
}

impl GeluApproximate {
    /// Parses PyTorch's strings `none` and `tanh`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(GeluApproximate::None),
            "tanh" => Some(GeluApproximate::Tanh),
            _ => None,
        }
    }
}

/// Which tensor an elementwise backward needs.
#[derive(Clone, Copy)]
enum Keep {
    Input,
    Output,
}

/// Computes `op(x)` and records a backward `g -> f(g, saved)`.
fn unary_op<F>(name: &'static str, op: UnaryOp, x: &Tensor, keep: Keep, f: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    let y = prim::unary(op, x)?;
    if !needs_grad(&[x]) {
        return Ok(y);
    }
    let saved = match keep {
        Keep::Input => SavedTensor::input(x),
        Keep::Output => SavedTensor::output(&y),
    };
    Ok(record(name, &[x], y, move |g, ctx| {
        Ok(vec![Some(f(g, &ctx.unpack(&saved)?)?)])
    }))
}

/// torch's `threshold_backward(g, y, 0)`: `g` where `y > 0` (or NaN), else 0 (a
/// selection, so a dead unit drops even a non-finite `g`). Differentiable in `g` (the
/// same selection), constant in `y` (relu's second derivative is zero).
pub(crate) fn threshold_backward(g: &Tensor, y: &Tensor) -> Result<Tensor> {
    let out = prim::binary(BinaryOp::ThresholdBackward, g, y)?;
    if !needs_grad(&[g]) {
        return Ok(out);
    }
    let mask = y.clone();
    Ok(record(
        "ThresholdBackwardBackward",
        &[g],
        out,
        move |gg, _| Ok(vec![Some(threshold_backward(gg, &mask)?)]),
    ))
}

impl Tensor {
    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        let y = prim::unary(UnaryOp::Neg, self)?;
        Ok(record("NegBackward", &[self], y, |g, _| {
            Ok(vec![Some(g.neg()?)])
        }))
    }

    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        unary_op("ExpBackward", UnaryOp::Exp, self, Keep::Output, |g, y| {
            g.mul(y)
        })
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary_op("LogBackward", UnaryOp::Log, self, Keep::Input, |g, x| {
            g.div(x)
        })
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        unary_op("SqrtBackward", UnaryOp::Sqrt, self, Keep::Output, |g, y| {
            g.div(&y.mul_scalar(2.0)?)
        })
    }

    /// `x * x`.
    pub fn square(&self) -> Result<Tensor> {
        unary_op("PowBackward", UnaryOp::Square, self, Keep::Input, |g, x| {
            g.mul(&x.mul_scalar(2.0)?)
        })
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        unary_op("TanhBackward", UnaryOp::Tanh, self, Keep::Output, |g, y| {
            g.mul(&y.square()?.affine(-1.0, 1.0)?)
        })
    }

    /// Logistic sigmoid `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary_op(
            "SigmoidBackward",
            UnaryOp::Sigmoid,
            self,
            Keep::Output,
            |g, y| g.mul(&y.mul(&y.affine(-1.0, 1.0)?)?),
        )
    }

    /// `max(x, 0)`; the gradient at 0 is 0, as in PyTorch.
    pub fn relu(&self) -> Result<Tensor> {
        unary_op("ReluBackward", UnaryOp::Relu, self, Keep::Output, |g, y| {
            threshold_backward(g, &y.detach())
        })
    }

    /// Exact GELU, `x * Phi(x)`.
    pub fn gelu(&self) -> Result<Tensor> {
        self.gelu_with(GeluApproximate::None)
    }

    /// GELU, exact or tanh-approximated.
    pub fn gelu_with(&self, approximate: GeluApproximate) -> Result<Tensor> {
        let (op, grad_op) = match approximate {
            GeluApproximate::None => (UnaryOp::Gelu, UnaryOp::GeluGrad),
            GeluApproximate::Tanh => (UnaryOp::GeluTanh, UnaryOp::GeluTanhGrad),
        };
        unary_op("GeluBackward", op, self, Keep::Input, move |g, x| {
            let d = non_differentiable("gelu", &[x], prim::unary(grad_op, x)?);
            g.mul(&d)
        })
    }

    /// `x * mul + add` with scalars (computed in f32, or f64 for f64 tensors).
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let y = prim::affine(self, mul, add)?;
        Ok(record("AffineBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.mul_scalar(mul)?)])
        }))
    }

    /// `x * s`.
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }

    /// `x + s`.
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, s)
    }
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// GELU, exact or tanh-approximated (`torch.nn.functional.gelu`).
pub fn gelu(x: &Tensor, approximate: GeluApproximate) -> Result<Tensor> {
    x.gelu_with(approximate)
}
