//! The CPU backend: reference semantics for every test and a real device, rayon-parallel.
//!
//! Every function implements the matching primitive of [`crate::backend::dispatch`]
//! (which has validated dtypes, devices and shapes). Float kernels load f16 as f32,
//! compute in f32 (f64 for f64) and round once on store; reductions accumulate in that
//! arithmetic type. Inputs may be any strided view; outputs are new contiguous tensors.

mod copy;
mod dropout;
mod elem;
mod elementwise;
mod embedding;
pub(crate) mod f16conv;
mod matmul;
mod norm;
mod reduce;
mod softmax;
mod strided;
#[cfg(test)]
mod tests;

use crate::backend::dispatch::{BinaryOp, CrossEntropyOpts, UnaryOp};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// See [`crate::backend::dispatch::unary`].
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    elementwise::unary(op, x)
}

/// See [`crate::backend::dispatch::binary`].
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    elementwise::binary(op, a, b)
}

/// See [`crate::backend::dispatch::affine`].
pub fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    elementwise::affine(x, mul, add)
}

/// See [`crate::backend::dispatch::sum_dims`].
pub fn sum_dims(x: &Tensor, dims: &[usize], keepdim: bool) -> Result<Tensor> {
    reduce::sum_dims(x, dims, keepdim)
}

/// See [`crate::backend::dispatch::matmul`].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul::matmul(a, b)
}

/// See [`crate::backend::dispatch::contiguous`].
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    copy::contiguous(x)
}

/// See [`crate::backend::dispatch::cast`].
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    copy::cast(x, dtype)
}

/// See [`crate::backend::dispatch::softmax`].
pub fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    softmax::softmax(x, log)
}

/// See [`crate::backend::dispatch::softmax_backward`].
pub fn softmax_backward(y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
    softmax::softmax_backward(y, dy, log)
}

/// See [`crate::backend::dispatch::cross_entropy`].
pub fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<(Tensor, Tensor)> {
    softmax::cross_entropy(logits, target, opts)
}

/// See [`crate::backend::dispatch::cross_entropy_backward`].
pub fn cross_entropy_backward(
    logits: &Tensor,
    target: &Tensor,
    lse: &Tensor,
    grad_loss: &Tensor,
    opts: &CrossEntropyOpts,
) -> Result<Tensor> {
    softmax::cross_entropy_backward(logits, target, lse, grad_loss, opts)
}

/// See [`crate::backend::dispatch::layer_norm`].
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    norm::layer_norm(x, weight, bias, eps)
}

/// See [`crate::backend::dispatch::layer_norm_backward`].
pub fn layer_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    norm::layer_norm_backward(dy, x, mean, rstd, weight)
}

/// See [`crate::backend::dispatch::embedding`].
pub fn embedding(weight: &Tensor, idx: &Tensor) -> Result<Tensor> {
    embedding::embedding(weight, idx)
}

/// See [`crate::backend::dispatch::embedding_backward`].
pub fn embedding_backward(grad: &Tensor, idx: &Tensor, num_embeddings: usize) -> Result<Tensor> {
    embedding::embedding_backward(grad, idx, num_embeddings)
}

/// See [`crate::backend::dispatch::dropout_mask`].
pub fn dropout_mask(shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<Tensor> {
    dropout::dropout_mask(shape, p, seed, dtype)
}

/// See [`crate::backend::dispatch::argmax`].
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    reduce::argmax(x)
}

/// See [`crate::backend::dispatch::add_`].
pub fn add_(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    copy::add_(dst, src, alpha)
}

/// See [`crate::backend::dispatch::copy_`].
pub fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    copy::copy_(dst, src)
}

/// See [`crate::backend::dispatch::fill_`].
pub fn fill_(t: &Tensor, value: f64) -> Result<()> {
    copy::fill_(t, value)
}

/// See [`crate::backend::dispatch::zero_`].
pub fn zero_(t: &Tensor) -> Result<()> {
    copy::zero_(t)
}
