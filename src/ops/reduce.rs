//! Sums and means over dims.

use crate::base::{Error, Result};
use crate::tensor::graph::record;
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Sorted, unique dims to reduce; `None` (or an empty list, as in PyTorch) means all.
fn reduce_dims(op: &'static str, dims: Option<&[isize]>, rank: usize) -> Result<Vec<usize>> {
    let dims = match dims {
        None | Some([]) => return Ok((0..rank).collect()),
        Some(d) => d,
    };
    let mut out = dims
        .iter()
        .map(|&d| super::dim(op, d, rank))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            op,
            format!("dim appears more than once in {dims:?}"),
        ));
    }
    if rank == 0 {
        out.clear();
    }
    Ok(out)
}

/// The shape of `shape` reduced over `dims` with `keepdim`.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| match (dims.contains(&d), keepdim) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

impl Tensor {
    /// Sum over `dims` (negative dims count from the end; `None` = every dim, giving
    /// shape `[]` without `keepdim`). With `keepdim` the reduced dims stay as size 1.
    pub fn sum(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let dims = reduce_dims("sum", dims, self.rank())?;
        let y = if dims.is_empty() {
            prim::contiguous(self)?
        } else {
            prim::sum_dims(self, &dims, keepdim)?
        };
        let in_shape = self.shape().to_vec();
        let kept = reduced_shape(&in_shape, &dims, true);
        Ok(record("SumBackward", &[self], y, move |g, _| {
            Ok(vec![Some(g.reshape_to(&kept)?.expand(&in_shape)?)])
        }))
    }

    /// Sum of every element (shape `[]`).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(None, false)
    }

    /// Mean over `dims`, as [`Self::sum`].
    pub fn mean(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let rd = reduce_dims("mean", dims, self.rank())?;
        let count: usize = rd.iter().map(|&d| self.shape()[d]).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / count as f64)
    }

    /// Mean of every element (shape `[]`).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(None, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_normalised_sorted_and_checked() {
        assert_eq!(reduce_dims("t", Some(&[-1, 0]), 3).unwrap(), vec![0, 2]);
        assert_eq!(reduce_dims("t", None, 2).unwrap(), vec![0, 1]);
        assert!(reduce_dims("t", Some(&[1, -2]), 3).is_err());
        assert!(reduce_dims("t", Some(&[3]), 3).is_err());
        assert_eq!(reduced_shape(&[2, 3, 4], &[1], false), vec![2, 4]);
        assert_eq!(reduced_shape(&[2, 3, 4], &[0, 2], true), vec![1, 3, 1]);
    }
}
