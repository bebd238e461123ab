//! The functions behind the layers: layer norm, embedding, dropout.

use crate::base::{Error, Result};
use crate::tensor::graph::{non_differentiable, record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

use super::shape::raw_reshape;

/// Layer normalisation over the trailing dims `normalized_shape` of `x`, with optional
/// elementwise `weight` and `bias` of shape `normalized_shape`
/// (`torch.nn.functional.layer_norm`; biased variance).
pub fn layer_norm(
    x: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let r = x.rank();
    let k = normalized_shape.len();
    if k == 0 || k > r || x.shape()[r - k..] != *normalized_shape {
        return Err(Error::ShapeMismatch {
            op: "layer_norm",
            lhs: x.shape().to_vec(),
            rhs: normalized_shape.to_vec(),
        });
    }
    for p in [weight, bias].into_iter().flatten() {
        if p.shape() != normalized_shape {
            return Err(Error::ShapeMismatch {
                op: "layer_norm",
                lhs: normalized_shape.to_vec(),
                rhs: p.shape().to_vec(),
            });
        }
    }
    let d: usize = normalized_shape.iter().product();
    let rows = x.numel() / d.max(1);
    let x2 = raw_reshape(x, &[rows, d])?;
    let w2 = weight.map(|w| raw_reshape(w, &[d])).transpose()?;
    let b2 = bias.map(|b| raw_reshape(b, &[d])).transpose()?;
    let (y2, mean, rstd) = prim::layer_norm(&x2, w2.as_ref(), b2.as_ref(), eps)?;
    let y = raw_reshape(&y2, x.shape())?;

    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    let xs = SavedTensor::input(&x2);
    let ws = w2.as_ref().map(SavedTensor::input);
    let x_shape = x.shape().to_vec();
    let p_shape = normalized_shape.to_vec();
    Ok(record(
        "NativeLayerNormBackward",
        &inputs,
        y,
        move |g, ctx| {
            let x2 = ctx.unpack(&xs)?;
            let w2 = ws.as_ref().map(|w| ctx.unpack(w)).transpose()?;
            let dy = raw_reshape(g, &[rows, d])?;
            let (dx, dw, db) = prim::layer_norm_backward(&dy, &x2, &mean, &rstd, w2.as_ref())?;
            let db = match (has_b, db) {
                (true, None) => Some(prim::sum_dims(&dy, &[0], false)?),
                (_, db) => db,
            };
            let mark = |t: Tensor, shape: &[usize]| -> Result<Tensor> {
                Ok(non_differentiable(
                    "layer_norm",
                    &[&x2, g],
                    raw_reshape(&t, shape)?,
                ))
            };
            let mut out = vec![Some(mark(dx, &x_shape)?)];
            if has_w {
                out.push(dw.map(|t| mark(t, &p_shape)).transpose()?);
            }
            if has_b {
                out.push(db.map(|t| mark(t, &p_shape)).transpose()?);
            }
            Ok(out)
        },
    ))
}

/// Rows of `weight [V, D]` picked by `indices` (i64, any shape): shape
/// `indices.shape + [D]` (`torch.nn.functional.embedding`). Repeated indices accumulate
/// into the weight's gradient.
pub fn embedding(indices: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let y = prim::embedding(weight, indices)?;
    let idx = SavedTensor::input(indices);
    let v = weight.shape()[0];
    Ok(record("EmbeddingBackward", &[weight], y, move |g, ctx| {
        let idx = ctx.unpack(&idx)?;
        let dw = prim::embedding_backward(g, &idx, v)?;
        Ok(vec![Some(non_differentiable("embedding", &[g], dw))])
    }))
}

/// Dropout: in training, zeroes each element with probability `p` and scales the rest
/// by `1/(1-p)`, with a counter-based mask keyed by
/// `seed` (the same on every device); the identity when `!train` or `p == 0`.
pub fn dropout(x: &Tensor, p: f64, train: bool, seed: u64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p = {p} outside [0, 1]")));
    }
    if !train || p == 0.0 {
        return Ok(x.clone());
    }
    if p == 1.0 {
        return x.mul_scalar(0.0);
    }
    let mask = prim::dropout_mask(x.shape(), p, seed, x.dtype(), x.device())?;
    x.mul(&mask)
}
