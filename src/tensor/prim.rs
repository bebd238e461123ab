//! The primitives on tensors, without autograd: each checks its arguments (dtypes,
//! devices, shapes) once and calls the backend of the tensors' device (the traits of
//! [`crate::backend::primitives`]). Inputs may be strided views; outputs are new
//! contiguous tensors unless the name ends in `_` (in place; those bump the storage's
//! version counter).
//!
//! The differentiable operations in [`crate::ops`] are built from these.

use crate::backend::{
    backend, BinaryOp, CrossEntropyGrad, CrossEntropyIn, CrossEntropyOpts, LayerNormGrad,
    LayerNormIn, UnaryOp,
};
use crate::base::{DType, Device, Error, Result};
use crate::tensor::Tensor;

/// `OutOfMemory` before a CPU op allocates an output of `n` elements of `dtype` that the
/// host cannot hold (a view such as `expand` can have far more elements than its
/// storage); device allocators report that themselves.
fn fits(device: Device, n: usize, dtype: DType) -> Result<()> {
    if device == Device::Cpu {
        crate::base::ensure_host_fits(n, dtype)
    } else {
        Ok(())
    }
}

/// `fits` for an output of `x`'s size and dtype.
fn fits_like(x: &Tensor) -> Result<()> {
    fits(x.device(), x.numel(), x.dtype())
}

/// Wraps a backend's output.
fn out(raw: Result<crate::base::RawTensor>) -> Result<Tensor> {
    raw.map(Tensor::from_raw)
}

fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    Ok(())
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    same_device(op, a, b)?;
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    Ok(())
}

fn float(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::Unsupported {
            op,
            dtype: t.dtype(),
            device: t.device(),
        });
    }
    Ok(())
}

fn index(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::I64 {
        return Err(Error::invalid(
            op,
            format!("indices must be i64, got {}", t.dtype()),
        ));
    }
    Ok(())
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    Ok(())
}

/// `op(x)` elementwise.
pub(crate) fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    float("unary", x)?;
    fits_like(x)?;
    out(backend(x.device())?.unary(op, x.raw()))
}

/// `op(a, b)` elementwise with broadcasting.
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_dtype("binary", a, b)?;
    float("binary", a)?;
    let shape = crate::base::broadcast_shapes("binary", a.shape(), b.shape())?;
    fits(
        a.device(),
        crate::base::checked_numel("binary", &shape)?,
        a.dtype(),
    )?;
    out(backend(a.device())?.binary(op, a.raw(), b.raw()))
}

/// `x * mul + add` elementwise (scalars computed in f32, or f64 for f64 tensors).
pub(crate) fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    float("affine", x)?;
    fits_like(x)?;
    out(backend(x.device())?.affine(x.raw(), mul, add))
}

/// Sum over `dims` (sorted, unique, in range). With `keepdim` the reduced dims stay as 1.
/// Accumulates in f32 (f64 for f64).
pub(crate) fn sum_dims(x: &Tensor, dims: &[usize], keepdim: bool) -> Result<Tensor> {
    float("sum", x)?;
    if dims.windows(2).any(|w| w[0] >= w[1]) || dims.iter().any(|&d| d >= x.rank()) {
        return Err(Error::invalid(
            "sum",
            format!("bad dims {dims:?} for shape {:?}", x.shape()),
        ));
    }
    out(backend(x.device())?.sum_dims(x.raw(), dims, keepdim))
}

/// Matrix product `a [.., m, k] @ b [.., k, n]` with equal batch dims, or a 2-D `b`
/// shared by every batch. f16 accumulates in f32.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_matmul(a, b)?;
    out(backend(a.device())?.matmul(a.raw(), b.raw()))
}

/// `a @ b`, then `+ bias` (`bias [n]` added to every row) and ReLU where asked, with the
/// bits of [`matmul`] followed by [`add_`] and [`unary`] ReLU.
pub(crate) fn matmul_epilogue(
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let shape = check_matmul(a, b)?;
    let bias = match bias {
        Some(bias) => {
            same_dtype("matmul", a, bias)?;
            if bias.shape() != [shape[shape.len() - 1]] {
                return Err(Error::ShapeMismatch {
                    op: "matmul",
                    lhs: shape,
                    rhs: bias.shape().to_vec(),
                });
            }
            let row = bias.layout().broadcast_to(&shape)?;
            Some(bias.raw().with_layout(row)?)
        }
        None => None,
    };
    let operands = (a.raw(), b.raw());
    out(backend(a.device())?.matmul_epilogue(operands, bias.as_ref(), relu))
}

/// The checks of a product `a @ b`; its output shape.
fn check_matmul(a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    same_dtype("matmul", a, b)?;
    float("matmul", a)?;
    let (ra, rb) = (a.rank(), b.rank());
    let bad = || Error::ShapeMismatch {
        op: "matmul",
        lhs: a.shape().to_vec(),
        rhs: b.shape().to_vec(),
    };
    if ra < 2 || rb < 2 || a.shape()[ra - 1] != b.shape()[rb - 2] {
        return Err(bad());
    }
    if rb > 2 && a.shape()[..ra - 2] != b.shape()[..rb - 2] {
        return Err(bad());
    }
    let rows = crate::base::checked_numel("matmul", &a.shape()[..ra - 1])?;
    let n = rows.checked_mul(b.shape()[rb - 1]).ok_or_else(bad)?;
    fits(a.device(), n, a.dtype())?;
    let mut shape = a.shape()[..ra - 1].to_vec();
    shape.push(b.shape()[rb - 1]);
    Ok(shape)
}

/// A contiguous copy.
pub(crate) fn contiguous(x: &Tensor) -> Result<Tensor> {
    fits_like(x)?;
    out(backend(x.device())?.cast(x.raw(), x.dtype()))
}

/// A contiguous copy converted to `dtype`.
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    fits(x.device(), x.numel(), dtype)?;
    out(backend(x.device())?.cast(x.raw(), dtype))
}

/// Softmax (or log-softmax) over the last dim, max-subtracted.
pub(crate) fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    float("softmax", x)?;
    fits_like(x)?;
    out(backend(x.device())?.softmax(x.raw(), log))
}

/// Gradient of [`softmax`] given its output `y` and the output gradient `dy`.
pub(crate) fn softmax_backward(y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
    same_dtype("softmax_backward", y, dy)?;
    same_shape("softmax_backward", y, dy)?;
    fits_like(y)?;
    out(backend(y.device())?.softmax_backward(y.raw(), dy.raw(), log))
}

fn check_ce(logits: &Tensor, target: &Tensor, opts: &CrossEntropyOpts) -> Result<()> {
    float("cross_entropy", logits)?;
    index("cross_entropy", target)?;
    same_device("cross_entropy", logits, target)?;
    if logits.rank() != 2 || target.rank() != 1 || target.shape()[0] != logits.shape()[0] {
        return Err(Error::ShapeMismatch {
            op: "cross_entropy",
            lhs: logits.shape().to_vec(),
            rhs: target.shape().to_vec(),
        });
    }
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        return Err(Error::invalid(
            "cross_entropy",
            format!("label_smoothing {} outside [0, 1]", opts.label_smoothing),
        ));
    }
    Ok(())
}

/// Cross-entropy of `logits [N, C]` against class indices `target [N]` (i64). Returns the
/// loss (shape `[]`, or `[N]` for `Reduction::None`) and each row's log-sum-exp (`[N]`,
/// [`crate::backend::stats_dtype`]) for the backward. A target outside `0..C` that is not `ignore_index`
/// is an error.
pub(crate) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<(Tensor, Tensor)> {
    check_ce(logits, target, opts)?;
    let a = CrossEntropyIn {
        logits: logits.raw(),
        target: target.raw(),
        opts,
    };
    let [loss, lse] = backend(logits.device())?.cross_entropy(&a)?;
    Ok((Tensor::from_raw(loss), Tensor::from_raw(lse)))
}

/// Gradient of [`cross_entropy`] with respect to the logits.
pub(crate) fn cross_entropy_backward(
    logits: &Tensor,
    target: &Tensor,
    lse: &Tensor,
    grad_loss: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<Tensor> {
    check_ce(logits, target, opts)?;
    fits_like(logits)?;
    let input = CrossEntropyIn {
        logits: logits.raw(),
        target: target.raw(),
        opts,
    };
    let a = CrossEntropyGrad {
        input,
        lse: lse.raw(),
        grad_loss: grad_loss.raw(),
    };
    out(backend(logits.device())?.cross_entropy_backward(&a))
}

/// Layer norm over the last dim of `x [.., D]`: returns `y`, and each row's mean and
/// reciprocal standard deviation (`[rows]`, [`crate::backend::stats_dtype`]).
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    float("layer_norm", x)?;
    for p in [weight, bias].into_iter().flatten() {
        same_dtype("layer_norm", x, p)?;
        if p.shape() != [*x.shape().last().unwrap_or(&0)] {
            return Err(Error::ShapeMismatch {
                op: "layer_norm",
                lhs: x.shape().to_vec(),
                rhs: p.shape().to_vec(),
            });
        }
    }
    fits_like(x)?;
    let a = LayerNormIn {
        x: x.raw(),
        weight: weight.map(Tensor::raw),
        bias: bias.map(Tensor::raw),
        eps,
    };
    let [y, mean, rstd] = backend(x.device())?.layer_norm(&a)?;
    Ok((
        Tensor::from_raw(y),
        Tensor::from_raw(mean),
        Tensor::from_raw(rstd),
    ))
}

/// Gradients of [`layer_norm`]: `dx`, and `dweight`, `dbias` when `weight` is given.
pub(crate) fn layer_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    same_dtype("layer_norm_backward", dy, x)?;
    fits_like(x)?;
    let a = LayerNormGrad {
        dy: dy.raw(),
        x: x.raw(),
        stats: [mean.raw(), rstd.raw()],
        weight: weight.map(Tensor::raw),
    };
    let (dx, dw, db) = backend(x.device())?.layer_norm_backward(&a)?;
    Ok((
        Tensor::from_raw(dx),
        dw.map(Tensor::from_raw),
        db.map(Tensor::from_raw),
    ))
}

/// Rows of `weight [V, D]` picked by `idx` (i64, any shape): shape `idx.shape + [D]`.
/// An index outside `0..V` is an error.
pub(crate) fn embedding(weight: &Tensor, idx: &Tensor) -> Result<Tensor> {
    float("embedding", weight)?;
    index("embedding", idx)?;
    same_device("embedding", weight, idx)?;
    if weight.rank() != 2 {
        return Err(Error::invalid(
            "embedding",
            format!("weight must be 2-D, got {:?}", weight.shape()),
        ));
    }
    let n = idx.numel().saturating_mul(weight.shape()[1]);
    fits(weight.device(), n, weight.dtype())?;
    out(backend(weight.device())?.embedding(weight.raw(), idx.raw()))
}

/// Gradient of [`embedding`] for the weight: `[num_embeddings, D]`, rows summed per index.
pub(crate) fn embedding_backward(
    grad: &Tensor,
    idx: &Tensor,
    num_embeddings: usize,
) -> Result<Tensor> {
    index("embedding_backward", idx)?;
    same_device("embedding_backward", grad, idx)?;
    if grad.rank() != idx.rank() + 1 || grad.shape()[..idx.rank()] != *idx.shape() {
        return Err(Error::ShapeMismatch {
            op: "embedding_backward",
            lhs: grad.shape().to_vec(),
            rhs: idx.shape().to_vec(),
        });
    }
    let d = grad.shape().last().copied().unwrap_or(1);
    let n = num_embeddings.saturating_mul(d);
    fits(grad.device(), n, grad.dtype())?;
    out(backend(grad.device())?.embedding_backward(grad.raw(), idx.raw(), num_embeddings))
}

/// A dropout mask: each element `1/(1-p)` with probability `1-p`, else 0, from a
/// counter-based generator keyed by `seed` (the same on every device).
pub(crate) fn dropout_mask(
    shape: &[usize],
    p: f64,
    seed: u64,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p = {p} outside [0, 1)")));
    }
    fits(device, crate::base::checked_numel("dropout", shape)?, dtype)?;
    out(backend(device)?.dropout_mask(shape, p, seed, dtype))
}

/// Index of the largest element along the last dim (first one on ties), as i64.
pub(crate) fn argmax(x: &Tensor) -> Result<Tensor> {
    float("argmax", x)?;
    out(backend(x.device())?.argmax(x.raw()))
}

fn check_inplace(op: &'static str, dst: &Tensor) -> Result<()> {
    if !dst.is_contiguous() {
        return Err(Error::invalid(op, "the destination must be contiguous"));
    }
    Ok(())
}

/// `dst += alpha * src` in place (same shape; `src` may be strided).
pub(crate) fn add_(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    same_dtype("add_", dst, src)?;
    same_shape("add_", dst, src)?;
    check_inplace("add_", dst)?;
    backend(dst.device())?.add_(dst.raw(), src.raw(), alpha)?;
    dst.storage().bump_version();
    Ok(())
}

/// `dst = src` in place (same shape and dtype; `src` may be strided).
pub(crate) fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    same_dtype("copy_", dst, src)?;
    same_shape("copy_", dst, src)?;
    check_inplace("copy_", dst)?;
    backend(dst.device())?.copy_(dst.raw(), src.raw())?;
    dst.storage().bump_version();
    Ok(())
}

/// `dst = host` in place: `host` holds `dst`'s elements in row-major order (dtype and
/// length checked); a GPU `dst` gets one upload.
pub(crate) fn write_host(dst: &Tensor, host: &crate::base::CpuStorage) -> Result<()> {
    check_inplace("copy_", dst)?;
    if host.dtype() != dst.dtype() || host.len() != dst.numel() {
        return Err(Error::invalid(
            "copy_",
            format!(
                "{} elements of {} do not fill a tensor of shape {:?} of {}",
                host.len(),
                host.dtype(),
                dst.shape(),
                dst.dtype()
            ),
        ));
    }
    backend(dst.device())?.write_host(dst.raw(), host)?;
    dst.storage().bump_version();
    Ok(())
}

/// Sets every element to `value` in place.
pub(crate) fn fill_(t: &Tensor, value: f64) -> Result<()> {
    check_inplace("fill_", t)?;
    backend(t.device())?.fill_(t.raw(), value)?;
    t.storage().bump_version();
    Ok(())
}

/// Sets every element to zero in place (a memset on a GPU).
pub(crate) fn zero_(t: &Tensor) -> Result<()> {
    check_inplace("zero_", t)?;
    backend(t.device())?.zero_(t.raw())?;
    t.storage().bump_version();
    Ok(())
}
