//! The primitive operations every backend implements, without autograd.
//!
//! Each function checks its arguments (dtypes, devices, shapes) once, then calls the
//! CPU backend or the GPU backend (CUDA and emulation share one). Inputs may be
//! strided views; outputs are new contiguous tensors unless the name ends in `_`
//! (in place; those bump the storage's version counter).
//!
//! The differentiable operations in [`crate::ops`] are built from these.

use crate::backend::{cpu, gpu};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural log
    Log,
    /// square root
    Sqrt,
    /// hyperbolic tangent
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `max(x, 0)`
    Relu,
    /// exact GELU, `x * Phi(x)`
    Gelu,
    /// tanh-approximated GELU
    GeluTanh,
    /// `1` where `x > 0`, else `0` (relu's derivative; 0 at 0)
    Step,
    /// derivative of exact GELU
    GeluGrad,
    /// derivative of tanh-approximated GELU
    GeluTanhGrad,
    /// `1 / x`
    Recip,
    /// `x * x`
    Square,
    /// `|x|`
    Abs,
}

/// Elementwise functions of two broadcast tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
}

/// How a loss reduces over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Reduction {
    /// One loss per sample.
    None,
    /// The mean (over non-ignored samples, for cross-entropy).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// Options of cross-entropy with class indices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOpts {
    /// Targets equal to this contribute no loss and no gradient (`-100` by default).
    pub ignore_index: i64,
    /// Weight moved from the target class to a uniform distribution, in [0, 1].
    pub label_smoothing: f64,
    /// Reduction over samples.
    pub reduction: Reduction,
}

impl Default for CrossEntropyOpts {
    fn default() -> Self {
        CrossEntropyOpts {
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
        }
    }
}

/// The dtype of saved statistics (row means, log-sum-exps): f64 for f64 data, else f32.
pub fn stats_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
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

macro_rules! route {
    ($dev:expr, $f:ident ( $($arg:expr),* )) => {
        match $dev {
            Device::Cpu => cpu::$f($($arg),*),
            Device::Cuda(_) | Device::Emu => gpu::ops::$f($($arg),*),
        }
    };
}

/// `op(x)` elementwise.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    float("unary", x)?;
    route!(x.device(), unary(op, x))
}

/// `op(a, b)` elementwise with broadcasting.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_dtype("binary", a, b)?;
    float("binary", a)?;
    crate::tensor::broadcast_shapes("binary", a.shape(), b.shape())?;
    route!(a.device(), binary(op, a, b))
}

/// `x * mul + add` elementwise (scalars computed in f32, or f64 for f64 tensors).
pub fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    float("affine", x)?;
    route!(x.device(), affine(x, mul, add))
}

/// Sum over `dims` (sorted, unique, in range). With `keepdim` the reduced dims stay as 1.
/// Accumulates in f32 (f64 for f64).
pub fn sum_dims(x: &Tensor, dims: &[usize], keepdim: bool) -> Result<Tensor> {
    float("sum", x)?;
    if dims.windows(2).any(|w| w[0] >= w[1]) || dims.iter().any(|&d| d >= x.rank()) {
        return Err(Error::invalid(
            "sum",
            format!("bad dims {dims:?} for shape {:?}", x.shape()),
        ));
    }
    route!(x.device(), sum_dims(x, dims, keepdim))
}

/// Matrix product `a [.., m, k] @ b [.., k, n]` with equal batch dims, or a 2-D `b`
/// shared by every batch. f16 accumulates in f32.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
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
    route!(a.device(), matmul(a, b))
}

/// A contiguous copy.
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    route!(x.device(), contiguous(x))
}

/// A contiguous copy converted to `dtype`.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    crate::tensor::check_gpu_dtype("cast", dtype, x.device())?;
    route!(x.device(), cast(x, dtype))
}

/// Softmax (or log-softmax) over the last dim, max-subtracted.
pub fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    float("softmax", x)?;
    route!(x.device(), softmax(x, log))
}

/// Gradient of [`softmax`] given its output `y` and the output gradient `dy`.
pub fn softmax_backward(y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
    same_dtype("softmax_backward", y, dy)?;
    same_shape("softmax_backward", y, dy)?;
    route!(y.device(), softmax_backward(y, dy, log))
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
/// [`stats_dtype`]) for the backward. A target outside `0..C` that is not `ignore_index`
/// is an error.
pub fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<(Tensor, Tensor)> {
    check_ce(logits, target, opts)?;
    route!(logits.device(), cross_entropy(logits, target, opts))
}

/// Gradient of [`cross_entropy`] with respect to the logits.
pub fn cross_entropy_backward(
    logits: &Tensor,
    target: &Tensor,
    lse: &Tensor,
    grad_loss: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<Tensor> {
    check_ce(logits, target, opts)?;
    route!(
        logits.device(),
        cross_entropy_backward(logits, target, lse, grad_loss, opts)
    )
}

/// Layer norm over the last dim of `x [.., D]`: returns `y`, and each row's mean and
/// reciprocal standard deviation (`[rows]`, [`stats_dtype`]).
pub fn layer_norm(
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
    route!(x.device(), layer_norm(x, weight, bias, eps))
}

/// Gradients of [`layer_norm`]: `dx`, and `dweight`, `dbias` when `weight` is given.
pub fn layer_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    same_dtype("layer_norm_backward", dy, x)?;
    route!(x.device(), layer_norm_backward(dy, x, mean, rstd, weight))
}

/// Rows of `weight [V, D]` picked by `idx` (i64, any shape): shape `idx.shape + [D]`.
/// An index outside `0..V` is an error.
pub fn embedding(weight: &Tensor, idx: &Tensor) -> Result<Tensor> {
    float("embedding", weight)?;
    index("embedding", idx)?;
    same_device("embedding", weight, idx)?;
    if weight.rank() != 2 {
        return Err(Error::invalid(
            "embedding",
            format!("weight must be 2-D, got {:?}", weight.shape()),
        ));
    }
    route!(weight.device(), embedding(weight, idx))
}

/// Gradient of [`embedding`] for the weight: `[num_embeddings, D]`, rows summed per index.
pub fn embedding_backward(grad: &Tensor, idx: &Tensor, num_embeddings: usize) -> Result<Tensor> {
    index("embedding_backward", idx)?;
    same_device("embedding_backward", grad, idx)?;
    route!(grad.device(), embedding_backward(grad, idx, num_embeddings))
}

/// A dropout mask: each element `1/(1-p)` with probability `1-p`, else 0, from a
/// counter-based generator keyed by `seed` (the same on every device).
pub fn dropout_mask(
    shape: &[usize],
    p: f64,
    seed: u64,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p = {p} outside [0, 1)")));
    }
    match device {
        Device::Cpu => cpu::dropout_mask(shape, p, seed, dtype),
        _ => gpu::ops::dropout_mask(shape, p, seed, dtype, device),
    }
}

/// Index of the largest element along the last dim (first one on ties), as i64.
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    float("argmax", x)?;
    route!(x.device(), argmax(x))
}

fn check_inplace(op: &'static str, dst: &Tensor) -> Result<()> {
    if !dst.is_contiguous() {
        return Err(Error::invalid(op, "the destination must be contiguous"));
    }
    Ok(())
}

/// `dst += alpha * src` in place (same shape; `src` may be strided).
pub fn add_(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    same_dtype("add_", dst, src)?;
    same_shape("add_", dst, src)?;
    check_inplace("add_", dst)?;
    route!(dst.device(), add_(dst, src, alpha))?;
    dst.storage().bump_version();
    Ok(())
}

/// `dst = src` in place (same shape and dtype; `src` may be strided).
pub fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    same_dtype("copy_", dst, src)?;
    same_shape("copy_", dst, src)?;
    check_inplace("copy_", dst)?;
    route!(dst.device(), copy_(dst, src))?;
    dst.storage().bump_version();
    Ok(())
}

/// Sets every element to `value` in place.
pub fn fill_(t: &Tensor, value: f64) -> Result<()> {
    check_inplace("fill_", t)?;
    route!(t.device(), fill_(t, value))?;
    t.storage().bump_version();
    Ok(())
}

/// Sets every element to zero in place (a memset on a GPU).
pub fn zero_(t: &Tensor) -> Result<()> {
    check_inplace("zero_", t)?;
    route!(t.device(), zero_(t))?;
    t.storage().bump_version();
    Ok(())
}
