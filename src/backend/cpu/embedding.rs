//! Embedding lookup and its backward (a scatter-add of rows).

use crate::backend::Indexing;
use crate::base::RawTensor;
use crate::base::{Error, Result};

use super::elem::{indices, output, read, with_float, Acc, Float};
use super::strided::{contiguous_cow, for_chunks};
use super::CpuBackend;

/// The indices of `idx`, each checked to lie in `0..rows`.
fn checked(op: &'static str, idx: &RawTensor, rows: usize) -> Result<Vec<usize>> {
    indices(op, idx)?
        .into_iter()
        .enumerate()
        .map(|(pos, i)| {
            if i < 0 || i as usize >= rows {
                Err(Error::invalid(
                    op,
                    format!("index {i} (position {pos}) is outside 0..{rows}"),
                ))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

fn embedding_t<T: Float>(weight: &RawTensor, idx: &RawTensor) -> Result<RawTensor> {
    let (v, d) = (weight.shape()[0], weight.shape()[1]);
    let ids = checked("embedding", idx, v)?;
    let out = read::<T, _>("embedding", weight, |s, l| {
        let w = contiguous_cow(s, l);
        let mut out = vec![T::default(); ids.len() * d];
        for_chunks(&mut out, d, |start, out| {
            for (i, o) in out.chunks_mut(d).enumerate() {
                let r = ids[start / d + i];
                o.copy_from_slice(&w[r * d..(r + 1) * d]);
            }
        });
        out
    })?;
    let mut shape = idx.shape().to_vec();
    shape.push(d);
    Ok(output(out, &shape))
}

fn embedding_backward_t<T: Float>(
    grad: &RawTensor,
    idx: &RawTensor,
    num: usize,
) -> Result<RawTensor> {
    const OP: &str = "embedding_backward";
    let d = grad.shape().last().copied().unwrap_or(0);
    let ids = checked(OP, idx, num)?;
    let acc = read::<T, _>(OP, grad, |s, l| {
        let g = contiguous_cow(s, l);
        let mut acc = vec![T::A::ZERO; num * d];
        for (i, &r) in ids.iter().enumerate() {
            for (a, v) in acc[r * d..(r + 1) * d]
                .iter_mut()
                .zip(&g[i * d..(i + 1) * d])
            {
                *a += v.load();
            }
        }
        acc
    })?;
    Ok(output(
        acc.into_iter().map(T::store).collect::<Vec<T>>(),
        &[num, d],
    ))
}

impl Indexing for CpuBackend {
    fn embedding(&self, weight: &RawTensor, idx: &RawTensor) -> Result<RawTensor> {
        with_float!(weight.dtype(), "embedding", |T| embedding_t::<T>(
            weight, idx
        ))
    }

    fn embedding_backward(
        &self,
        grad: &RawTensor,
        idx: &RawTensor,
        rows: usize,
    ) -> Result<RawTensor> {
        with_float!(grad.dtype(), "embedding_backward", |T| {
            embedding_backward_t::<T>(grad, idx, rows)
        })
    }
}
