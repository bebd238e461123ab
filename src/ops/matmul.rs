//! Matrix products and the linear layer's function.

use crate::autograd::{needs_grad, record, SavedTensor};
use crate::backend::dispatch;
use crate::error::Result;
use crate::tensor::Tensor;

impl Tensor {
    /// Matrix product `a [.., m, k] @ b [.., k, n]`: 2-D, batched with equal batch dims,
    /// or batched `a` with a 2-D `b` shared by every batch.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let y = dispatch::matmul(self, other)?;
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
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.add(b),
        None => Ok(y),
    }
}
