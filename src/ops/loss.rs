//! Losses: cross-entropy with class indices, mean squared error.

use crate::backend::{CrossEntropyOpts, Reduction};
use crate::base::Result;
use crate::tensor::graph::{non_differentiable, record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Cross-entropy of `logits [N, C]` against class indices `target [N]` (i64), as
/// `torch.nn.functional.cross_entropy`: `ignore_index`, `label_smoothing` and
/// `reduction` from `opts`. The loss has shape `[]`, or `[N]` with `Reduction::None`.
pub fn cross_entropy(logits: &Tensor, target: &Tensor, opts: &CrossEntropyOpts) -> Result<Tensor> {
    let (loss, lse) = prim::cross_entropy(logits, target, opts)?;
    let (x, t, opts) = (
        SavedTensor::input(logits),
        SavedTensor::input(target),
        *opts,
    );
    Ok(record("NllLossBackward", &[logits], loss, move |g, ctx| {
        let (x, t) = (ctx.unpack(&x)?, ctx.unpack(&t)?);
        let dx = prim::cross_entropy_backward(&x, &t, &lse, g, &opts)?;
        Ok(vec![Some(non_differentiable(
            "cross_entropy",
            &[&x, g],
            dx,
        ))])
    }))
}

/// Mean squared error `(input - target)^2`, reduced by `reduction`
/// (`torch.nn.functional.mse_loss`). Differentiable in both arguments, to any order.
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    if input.shape() != target.shape() {
        return Err(crate::Error::ShapeMismatch {
            op: "mse_loss",
            lhs: input.shape().to_vec(),
            rhs: target.shape().to_vec(),
        });
    }
    let sq = input.sub(target)?.square()?;
    match reduction {
        Reduction::None => Ok(sq),
        Reduction::Sum => sq.sum_all(),
        Reduction::Mean => sq.mean_all(),
    }
}
