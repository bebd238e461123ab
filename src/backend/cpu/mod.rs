//! The CPU backend: reference semantics, rayon-parallel.
#![allow(unused_variables)]

use crate::backend::dispatch::{BinaryOp, CrossEntropyOpts, UnaryOp};
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

fn todo(op: &'static str, dtype: DType, device: Device) -> Error {
    Error::Unsupported { op, dtype, device }
}

/// See [`crate::backend::dispatch::unary`].
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    Err(todo("unary", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::binary`].
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Err(todo("binary", a.dtype(), a.device()))
}

/// See [`crate::backend::dispatch::affine`].
pub fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    Err(todo("affine", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::sum_dims`].
pub fn sum_dims(x: &Tensor, dims: &[usize], keepdim: bool) -> Result<Tensor> {
    Err(todo("sum_dims", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::matmul`].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Err(todo("matmul", a.dtype(), a.device()))
}

/// See [`crate::backend::dispatch::contiguous`].
pub fn contiguous(x: &Tensor) -> Result<Tensor> {
    Err(todo("contiguous", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::cast`].
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    Err(todo("cast", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::softmax`].
pub fn softmax(x: &Tensor, log: bool) -> Result<Tensor> {
    Err(todo("softmax", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::softmax_backward`].
pub fn softmax_backward(y: &Tensor, dy: &Tensor, log: bool) -> Result<Tensor> {
    Err(todo("softmax_backward", y.dtype(), y.device()))
}

/// See [`crate::backend::dispatch::cross_entropy`].
pub fn cross_entropy(logits: &Tensor, target: &Tensor, opts: &CrossEntropyOpts) -> Result<(Tensor, Tensor)> {
    Err(todo("cross_entropy", logits.dtype(), logits.device()))
}

/// See [`crate::backend::dispatch::cross_entropy_backward`].
pub fn cross_entropy_backward(logits: &Tensor, target: &Tensor, lse: &Tensor, grad_loss: &Tensor, opts: &CrossEntropyOpts) -> Result<Tensor> {
    Err(todo("cross_entropy_backward", logits.dtype(), logits.device()))
}

/// See [`crate::backend::dispatch::layer_norm`].
pub fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    Err(todo("layer_norm", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::layer_norm_backward`].
pub fn layer_norm_backward(dy: &Tensor, x: &Tensor, mean: &Tensor, rstd: &Tensor, weight: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    Err(todo("layer_norm_backward", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::embedding`].
pub fn embedding(weight: &Tensor, idx: &Tensor) -> Result<Tensor> {
    Err(todo("embedding", weight.dtype(), weight.device()))
}

/// See [`crate::backend::dispatch::embedding_backward`].
pub fn embedding_backward(grad: &Tensor, idx: &Tensor, num_embeddings: usize) -> Result<Tensor> {
    Err(todo("embedding_backward", grad.dtype(), grad.device()))
}

/// See [`crate::backend::dispatch::dropout_mask`].
pub fn dropout_mask(shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<Tensor> {
    Err(todo("dropout_mask", dtype, Device::Cpu))
}

/// See [`crate::backend::dispatch::argmax`].
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    Err(todo("argmax", x.dtype(), x.device()))
}

/// See [`crate::backend::dispatch::add_`].
pub fn add_(dst: &Tensor, src: &Tensor, alpha: f64) -> Result<()> {
    Err(todo("add_", dst.dtype(), dst.device()))
}

/// See [`crate::backend::dispatch::copy_`].
pub fn copy_(dst: &Tensor, src: &Tensor) -> Result<()> {
    Err(todo("copy_", dst.dtype(), dst.device()))
}

/// See [`crate::backend::dispatch::fill_`].
pub fn fill_(t: &Tensor, value: f64) -> Result<()> {
    Err(todo("fill_", t.dtype(), t.device()))
}

/// See [`crate::backend::dispatch::zero_`].
pub fn zero_(t: &Tensor) -> Result<()> {
    Err(todo("zero_", t.dtype(), t.device()))
}
