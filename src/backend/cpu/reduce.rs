//! Reductions: `sum_dims` and `argmax`.

use rayon::prelude::*;

use crate::backend::Reductions;
use crate::base::RawTensor;
use crate::base::{Error, Result};

use super::elem::{output, read, with_float, Acc, Float};
use super::strided::{chunk_len, contiguous_cow, for_items, parallel, Dims};
use super::CpuBackend;

/// Sum of `x[base + r]` over every storage offset `r` of the reduced dims `rd`, for
/// `range` of its row-major elements.
fn sum_range<T: Float>(x: &[T], base: usize, rd: &Dims<1>, range: std::ops::Range<usize>) -> T::A {
    let s = rd.inner_stride(0);
    let mut acc = T::A::ZERO;
    rd.segments([base], range, |_, [o], len| {
        if s == 1 {
            for &v in &x[o..o + len] {
                acc += v.load();
            }
        } else {
            for t in 0..len {
                acc += x[o + t * s].load();
            }
        }
    });
    acc
}

/// Sums the view (storage `x`, offset `base`) over `rd`, giving one value per element
/// of the kept dims `kd` (row-major).
fn sum_strided<T: Float>(x: &[T], base: usize, kd: &Dims<1>, rd: &Dims<1>) -> Vec<T::A> {
    let (n_out, n_red) = (kd.numel(), rd.numel());
    let mut acc = vec![T::A::ZERO; n_out];
    if n_out == 0 || n_red == 0 {
        return acc;
    }
    if n_out == 1 {
        // Every kept dim has size 1: the only output starts at `base`.
        let off = base;
        acc[0] = if parallel(n_red) {
            let len = chunk_len(n_red, 1);
            (0..n_red.div_ceil(len))
                .into_par_iter()
                .map(|i| sum_range::<T>(x, off, rd, i * len..((i + 1) * len).min(n_red)))
                .reduce(|| T::A::ZERO, |a, b| a + b)
        } else {
            sum_range::<T>(x, off, rd, 0..n_red)
        };
        return acc;
    }
    let ks = kd.inner_stride(0);
    if rd.inner_stride(0) < ks {
        // The reduced dims are the denser ones: one sequential sum per output.
        for_items(&mut acc, n_red, |start, out| {
            let mut i = 0;
            kd.segments([base], start..start + out.len(), |_, [o], len| {
                for t in 0..len {
                    out[i] = sum_range::<T>(x, o + t * ks, rd, 0..n_red);
                    i += 1;
                }
            });
        });
    } else {
        // The kept dims are the denser ones: add whole slices of outputs at a time.
        for_items(&mut acc, n_red, |start, out| {
            let end = start + out.len();
            let rs = rd.inner_stride(0);
            rd.segments([base], 0..n_red, |_, [ro], rlen| {
                for r in 0..rlen {
                    kd.segments([ro + r * rs], start..end, |pos, [o], len| {
                        let dst = &mut out[pos - start..pos - start + len];
                        if ks == 1 {
                            for (d, &v) in dst.iter_mut().zip(&x[o..o + len]) {
                                *d += v.load();
                            }
                        } else {
                            for (t, d) in dst.iter_mut().enumerate() {
                                *d += x[o + t * ks].load();
                            }
                        }
                    });
                }
            });
        });
    }
    acc
}

fn sum_t<T: Float>(x: &RawTensor, dims: &[usize], keepdim: bool) -> Result<RawTensor> {
    let (shape, strides) = (x.shape(), x.layout().strides());
    let mut kept = (Vec::new(), Vec::new());
    let mut red = (Vec::new(), Vec::new());
    let mut out_shape = Vec::new();
    for d in 0..shape.len() {
        if dims.contains(&d) {
            red.0.push(shape[d]);
            red.1.push(strides[d]);
            if keepdim {
                out_shape.push(1);
            }
        } else {
            kept.0.push(shape[d]);
            kept.1.push(strides[d]);
            out_shape.push(shape[d]);
        }
    }
    let kd = Dims::new(&kept.0, [&kept.1]);
    let rd = Dims::new(&red.0, [&red.1]);
    let v = read::<T, _>("sum", x, |s, l| {
        sum_strided::<T>(s, l.offset(), &kd, &rd)
            .into_iter()
            .map(T::store)
            .collect::<Vec<T>>()
    })?;
    Ok(output(v, &out_shape))
}

/// Index of the first largest value of a row; a NaN counts as the largest.
fn argmax_row<T: Float>(row: &[T]) -> i64 {
    let mut best = 0;
    let mut best_v = row[0].load();
    for (i, v) in row.iter().enumerate().skip(1) {
        let v = v.load();
        if best_v.is_nan() {
            break;
        }
        if v > best_v || v.is_nan() {
            best = i;
            best_v = v;
        }
    }
    best as i64
}

fn argmax_t<T: Float>(x: &RawTensor) -> Result<RawTensor> {
    let shape = x.shape();
    let (cols, out_shape) = match shape.split_last() {
        Some((&c, rest)) => (c, rest.to_vec()),
        None => (1, Vec::new()),
    };
    let rows: usize = out_shape.iter().product();
    if cols == 0 && rows > 0 {
        return Err(Error::invalid(
            "argmax",
            format!("empty last dim in shape {shape:?}"),
        ));
    }
    let v = read::<T, _>("argmax", x, |s, l| {
        let data = contiguous_cow(s, l);
        let mut out = vec![0i64; rows];
        for_items(&mut out, cols, |start, o| {
            for (i, d) in o.iter_mut().enumerate() {
                let r = start + i;
                *d = argmax_row(&data[r * cols..(r + 1) * cols]);
            }
        });
        out
    })?;
    Ok(output(v, &out_shape))
}

impl Reductions for CpuBackend {
    fn sum_dims(&self, x: &RawTensor, dims: &[usize], keepdim: bool) -> Result<RawTensor> {
        with_float!(x.dtype(), "sum", |T| sum_t::<T>(x, dims, keepdim))
    }

    fn argmax(&self, x: &RawTensor) -> Result<RawTensor> {
        with_float!(x.dtype(), "argmax", |T| argmax_t::<T>(x))
    }
}
