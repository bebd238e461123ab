//! Views and copies: transpose, reshape, flatten, expand, contiguous, clone, cast.

use crate::base::{Error, Result};
use crate::tensor::graph::record;
use crate::tensor::prim;
use crate::tensor::{contiguous_strides, DType, Layout, Tensor};

/// A reshape without autograd: a view when `t` is contiguous, else a contiguous copy.
pub(crate) fn raw_reshape(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if crate::base::checked_numel("reshape", shape)? != t.numel() {
        return Err(Error::ShapeMismatch {
            op: "reshape",
            lhs: t.shape().to_vec(),
            rhs: shape.to_vec(),
        });
    }
    let base = if t.is_contiguous() {
        t.clone()
    } else {
        prim::contiguous(t)?
    };
    let layout = Layout::new(
        shape.to_vec(),
        contiguous_strides(shape),
        base.layout().offset(),
    );
    base.with_layout(layout)
}

/// Resolves a shape with at most one `-1` against `numel` elements.
fn infer_shape(shape: &[isize], numel: usize, from: &[usize]) -> Result<Vec<usize>> {
    let bad = || {
        Error::invalid(
            "reshape",
            format!("shape {shape:?} is invalid for input of shape {from:?}"),
        )
    };
    let mut infer = None;
    let mut known = 1usize;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => infer = Some(i),
            s if s >= 0 => known = known.checked_mul(s as usize).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    let mut out: Vec<usize> = shape.iter().map(|&s| s.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || numel % known != 0 {
            return Err(bad());
        }
        out[i] = numel / known;
    }
    if crate::base::checked_numel("reshape", &out)? != numel {
        return Err(bad());
    }
    Ok(out)
}

impl Tensor {
    /// Swaps two dims (negative dims count from the end); a view of the same storage.
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Tensor> {
        let d0 = super::dim("transpose", dim0, self.rank())?;
        let d1 = super::dim("transpose", dim1, self.rank())?;
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        let y = self.with_layout(self.layout().transpose(d0, d1))?;
        Ok(record("TransposeBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.transpose(d0 as isize, d1 as isize)?)])
        }))
    }

    /// The transpose of a 2-D tensor (a view).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid(
                "t",
                format!("expects a 2-D tensor, got shape {:?}", self.shape()),
            ));
        }
        self.transpose(0, 1)
    }

    /// Reshape to `shape`, where one entry may be -1 (inferred): a view when the tensor
    /// is contiguous, else a copy.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let shape = infer_shape(shape, self.numel(), self.shape())?;
        self.reshape_to(&shape)
    }

    /// Reshape to an explicit shape (no -1), as [`Self::reshape`].
    pub fn reshape_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let y = raw_reshape(self, shape)?;
        let in_shape = self.shape().to_vec();
        Ok(record("ReshapeBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.reshape_to(&in_shape)?)])
        }))
    }

    /// Merges dims `start_dim..=end_dim` into one (PyTorch's `flatten`).
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape_to(&[1]);
        }
        let s = super::dim("flatten", start_dim, self.rank())?;
        let e = super::dim("flatten", end_dim, self.rank())?;
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start_dim {start_dim} comes after end_dim {end_dim}"),
            ));
        }
        let sh = self.shape();
        let mut shape = sh[..s].to_vec();
        shape.push(sh[s..=e].iter().product());
        shape.extend_from_slice(&sh[e + 1..]);
        self.reshape_to(&shape)
    }

    /// A view broadcast to `shape` (stretched dims have stride 0; PyTorch's `expand`).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        crate::base::checked_numel("expand", shape)?;
        let y = self.with_layout(self.layout().broadcast_to(shape)?)?;
        let in_shape = self.shape().to_vec();
        Ok(record("ExpandBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.sum_to_shape(&in_shape)?)])
        }))
    }

    /// The same tensor when contiguous, else a contiguous copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.deep_clone()
    }

    /// A contiguous copy with its own storage (PyTorch's `clone`), differentiable.
    pub fn deep_clone(&self) -> Result<Tensor> {
        let y = prim::contiguous(self)?;
        Ok(record("CloneBackward", &[self], y, |g, _| {
            Ok(vec![Some(g.clone())])
        }))
    }

    /// A copy converted to `dtype` that keeps the graph (the gradient is converted back).
    /// Unlike [`Self::to_dtype`], which makes a new leaf.
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let y = prim::cast(self, dtype)?;
        let from = self.dtype();
        Ok(record("ToCopyBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.cast(from)?)])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_one_dim() {
        assert_eq!(infer_shape(&[-1, 4], 24, &[2, 3, 4]).unwrap(), vec![6, 4]);
        assert!(infer_shape(&[-1, -1], 24, &[24]).is_err());
        assert!(infer_shape(&[5, -1], 24, &[24]).is_err());
        assert!(infer_shape(&[2, 3], 24, &[24]).is_err());
    }
}
