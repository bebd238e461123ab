//! Walking strided views: dim coalescing, contiguous segments, and the parallel
//! elementwise engines every CPU op builds on.

use rayon::prelude::*;

use crate::base::Layout;

/// Below this many elements an op runs on the calling thread.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Elements per rayon task, at least.
const GRAIN: usize = 1 << 13;

/// Whether work of `n` elements is worth the thread pool.
pub(crate) fn parallel(n: usize) -> bool {
    n >= PAR_MIN && rayon::current_num_threads() > 1
}

/// A chunk length (a multiple of `align`) splitting `n` elements into a few tasks per
/// thread.
pub(crate) fn chunk_len(n: usize, align: usize) -> usize {
    let align = align.max(1);
    let tasks = rayon::current_num_threads() * 4;
    let per = n.div_ceil(tasks).max(GRAIN);
    per.div_ceil(align) * align
}

/// Runs `f(start, chunk)` over `out` in chunks of whole `align`-element rows, in
/// parallel when `out` is large.
pub(crate) fn for_chunks<O: Send>(
    out: &mut [O],
    align: usize,
    f: impl Fn(usize, &mut [O]) + Sync + Send,
) {
    if out.is_empty() {
        return;
    }
    if !parallel(out.len()) {
        f(0, out);
        return;
    }
    let len = chunk_len(out.len(), align);
    out.par_chunks_mut(len)
        .enumerate()
        .for_each(|(i, c)| f(i * len, c));
}

/// Runs `f(start, chunk)` over `out` where each item costs `work` elements, in parallel
/// when the total work is large.
pub(crate) fn for_items<O: Send>(
    out: &mut [O],
    work: usize,
    f: impl Fn(usize, &mut [O]) + Sync + Send,
) {
    let total = out.len().saturating_mul(work.max(1));
    if out.is_empty() {
        return;
    }
    if !parallel(total) || out.len() == 1 {
        f(0, out);
        return;
    }
    let len = chunk_len(total, 1)
        .div_ceil(work.max(1))
        .clamp(1, out.len());
    out.par_chunks_mut(len)
        .enumerate()
        .for_each(|(i, c)| f(i * len, c));
}

/// Runs `f(first_row, rows_out, rows_stats)` over row-major rows of `cols` elements of
/// `out` together with one `stats` entry per row, in parallel chunks of whole rows when
/// the work is large.
pub(crate) fn for_rows<O: Send, S: Send>(
    out: &mut [O],
    cols: usize,
    stats: &mut [S],
    f: impl Fn(usize, &mut [O], &mut [S]) + Sync + Send,
) {
    debug_assert_eq!(out.len(), stats.len() * cols);
    let rows = stats.len();
    if rows == 0 {
        return;
    }
    if cols == 0 || !parallel(rows * cols) {
        f(0, out, stats);
        return;
    }
    let per = chunk_len(rows * cols, cols) / cols;
    out.par_chunks_mut(per * cols)
        .zip(stats.par_chunks_mut(per))
        .enumerate()
        .for_each(|(i, (o, s))| f(i * per, o, s));
}

/// Shape and per-operand strides with size-1 dims dropped and mergeable neighbours
/// merged (at least one dim).
#[derive(Clone, Debug)]
pub(crate) struct Dims<const N: usize> {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: [Vec<usize>; N],
}

impl<const N: usize> Dims<N> {
    /// Coalesces `shape` walked with each operand's `strides`.
    pub(crate) fn new(shape: &[usize], strides: [&[usize]; N]) -> Self {
        let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
        let mut out_strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for d in 0..shape.len() {
            if shape[d] == 1 {
                continue;
            }
            let merge = match out_shape.last() {
                Some(_) => (0..N).all(|i| {
                    let prev = *out_strides[i].last().expect("same length");
                    prev == strides[i][d] * shape[d]
                }),
                None => false,
            };
            if merge {
                *out_shape.last_mut().expect("non-empty") *= shape[d];
                for i in 0..N {
                    *out_strides[i].last_mut().expect("non-empty") = strides[i][d];
                }
            } else {
                out_shape.push(shape[d]);
                for i in 0..N {
                    out_strides[i].push(strides[i][d]);
                }
            }
        }
        if out_shape.is_empty() {
            out_shape.push(1);
            for s in out_strides.iter_mut() {
                s.push(0);
            }
        }
        Dims {
            shape: out_shape,
            strides: out_strides,
        }
    }

    /// Number of elements.
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the innermost dim.
    pub(crate) fn inner(&self) -> usize {
        *self.shape.last().expect("at least one dim")
    }

    /// Stride of the innermost dim for operand `i`.
    pub(crate) fn inner_stride(&self, i: usize) -> usize {
        *self.strides[i].last().expect("at least one dim")
    }

    /// Calls `f(pos, offsets, len)` for every run of the innermost dim that overlaps the
    /// row-major element range `range`: `pos` is the run's first element index, `offsets`
    /// the storage index of that element for each operand (from `bases`), `len` its length.
    pub(crate) fn segments(
        &self,
        bases: [usize; N],
        range: std::ops::Range<usize>,
        mut f: impl FnMut(usize, [usize; N], usize),
    ) {
        if range.is_empty() {
            return;
        }
        let rank = self.shape.len();
        let inner = self.inner();
        // Multi-index of range.start.
        let mut idx = vec![0usize; rank];
        let mut rem = range.start;
        for d in (0..rank).rev() {
            idx[d] = rem % self.shape[d];
            rem /= self.shape[d];
        }
        let mut offs = bases;
        for (o, st) in offs.iter_mut().zip(&self.strides) {
            *o += idx.iter().zip(st).map(|(i, s)| i * s).sum::<usize>();
        }
        let mut pos = range.start;
        while pos < range.end {
            let len = (inner - idx[rank - 1]).min(range.end - pos);
            f(pos, offs, len);
            pos += len;
            if pos >= range.end {
                break;
            }
            // Move to the start of the next inner run.
            for (o, st) in offs.iter_mut().zip(&self.strides) {
                *o -= idx[rank - 1] * st[rank - 1];
            }
            idx[rank - 1] = 0;
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                for (o, st) in offs.iter_mut().zip(&self.strides) {
                    *o += st[d];
                }
                if idx[d] < self.shape[d] {
                    break;
                }
                for (o, st) in offs.iter_mut().zip(&self.strides) {
                    *o -= idx[d] * st[d];
                }
                idx[d] = 0;
            }
        }
    }
}

/// `f(&mut dst[i], src[i])` for every element of the view `layout` (same number of
/// elements as `dst`, row-major), in parallel for large views.
pub(crate) fn zip1<I: Copy + Sync, O: Send>(
    dst: &mut [O],
    src: &[I],
    layout: &Layout,
    f: impl Fn(&mut O, I) + Sync + Send,
) {
    debug_assert_eq!(dst.len(), layout.numel());
    let dims = Dims::new(layout.shape(), [layout.strides()]);
    let base = layout.offset();
    if dims.inner_stride(0) == 1 && dims.shape.len() == 1 {
        // Contiguous: one slice.
        let src = &src[base..base + dst.len()];
        for_chunks(dst, 1, |start, out| {
            let end = start + out.len();
            for (o, &x) in out.iter_mut().zip(&src[start..end]) {
                f(o, x);
            }
        });
        return;
    }
    let s = dims.inner_stride(0);
    for_chunks(dst, dims.inner(), |start, out| {
        dims.segments([base], start..start + out.len(), |pos, [o], len| {
            let out = &mut out[pos - start..pos - start + len];
            match s {
                1 => {
                    for (d, &x) in out.iter_mut().zip(&src[o..o + len]) {
                        f(d, x);
                    }
                }
                0 => {
                    let x = src[o];
                    for d in out.iter_mut() {
                        f(d, x);
                    }
                }
                _ => {
                    for (t, d) in out.iter_mut().enumerate() {
                        f(d, src[o + t * s]);
                    }
                }
            }
        });
    });
}

/// `f(&mut dst[i], a[i], b[i])` for every element of two views of `dst`'s shape (already
/// broadcast), in parallel for large views.
pub(crate) fn zip2<A: Copy + Sync, B: Copy + Sync, O: Send>(
    dst: &mut [O],
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(&mut O, A, B) + Sync + Send,
) {
    debug_assert_eq!(dst.len(), la.numel());
    debug_assert_eq!(la.shape(), lb.shape());
    let dims = Dims::new(la.shape(), [la.strides(), lb.strides()]);
    let (sa, sb) = (dims.inner_stride(0), dims.inner_stride(1));
    let bases = [la.offset(), lb.offset()];
    for_chunks(dst, dims.inner(), |start, out| {
        dims.segments(bases, start..start + out.len(), |pos, [oa, ob], len| {
            let out = &mut out[pos - start..pos - start + len];
            match (sa, sb) {
                (1, 1) => {
                    for ((d, &x), &y) in out.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..ob + len])
                    {
                        f(d, x, y);
                    }
                }
                (1, 0) => {
                    let y = b[ob];
                    for (d, &x) in out.iter_mut().zip(&a[oa..oa + len]) {
                        f(d, x, y);
                    }
                }
                (0, 1) => {
                    let x = a[oa];
                    for (d, &y) in out.iter_mut().zip(&b[ob..ob + len]) {
                        f(d, x, y);
                    }
                }
                _ => {
                    for (t, d) in out.iter_mut().enumerate() {
                        f(d, a[oa + t * sa], b[ob + t * sb]);
                    }
                }
            }
        });
    });
}

/// The elements of a view in row-major order, converted by `f`.
pub(crate) fn map1<I: Copy + Sync, O: Copy + Default + Send>(
    src: &[I],
    layout: &Layout,
    f: impl Fn(I) -> O + Sync + Send,
) -> Vec<O> {
    let mut out = vec![O::default(); layout.numel()];
    if layout.is_contiguous() {
        // A plain indexed loop over equal-length slices: the form the compiler vectorizes.
        let src = &src[layout.offset()..layout.offset() + out.len()];
        for_chunks(&mut out, 1, |start, out| {
            let src = &src[start..start + out.len()];
            for i in 0..out.len() {
                out[i] = f(src[i]);
            }
        });
        return out;
    }
    zip1(&mut out, src, layout, |o, x| *o = f(x));
    out
}

/// The view's elements as a contiguous slice: borrowed when already contiguous.
pub(crate) fn contiguous_cow<'a, T: Copy + Default + Send + Sync>(
    src: &'a [T],
    layout: &Layout,
) -> std::borrow::Cow<'a, [T]> {
    if layout.is_contiguous() {
        let start = layout.offset();
        std::borrow::Cow::Borrowed(&src[start..start + layout.numel()])
    } else {
        std::borrow::Cow::Owned(map1(src, layout, |x| x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_contiguous_and_broadcast_runs() {
        let d = Dims::new(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 0]]);
        assert_eq!(d.shape, vec![24]);
        let d = Dims::new(&[2, 3, 4], [&[12, 4, 1], &[0, 1, 0]]);
        assert_eq!(d.shape, vec![2, 3, 4]);
        let d = Dims::new(&[1, 1], [&[1, 1]]);
        assert_eq!((d.shape.clone(), d.strides[0].clone()), (vec![1], vec![0]));
    }

    #[test]
    fn segments_cover_a_range_of_a_transposed_view() {
        let l = Layout::contiguous(&[3, 5]).transpose(0, 1);
        let d = Dims::new(l.shape(), [l.strides()]);
        let mut got = Vec::new();
        d.segments([l.offset()], 2..11, |pos, [o], len| {
            for t in 0..len {
                got.push((pos + t, o + t * d.inner_stride(0)));
            }
        });
        let want: Vec<(usize, usize)> = l.indices().enumerate().skip(2).take(9).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn zip2_walks_broadcast_views_in_parallel_chunks() {
        let n = PAR_MIN * 2 + 7;
        let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let b = [10.0f64, 20.0];
        let la = Layout::contiguous(&[n, 1]).broadcast_to(&[n, 2]).unwrap();
        let lb = Layout::contiguous(&[2]).broadcast_to(&[n, 2]).unwrap();
        let mut out = vec![0.0; 2 * n];
        zip2(&mut out, &a, &la, &b, &lb, |o, x, y| *o = x + y);
        for i in 0..n {
            assert_eq!(out[2 * i], i as f64 + 10.0);
            assert_eq!(out[2 * i + 1], i as f64 + 20.0);
        }
    }
}
