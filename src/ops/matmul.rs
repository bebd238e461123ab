//! Matrix products and the linear layer's function.

use crate::base::{Error, Result};
use crate::tensor::graph::{needs_grad, record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

impl Tensor {
    /// Matrix product `a [.., m, k] @ b [.., k, n]`: 2-D, batched with equal batch dims,
    /// or batched `a` with a 2-D `b` shared by every batch.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let y = prim::matmul(self, other)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let a = SavedTensor::input(self);
        let b = SavedTensor::input(other);
        Ok(record("MmBackward", &[self, other], y, move |g, ctx| {
            let ga = if ctx.needs(0) {
                Some(g.matmul(&ctx.unpack(&b)?.transpose(-1, -2)?)?)
            } else {
                None
            };
            let gb = if ctx.needs(1) {
                let (a, b) = (ctx.unpack(&a)?, ctx.unpack(&b)?);
                if b.rank() == 2 && a.rank() > 2 {
                    // A 2-D b shared by every batch: its gradient sums over the batch.
                    let k = a.shape()[a.rank() - 1];
                    let n = g.shape()[g.rank() - 1];
                    let a2 = a.reshape(&[-1, k as isize])?;
                    let g2 = g.reshape(&[-1, n as isize])?;
                    Some(a2.transpose(0, 1)?.matmul(&g2)?)
                } else {
                    Some(a.transpose(-1, -2)?.matmul(g)?)
                }
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }
}

/// Matrix product, as [`Tensor::matmul`].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.matmul(b)
}

/// `y = x @ weight^T + bias` with PyTorch's layout: `weight [out, in]`, `bias [out]`,
/// `x [.., in]`.
///
/// One graph node (as PyTorch's addmm): the bias is added to the product as the backend
/// writes it (on the CPU, inside the copy that lays the product out row-major), and the
/// backward writes `grad_weight = grad^T @ x` directly in the weight's
/// row-major layout, so no transposed gradient has to be copied before it accumulates
/// into `.grad`. The backward is built from differentiable ops, so double backward works.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_then(x, weight, bias, false)
}

/// `relu(linear(x, weight, bias))` as one op and one graph node: the backend applies
/// the bias and ReLU as it writes the product (on the CPU, f32 and f64, in the same copy),
/// and the backward masks the gradient with the output (PyTorch's `threshold_backward`)
/// before linear's. Values and gradients have the bits of the two ops.
pub fn linear_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_then(x, weight, bias, true)
}

/// [`linear`], followed by ReLU when `relu`.
fn linear_then(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    if weight.rank() != 2 {
        return Err(Error::invalid(
            "linear",
            format!("weight must be [out, in], got shape {:?}", weight.shape()),
        ));
    }
    if let Some(b) = bias.filter(|b| b.shape() != [weight.shape()[0]]) {
        return Err(Error::invalid(
            "linear",
            format!(
                "bias must have shape [{}] to match weight {:?}, got {:?}",
                weight.shape()[0],
                weight.shape(),
                b.shape()
            ),
        ));
    }
    let y = {
        let _plain = crate::tensor::grad_mode::no_grad();
        prim::matmul_epilogue(x, &weight.t()?, bias, relu)?
    };
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    if !needs_grad(&inputs) {
        return Ok(y);
    }
    let xs = SavedTensor::input(x);
    let ws = SavedTensor::input(weight);
    let ys = relu.then(|| SavedTensor::output(&y));
    let (out_f, in_f) = (weight.shape()[0] as isize, weight.shape()[1] as isize);
    let has_bias = bias.is_some();
    let name = if relu {
        "LinearReluBackward"
    } else {
        "LinearBackward"
    };
    Ok(record(name, &inputs, y, move |g, ctx| {
        let masked;
        let g = match &ys {
            Some(ys) => {
                masked = crate::ops::unary::threshold_backward(g, &ctx.unpack(ys)?.detach())?;
                &masked
            }
            None => g,
        };
        let g2 = g.reshape(&[-1, out_f])?;
        let gx = if ctx.needs(0) {
            Some(g.matmul(&ctx.unpack(&ws)?)?)
        } else {
            None
        };
        let gw = if ctx.needs(1) {
            let x2 = ctx.unpack(&xs)?.reshape(&[-1, in_f])?;
            Some(g2.t()?.matmul(&x2)?)
        } else {
            None
        };
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(if ctx.needs(2) {
                Some(g2.sum(Some(&[0]), false)?)
            } else {
                None
            });
        }
        Ok(grads)
    }))
}
