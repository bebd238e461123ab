//! Elementwise functions of two tensors with PyTorch's broadcasting.

use crate::backend::BinaryOp;
use crate::base::Result;
use crate::tensor::graph::{needs_grad, record, SavedTensor};
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Saves `t` only when `wanted` (a gradient formula needs it).
fn save_if(wanted: bool, t: &Tensor) -> Option<SavedTensor> {
    wanted.then(|| SavedTensor::input(t))
}

/// Unpacks a tensor saved by [`save_if`].
fn unpack(ctx: &crate::tensor::graph::BackwardCtx, s: &Option<SavedTensor>) -> Result<Tensor> {
    match s {
        Some(s) => ctx.unpack(s),
        None => Err(crate::Error::Autograd(
            "a tensor needed by backward was not saved".into(),
        )),
    }
}

impl Tensor {
    /// `a + b` with broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        let y = prim::binary(BinaryOp::Add, self, other)?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(record("AddBackward", &[self, other], y, move |g, ctx| {
            Ok(vec![
                ctx.needs(0).then(|| g.sum_to_shape(&sa)).transpose()?,
                ctx.needs(1).then(|| g.sum_to_shape(&sb)).transpose()?,
            ])
        }))
    }

    /// `a - b` with broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        let y = prim::binary(BinaryOp::Sub, self, other)?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(record("SubBackward", &[self, other], y, move |g, ctx| {
            Ok(vec![
                ctx.needs(0).then(|| g.sum_to_shape(&sa)).transpose()?,
                ctx.needs(1)
                    .then(|| g.neg()?.sum_to_shape(&sb))
                    .transpose()?,
            ])
        }))
    }

    /// `a * b` with broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        let y = prim::binary(BinaryOp::Mul, self, other)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let a = save_if(other.requires_grad(), self);
        let b = save_if(self.requires_grad(), other);
        Ok(record("MulBackward", &[self, other], y, move |g, ctx| {
            let ga = ctx
                .needs(0)
                .then(|| g.mul(&unpack(ctx, &b)?)?.sum_to_shape(&sa));
            let gb = ctx
                .needs(1)
                .then(|| g.mul(&unpack(ctx, &a)?)?.sum_to_shape(&sb));
            Ok(vec![ga.transpose()?, gb.transpose()?])
        }))
    }

    /// `a / b` with broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        let y = prim::binary(BinaryOp::Div, self, other)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let a = save_if(other.requires_grad(), self);
        let b = SavedTensor::input(other);
        Ok(record("DivBackward", &[self, other], y, move |g, ctx| {
            let b = ctx.unpack(&b)?;
            let ga = ctx.needs(0).then(|| g.div(&b)?.sum_to_shape(&sa));
            let gb = ctx.needs(1).then(|| {
                // -g * (a / b) / b, PyTorch's order of operations.
                let q = unpack(ctx, &a)?.div(&b)?.div(&b)?;
                g.mul(&q)?.neg()?.sum_to_shape(&sb)
            });
            Ok(vec![ga.transpose()?, gb.transpose()?])
        }))
    }

    /// Sums a broadcast result back to `shape` (the inverse of broadcasting): sums the
    /// leading extra dims and the dims where `shape` has 1. Returns the same tensor when
    /// the shapes already agree.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead =
            self.rank()
                .checked_sub(shape.len())
                .ok_or_else(|| crate::Error::ShapeMismatch {
                    op: "sum_to_shape",
                    lhs: self.shape().to_vec(),
                    rhs: shape.to_vec(),
                })?;
        let dims: Vec<isize> = (0..self.rank())
            .filter(|&d| d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1))
            .map(|d| d as isize)
            .collect();
        let s = if dims.is_empty() {
            self.clone()
        } else {
            self.sum(Some(&dims), true)?
        };
        s.reshape_to(shape)
    }
}
