//! Layer norm over the last dim and its backward.

use rayon::prelude::*;

use crate::backend::{LayerNormGrad, LayerNormGrads, LayerNormIn, Norms};
use crate::base::RawTensor;
use crate::base::{Error, Result};

use super::elem::{output, read, read2, small_f64, with_float, Acc, Float};
use super::softmax::rows_cols;
use super::strided::{chunk_len, contiguous_cow, for_rows, map1, parallel};
use super::CpuBackend;

/// The elements of a parameter vector of length `d`, widened to the arithmetic type.
fn param<T: Float>(op: &'static str, p: Option<&RawTensor>, d: usize) -> Result<Option<Vec<T::A>>> {
    let Some(p) = p else { return Ok(None) };
    if p.shape() != [d] {
        return Err(Error::invalid(
            op,
            format!("parameter of shape {:?}, expected [{d}]", p.shape()),
        ));
    }
    Ok(Some(read::<T, _>(op, p, |s, l| map1(s, l, T::load))?))
}

/// The rows and row length of a layer norm input (at least one dim).
fn rows_of(op: &'static str, x: &RawTensor) -> Result<(usize, usize)> {
    if x.rank() == 0 {
        return Err(Error::invalid(op, "the input needs at least one dim"));
    }
    Ok(rows_cols(x.shape()))
}

fn layer_norm_t<T: Float>(a: &LayerNormIn<'_>) -> Result<[RawTensor; 3]> {
    const OP: &str = "layer_norm";
    let (x, weight, bias, eps) = (a.x, a.weight, a.bias, a.eps);
    let (rows, d) = rows_of(OP, x)?;
    let w = param::<T>(OP, weight, d)?;
    let b = param::<T>(OP, bias, d)?;
    let eps = T::A::of_f64(eps);
    let inv_d = T::A::ONE / T::A::of_f64(d as f64);
    let mut stats = vec![(T::A::ZERO, T::A::ZERO); rows];
    let y = read::<T, _>(OP, x, |s, l| {
        let data = contiguous_cow(s, l);
        let mut y = vec![T::default(); rows * d];
        for_rows(&mut y, d, &mut stats, |r0, y, st| {
            for (i, st) in st.iter_mut().enumerate() {
                let r = r0 + i;
                let row = &data[r * d..(r + 1) * d];
                let mean = row.iter().fold(T::A::ZERO, |a, v| a + v.load()) * inv_d;
                let var = row.iter().fold(T::A::ZERO, |a, v| {
                    let c = v.load() - mean;
                    a + c * c
                }) * inv_d;
                let rstd = T::A::ONE / (var + eps).sqrt();
                *st = (mean, rstd);
                for (j, (o, v)) in y[i * d..(i + 1) * d].iter_mut().zip(row).enumerate() {
                    let mut h = (v.load() - mean) * rstd;
                    if let Some(w) = &w {
                        h = h * w[j];
                    }
                    if let Some(b) = &b {
                        h += b[j];
                    }
                    *o = T::store(h);
                }
            }
        });
        y
    })?;
    let mean: Vec<T::A> = stats.iter().map(|s| s.0).collect();
    let rstd: Vec<T::A> = stats.iter().map(|s| s.1).collect();
    Ok([
        output(y, x.shape()),
        output(mean, &[rows]),
        output(rstd, &[rows]),
    ])
}

/// Partial sums of `dy * xhat` and `dy` per column over some rows.
type Partial<A> = (Vec<A>, Vec<A>);

fn add_partials<A: Acc>(mut a: Partial<A>, b: Partial<A>) -> Partial<A> {
    for (x, y) in a.0.iter_mut().zip(b.0) {
        *x += y;
    }
    for (x, y) in a.1.iter_mut().zip(b.1) {
        *x += y;
    }
    a
}

fn layer_norm_backward_t<T: Float>(a: &LayerNormGrad<'_>) -> Result<LayerNormGrads> {
    const OP: &str = "layer_norm_backward";
    let (dy, x, [mean, rstd], weight) = (a.dy, a.x, a.stats, a.weight);
    let (rows, d) = rows_of(OP, x)?;
    if dy.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: dy.shape().to_vec(),
            rhs: x.shape().to_vec(),
        });
    }
    let w = param::<T>(OP, weight, d)?;
    let to_acc = |v: Vec<f64>| v.into_iter().map(T::A::of_f64).collect::<Vec<_>>();
    let mean = to_acc(small_f64(OP, mean, rows)?);
    let rstd = to_acc(small_f64(OP, rstd, rows)?);
    let inv_d = T::A::ONE / T::A::of_f64(d as f64);
    let (dx, (dw, db)) = read2::<T, _>(OP, dy, x, |sd, ld, sx, lx| {
        let (dy, x) = (contiguous_cow(sd, ld), contiguous_cow(sx, lx));
        let mut dx = vec![T::default(); rows * d];
        let zero = || (vec![T::A::ZERO; d], vec![T::A::ZERO; d]);
        // dx rows for `r0..` into `out`, returning this chunk's partial dweight, dbias.
        let run = |r0: usize, out: &mut [T]| -> Partial<T::A> {
            let mut part = zero();
            let mut g = vec![T::A::ZERO; d];
            let mut xhat = vec![T::A::ZERO; d];
            for (i, o) in out.chunks_mut(d).enumerate() {
                let r = r0 + i;
                let (m, rs) = (mean[r], rstd[r]);
                let (dyr, xr) = (&dy[r * d..(r + 1) * d], &x[r * d..(r + 1) * d]);
                let (mut sg, mut sgx) = (T::A::ZERO, T::A::ZERO);
                for j in 0..d {
                    let dv = dyr[j].load();
                    xhat[j] = (xr[j].load() - m) * rs;
                    g[j] = match &w {
                        Some(w) => dv * w[j],
                        None => dv,
                    };
                    sg += g[j];
                    sgx += g[j] * xhat[j];
                    part.0[j] += dv * xhat[j];
                    part.1[j] += dv;
                }
                let (a, c) = (sg * inv_d, sgx * inv_d);
                for j in 0..d {
                    o[j] = T::store(rs * (g[j] - a - xhat[j] * c));
                }
            }
            part
        };
        let parts = if d == 0 || !parallel(rows * d) {
            run(0, &mut dx)
        } else {
            let per = chunk_len(rows * d, d);
            dx.par_chunks_mut(per)
                .enumerate()
                .map(|(i, c)| run(i * per / d, c))
                .reduce(zero, add_partials)
        };
        (dx, parts)
    })?;
    let dx = output(dx, x.shape());
    if w.is_none() {
        return Ok((dx, None, None));
    }
    let store = |v: Vec<T::A>| output(v.into_iter().map(T::store).collect::<Vec<T>>(), &[d]);
    Ok((dx, Some(store(dw)), Some(store(db))))
}

impl Norms for CpuBackend {
    fn layer_norm(&self, a: &LayerNormIn<'_>) -> Result<[RawTensor; 3]> {
        with_float!(a.x.dtype(), "layer_norm", |T| layer_norm_t::<T>(a))
    }

    fn layer_norm_backward(&self, a: &LayerNormGrad<'_>) -> Result<LayerNormGrads> {
        with_float!(a.x.dtype(), "layer_norm_backward", |T| {
            layer_norm_backward_t::<T>(a)
        })
    }
}
