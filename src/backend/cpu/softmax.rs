//! Softmax and log-softmax over the last dim, their backward, and cross-entropy with
//! class indices.

use crate::backend::{CrossEntropyGrad, CrossEntropyIn, CrossEntropyOpts, Reduction, Softmaxes};
use crate::base::RawTensor;
use crate::base::{Error, Result};

use super::elem::{indices, output, read, read2, small_f64, with_float, Acc, Float};
use super::strided::{contiguous_cow, for_chunks, for_items};
use super::CpuBackend;

/// Rows and columns of a tensor seen as rows over its last dim (a scalar is one row of
/// one element).
pub(crate) fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let cols = shape.last().copied().unwrap_or(1);
    let rows = match shape.split_last() {
        Some((_, lead)) => lead.iter().product(),
        None => 1,
    };
    (rows, cols)
}

/// The maximum of a row (NaN if it holds one, -inf if empty).
fn row_max<T: Float>(row: &[T]) -> T::A {
    let mut m = T::A::NEG_INFINITY;
    for v in row {
        let v = v.load();
        if v > m || v.is_nan() {
            m = v;
        }
    }
    m
}

/// `ln(sum(exp(x)))` of a row, max-subtracted.
fn row_lse<T: Float>(row: &[T]) -> T::A {
    let m = row_max(row);
    if m == T::A::NEG_INFINITY {
        return m;
    }
    let mut s = T::A::ZERO;
    for v in row {
        s += (v.load() - m).exp();
    }
    m + s.ln()
}

fn softmax_t<T: Float>(x: &RawTensor, log: bool) -> Result<RawTensor> {
    let (rows, cols) = rows_cols(x.shape());
    let v = read::<T, _>("softmax", x, |s, l| {
        let data = contiguous_cow(s, l);
        let mut out = vec![T::default(); rows * cols];
        for_chunks(&mut out, cols, |start, out| {
            let r0 = start / cols;
            let mut e = vec![T::A::ZERO; cols];
            for (i, o) in out.chunks_mut(cols).enumerate() {
                let row = &data[(r0 + i) * cols..(r0 + i + 1) * cols];
                let m = row_max(row);
                let mut sum = T::A::ZERO;
                for (e, v) in e.iter_mut().zip(row) {
                    *e = v.load() - m;
                    sum += e.exp();
                }
                if log {
                    let ls = sum.ln();
                    for (o, &e) in o.iter_mut().zip(&e) {
                        *o = T::store(e - ls);
                    }
                } else {
                    let inv = T::A::ONE / sum;
                    for (o, &e) in o.iter_mut().zip(&e) {
                        *o = T::store(e.exp() * inv);
                    }
                }
            }
        });
        out
    })?;
    Ok(output(v, x.shape()))
}

fn softmax_backward_t<T: Float>(y: &RawTensor, dy: &RawTensor, log: bool) -> Result<RawTensor> {
    let (rows, cols) = rows_cols(y.shape());
    let v = read2::<T, _>("softmax_backward", y, dy, |sy, ly, sd, ld| {
        let (y, dy) = (contiguous_cow(sy, ly), contiguous_cow(sd, ld));
        let mut out = vec![T::default(); rows * cols];
        for_chunks(&mut out, cols, |start, out| {
            let r0 = start / cols;
            for (i, o) in out.chunks_mut(cols).enumerate() {
                let span = (r0 + i) * cols..(r0 + i + 1) * cols;
                let (yr, dr) = (&y[span.clone()], &dy[span]);
                if log {
                    // dx = dy - exp(y) * sum(dy)
                    let s = dr.iter().fold(T::A::ZERO, |a, d| a + d.load());
                    for ((o, yv), dv) in o.iter_mut().zip(yr).zip(dr) {
                        *o = T::store(dv.load() - yv.load().exp() * s);
                    }
                } else {
                    // dx = y * (dy - sum(dy * y))
                    let s = yr
                        .iter()
                        .zip(dr)
                        .fold(T::A::ZERO, |a, (yv, dv)| a + yv.load() * dv.load());
                    for ((o, yv), dv) in o.iter_mut().zip(yr).zip(dr) {
                        *o = T::store(yv.load() * (dv.load() - s));
                    }
                }
            }
        });
        out
    })?;
    Ok(output(v, y.shape()))
}

/// The targets of a cross-entropy, checked: each in `0..classes` or `ignore_index`.
fn checked_targets(
    op: &'static str,
    target: &RawTensor,
    classes: usize,
    ignore: i64,
) -> Result<Vec<i64>> {
    let t = indices(op, target)?;
    for (row, &c) in t.iter().enumerate() {
        if c != ignore && (c < 0 || c as usize >= classes) {
            return Err(Error::invalid(
                op,
                format!("target {c} (row {row}) is outside 0..{classes} and is not ignore_index {ignore}"),
            ));
        }
    }
    Ok(t)
}

fn cross_entropy_t<T: Float>(
    logits: &RawTensor,
    target: &RawTensor,
    opts: &CrossEntropyOpts,
) -> Result<[RawTensor; 2]> {
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let targets = checked_targets("cross_entropy", target, c, opts.ignore_index)?;
    let eps = T::A::of_f64(opts.label_smoothing);
    let inv_c = T::A::ONE / T::A::of_f64(c as f64);
    // Per row: (loss, lse).
    let mut rows = vec![(T::A::ZERO, T::A::ZERO); n];
    read::<T, _>("cross_entropy", logits, |s, l| {
        let data = contiguous_cow(s, l);
        for_items(&mut rows, c, |r0, stats| {
            for (i, st) in stats.iter_mut().enumerate() {
                let r = r0 + i;
                let row = &data[r * c..(r + 1) * c];
                let lse = row_lse(row);
                let t = targets[r];
                let loss = if t == opts.ignore_index {
                    T::A::ZERO
                } else {
                    let nll = lse - row[t as usize].load();
                    if opts.label_smoothing > 0.0 {
                        let mean = row.iter().fold(T::A::ZERO, |a, v| a + v.load()) * inv_c;
                        (T::A::ONE - eps) * nll + eps * (lse - mean)
                    } else {
                        nll
                    }
                };
                *st = (loss, lse);
            }
        });
    })?;
    let lse: Vec<T::A> = rows.iter().map(|r| r.1).collect();
    let loss = match opts.reduction {
        Reduction::None => output(rows.iter().map(|r| T::store(r.0)).collect::<Vec<T>>(), &[n]),
        Reduction::Sum | Reduction::Mean => {
            let mut total = rows.iter().fold(T::A::ZERO, |a, r| a + r.0);
            if opts.reduction == Reduction::Mean {
                let count = targets.iter().filter(|&&t| t != opts.ignore_index).count();
                // No counted row gives 0 / 0 = NaN, as in PyTorch.
                total = total / T::A::of_f64(count as f64);
            }
            output(vec![T::store(total)], &[])
        }
    };
    Ok([loss, output(lse, &[n])])
}

fn cross_entropy_backward_t<T: Float>(a: &CrossEntropyGrad<'_>) -> Result<RawTensor> {
    const OP: &str = "cross_entropy_backward";
    let (logits, target, opts) = (a.input.logits, a.input.target, a.input.opts);
    let (lse, grad_loss) = (a.lse, a.grad_loss);
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let targets = checked_targets(OP, target, c, opts.ignore_index)?;
    let lse = small_f64(OP, lse, n)?;
    let per_row = opts.reduction == Reduction::None;
    let g = small_f64(OP, grad_loss, if per_row { n } else { 1 })?;
    let scale = match opts.reduction {
        Reduction::Mean => 1.0 / targets.iter().filter(|&&t| t != opts.ignore_index).count() as f64,
        _ => 1.0,
    };
    let eps = T::A::of_f64(opts.label_smoothing);
    let on_target = T::A::ONE - eps;
    let off = eps / T::A::of_f64(c as f64);
    let v = read::<T, _>(OP, logits, |s, l| {
        let data = contiguous_cow(s, l);
        let mut out = vec![T::default(); n * c];
        for_chunks(&mut out, c, |start, out| {
            let r0 = start / c;
            for (i, o) in out.chunks_mut(c).enumerate() {
                let r = r0 + i;
                let t = targets[r];
                // An ignored row has no target and a zero gradient: 0 where its softmax
                // is finite, NaN where it is not (torch's log_softmax backward).
                let gr = if t == opts.ignore_index {
                    T::A::ZERO
                } else {
                    T::A::of_f64(g[if per_row { r } else { 0 }] * scale)
                };
                let l = T::A::of_f64(lse[r]);
                for (j, (o, x)) in o.iter_mut().zip(&data[r * c..(r + 1) * c]).enumerate() {
                    let mut d = (x.load() - l).exp() - off;
                    if j as i64 == t {
                        d = d - on_target;
                    }
                    *o = T::store(gr * d);
                }
            }
        });
        out
    })?;
    Ok(output(v, &[n, c]))
}

impl Softmaxes for CpuBackend {
    fn softmax(&self, x: &RawTensor, log: bool) -> Result<RawTensor> {
        with_float!(x.dtype(), "softmax", |T| softmax_t::<T>(x, log))
    }

    fn softmax_backward(&self, y: &RawTensor, dy: &RawTensor, log: bool) -> Result<RawTensor> {
        with_float!(y.dtype(), "softmax_backward", |T| softmax_backward_t::<T>(
            y, dy, log
        ))
    }

    fn cross_entropy(&self, a: &CrossEntropyIn<'_>) -> Result<[RawTensor; 2]> {
        let (logits, target, opts) = (a.logits, a.target, a.opts);
        with_float!(logits.dtype(), "cross_entropy", |T| cross_entropy_t::<T>(
            logits, target, opts
        ))
    }

    fn cross_entropy_backward(&self, a: &CrossEntropyGrad<'_>) -> Result<RawTensor> {
        with_float!(a.input.logits.dtype(), "cross_entropy_backward", |T| {
            cross_entropy_backward_t::<T>(a)
        })
    }
}
