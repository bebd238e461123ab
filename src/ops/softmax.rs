//! Softmax and log-softmax over any dim.

use crate::base::Result;
use crate::tensor::graph::{record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Softmax (or log-softmax) over the last dim, differentiable.
fn softmax_last(x: &Tensor, log: bool) -> Result<Tensor> {
    let y = prim::softmax(x, log)?;
    let saved = SavedTensor::output(&y);
    let name = if log {
        "LogSoftmaxBackward"
    } else {
        "SoftmaxBackward"
    };
    Ok(record(name, &[x], y, move |g, ctx| {
        let y = ctx.unpack(&saved)?;
        let dx = if !ctx.create_graph() {
            prim::softmax_backward(&y, g, log)?
        } else if log {
            // g - exp(y) * sum(g)
            g.sub(&y.exp()?.mul(&g.sum(Some(&[-1]), true)?)?)?
        } else {
            // y * (g - sum(g * y))
            y.mul(&g.sub(&g.mul(&y)?.sum(Some(&[-1]), true)?)?)?
        };
        Ok(vec![Some(dx)])
    }))
}

/// Moves `dim` last, applies `f`, moves it back.
fn over_dim(x: &Tensor, dim: isize, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let d = super::dim("softmax", dim, x.rank())?;
    let last = x.rank().saturating_sub(1);
    if d == last {
        return f(x);
    }
    let (d, last) = (d as isize, last as isize);
    f(&x.transpose(d, last)?)?.transpose(d, last)?.contiguous()
}

impl Tensor {
    /// Softmax over `dim` (negative counts from the end), max-subtracted.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        over_dim(self, dim, |t| softmax_last(t, false))
    }

    /// Log-softmax over `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        over_dim(self, dim, |t| softmax_last(t, true))
    }
}

/// Softmax over `dim`.
pub fn softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    x.softmax(dim)
}

/// Log-softmax over `dim`.
pub fn log_softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    x.log_softmax(dim)
}
