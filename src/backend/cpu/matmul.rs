//! Matrix products through the `gemm` crate, which takes row and column strides, so
//! transposed and broadcast views need no copy.

use std::mem::MaybeUninit;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::backend::Products;
use crate::base::Result;
use crate::base::{DType, Layout, RawTensor};

use super::elem::{output, read, read2, CpuElem, Float};
use super::f16conv::Half;
use super::strided::{map1, Dims};
use super::CpuBackend;

/// Products of at least this many multiply-adds are split across the rayon threads.
const GEMM_PAR_MIN: usize = 1 << 18;

/// One matrix operand: storage, offset and strides (in elements) of rows and columns.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    offset: usize,
    rs: usize,
    cs: usize,
}

/// The shape of one product `[m, k] @ [k, n]`.
#[derive(Clone, Copy, Debug)]
struct Plan {
    m: usize,
    k: usize,
    n: usize,
}

/// Rows and columns of the parts a parallel product is split into are multiples of
/// these (whole microkernel tiles on AVX2 and AVX-512).
const SPLIT_ROWS: usize = 16;
const SPLIT_COLS: usize = 8;

/// gemm (0.18 and 0.19) has paths of its own for products of at most this many rows and
/// columns (depth blocks of at most 512 where the general path takes them from `k`) and
/// of at most [`GEMM_SMALL_AREA`] elements (dot products); their sums are ordered
/// differently, so no part of a split product may fall into them.
const GEMM_SMALL: usize = 64;
/// See [`GEMM_SMALL`].
const GEMM_SMALL_AREA: usize = 16 * 16;

/// A destination pointer shared by the threads that write disjoint parts of it.
#[derive(Clone, Copy)]
struct DstPtr<T>(*mut T);
// SAFETY: the parts written through it are disjoint (see `gemm_into`).
unsafe impl<T> Send for DstPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for DstPtr<T> {}

impl<T> DstPtr<T> {
    /// The pointer (a method, so that closures capture the `Send` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

/// `dst [m, n]` (contiguous: row-major, or column-major with `dst_col_major`) = `a @ b`.
/// Every element of `dst` is written and none is read, so it may be uninitialised.
///
/// With `parallel`, the product is split into one part per rayon thread along the
/// longer of `m` and `n` (each part's other operand is the smaller one, read by every
/// part), and each part runs single-threaded: one fork-join per product, where gemm's
/// own threading forks twice per depth block and packs a row-major left operand on one
/// thread. Outside its small-product paths (see [`GEMM_SMALL`]) gemm chooses its depth
/// blocks from `k` alone, and no part enters those paths unless the whole product does,
/// so a part sums each output element in the same order as the whole product: results
/// do not depend on the thread count (the tests compare 1, 2 and 3 threads bit for bit).
/// A product too narrow to split that way runs on one thread.
///
/// # Safety
/// Every element `offset + i*rs + j*cs` of `a` (`i < m`, `j < k`) and of `b` (`i < k`,
/// `j < n`) must lie inside its `data`; `dst` must be valid for writing `m * n` elements.
unsafe fn gemm_into<T: 'static + Copy + Send + Sync>(
    dst: *mut T,
    dst_col_major: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    p: Plan,
    one: T,
    parallel: bool,
) {
    let (dst_cs, dst_rs) = if dst_col_major { (p.m, 1) } else { (1, p.n) };
    let split_rows = p.m > p.n;
    let (len, other, align) = if split_rows {
        (p.m, p.n, SPLIT_ROWS)
    } else {
        (p.n, p.m, SPLIT_COLS)
    };
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // Every part keeps more than GEMM_SMALL of the split dim and more than
    // GEMM_SMALL_AREA elements, so none falls into one of gemm's paths for small
    // products (which order their sums differently) unless the whole product does.
    let min_part = (GEMM_SMALL + 1).max((GEMM_SMALL_AREA + 1).div_ceil(other.max(1)));
    let parts = threads.min(len / (min_part + align));
    if parts <= 1 {
        // SAFETY: the caller's contract.
        return unsafe { gemm_part(dst, (dst_rs, dst_cs), a, b, p, one) };
    }
    // Part `i` starts at `bound(i)`: balanced, on multiples of `align`; each part holds
    // at least `len / parts - align >= min_part` of the split dim.
    let bound = |i: usize| {
        if i == parts {
            len
        } else {
            i * len / parts / align * align
        }
    };
    let dst = DstPtr(dst);
    (0..parts).into_par_iter().for_each(|i| {
        let (start, end) = (bound(i), bound(i + 1));
        let (a, b, to, part) = if split_rows {
            let a = Mat {
                offset: a.offset + start * a.rs,
                ..a
            };
            let m = end - start;
            (a, b, start * dst_rs, Plan { m, ..p })
        } else {
            let b = Mat {
                offset: b.offset + start * b.cs,
                ..b
            };
            let n = end - start;
            (a, b, start * dst_cs, Plan { n, ..p })
        };
        // SAFETY: part `i` reads rows `start..end` of `a` (or columns of `b`), inside the
        // caller's bounds, and writes only those rows (columns) of `dst`: the parts are
        // disjoint and together cover `dst`.
        unsafe { gemm_part(dst.get().add(to), (dst_rs, dst_cs), a, b, part, one) };
    });
}

/// `dst = a @ b` on the calling thread, `dst` with row and column strides `dst_rs`,
/// `dst_cs` (elements).
///
/// # Safety
/// As [`gemm_into`], and `dst` valid for writing every `i * dst_rs + j * dst_cs`.
unsafe fn gemm_part<T: 'static + Copy>(
    dst: *mut T,
    (dst_rs, dst_cs): (usize, usize),
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    p: Plan,
    one: T,
) {
    // One call of either gemm release (the same signature and contract in both).
    macro_rules! call {
        ($gemm:path, $par:expr) => {
            $gemm(
                p.m,
                p.n,
                p.k,
                dst,
                dst_cs as isize,
                dst_rs as isize,
                false,
                a.data.as_ptr().add(a.offset),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(b.offset),
                b.cs as isize,
                b.rs as isize,
                one,
                one,
                false,
                false,
                false,
                $par,
            )
        };
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(super::isa::cap(), Ok(super::isa::Cap::Avx2)) {
        return call!(gemm_avx2::gemm, gemm_avx2::Parallelism::None);
    }
    call!(gemm::gemm, gemm::Parallelism::None);
}

/// Offset of batch `i` of a view whose leading `batch_shape` dims have `strides`.
fn batch_offset(i: usize, batch_shape: &[usize], strides: &[usize], base: usize) -> usize {
    let mut rem = i;
    let mut off = base;
    for d in (0..batch_shape.len()).rev() {
        off += (rem % batch_shape[d]) * strides[d];
        rem /= batch_shape[d];
    }
    off
}

/// Rows of `a` from which a column-major `b` is first copied to row-major: gemm runs
/// about 2.7 times slower on a column-major right operand (measured on 64x512x512 f32),
/// and the copy costs `1/m` of the product.
const REPACK_MIN_ROWS: usize = 8;

/// Tile edge of the blocked transposing copy.
const TILE: usize = 32;

/// The `r x c` matrix at `offset` with strides `rs`, `cs`, copied to row-major order
/// tile by tile (a tile's source lines stay in L1 while each row of it is written); a
/// large one in bands of rows across the rayon threads, each element written through the
/// epilogue `epi` (a bias row and ReLU applied in the same pass).
///
/// # Panics
/// When an element of the matrix lies outside `data` (checked once, before the copy).
fn repack_mat<T: GemmElem>(
    data: &[T],
    offset: usize,
    (r, c): (usize, usize),
    (rs, cs): (usize, usize),
    epi: Epilogue<'_, T>,
) -> Vec<T> {
    if r == 0 || c == 0 {
        return Vec::new();
    }
    // Checked arithmetic: a wrapped sum could pass the bound and the band copies'
    // reads are unchecked.
    let last = ((r - 1).checked_mul(rs))
        .zip((c - 1).checked_mul(cs))
        .and_then(|(a, b)| offset.checked_add(a)?.checked_add(b));
    assert!(
        last.is_some_and(|l| l < data.len()),
        "repack of a view outside its storage"
    );
    assert!(
        epi.row.is_none_or(|v| v.len() == c),
        "a bias row of the wrong length"
    );
    let mut dst = uninit(r * c);
    let threads = rayon::current_num_threads();
    if r * c >= super::strided::PAR_MIN && threads > 1 {
        let band = r.div_ceil(threads).next_multiple_of(TILE);
        dst.par_chunks_mut(band * c)
            .enumerate()
            .for_each(|(i, out)| {
                // SAFETY: band `i` holds rows of the matrix checked above.
                unsafe { copy_band(data, offset + i * band * rs, (rs, cs), (c, epi), out) }
            });
    } else {
        // SAFETY: the whole matrix, checked above.
        unsafe { copy_band(data, offset, (rs, cs), (c, epi), &mut dst) };
    }
    // SAFETY: the bands cover every one of the r * c elements.
    unsafe { assume_init(dst) }
}

/// The `out.len() / c` rows of `c` elements starting at `offset` (strides `rs`, `cs`),
/// written row-major into `out` through `epi` (column `j` of a row gets `epi.apply(j, x)`;
/// a bias row has `c` values).
///
/// # Safety
/// Every element `offset + i * rs + j * cs` (`i < out.len() / c`, `j < c`) must lie
/// inside `data`.
unsafe fn copy_band<T: GemmElem>(
    data: &[T],
    offset: usize,
    (rs, cs): (usize, usize),
    (c, epi): (usize, Epilogue<'_, T>),
    out: &mut [MaybeUninit<T>],
) {
    let r = out.len() / c;
    let (src, dst) = (data.as_ptr(), out.as_mut_ptr());
    for i0 in (0..r).step_by(TILE) {
        for j0 in (0..c).step_by(TILE) {
            let cols = j0..(j0 + TILE).min(c);
            for i in i0..(i0 + TILE).min(r) {
                let from = offset + i * rs;
                // SAFETY (both loops): the element lies inside `data` (the caller's
                // contract), and `i * c + j < r * c <= out.len()`.
                if epi.is_none() {
                    for j in cols.clone() {
                        unsafe { (*dst.add(i * c + j)).write(*src.add(from + j * cs)) };
                    }
                } else {
                    for j in cols.clone() {
                        let x = unsafe { *src.add(from + j * cs) };
                        unsafe { (*dst.add(i * c + j)).write(epi.apply(j, x)) };
                    }
                }
            }
        }
    }
}

/// The matrices of a view `[.., r, c]` copied to row-major order.
fn repack<T: GemmElem>(data: &[T], l: &Layout) -> Vec<T> {
    let rank = l.rank();
    let (r, c) = (l.shape()[rank - 2], l.shape()[rank - 1]);
    let (rs, cs) = (l.strides()[rank - 2], l.strides()[rank - 1]);
    let batch_shape = &l.shape()[..rank - 2];
    let batch: usize = batch_shape.iter().product();
    let mut out = Vec::with_capacity(batch * r * c);
    for p in 0..batch {
        let base = batch_offset(p, batch_shape, l.strides(), l.offset());
        out.extend(repack_mat(data, base, (r, c), (rs, cs), Epilogue::NONE));
    }
    out
}

/// Whether `b` is 2-D and a's batch dims fold into its rows (one tall product).
fn folds(la: &Layout, rb: usize) -> bool {
    let ra = la.rank();
    rb == 2
        && Dims::new(&la.shape()[..ra - 1], [&la.strides()[..ra - 1]])
            .shape
            .len()
            == 1
}

/// The shape of one product of the views `a [.., m, k]` and `b [.., k, n]`.
fn plan_of(la: &Layout, lb: &Layout) -> Plan {
    let (ra, rb) = (la.rank(), lb.rank());
    Plan {
        m: la.shape()[ra - 2],
        k: la.shape()[ra - 1],
        n: lb.shape()[rb - 1],
    }
}

/// Columns from which a column-major `b` is gemm's slow case. A narrower one goes to
/// gemm as it lies: packing a few columns costs less than a copy (the quickstart's
/// 64x512x10 forward took 9 us direct against 14 us copied first under AVX2, 12 against
/// 20 us with AVX-512, on 2 cores).
const SLOW_COLUMN_MAJOR_MIN_N: usize = 16;

/// Whether `b` is column-major with `k > 1` and at least [`SLOW_COLUMN_MAJOR_MIN_N`]
/// columns: gemm's slow case.
fn column_major<T>(b: &Mat<'_, T>, p: Plan) -> bool {
    p.k > 1 && p.n >= SLOW_COLUMN_MAJOR_MIN_N && b.rs == 1 && b.cs != 1
}

/// `epi(a @ b)` for a column-major `b`, computed as a column-major product (gemm's fast
/// case once `a` is column-major too) and transposed into a row-major result, the
/// epilogue applied in that copy. Copies `m * (k + n)` elements where repacking `b` would
/// copy `k * n`.
fn column_major_product<T: GemmElem>(
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    p: Plan,
    (one, parallel): (T, bool),
    epi: Epilogue<'_, T>,
) -> Vec<T> {
    let owned;
    let a = if a.rs == 1 {
        a
    } else {
        owned = repack_mat(a.data, a.offset, (p.k, p.m), (a.cs, a.rs), Epilogue::NONE);
        Mat {
            data: &owned,
            offset: 0,
            rs: 1,
            cs: p.m,
        }
    };
    let mut tmp = uninit(p.m * p.n);
    // SAFETY: `a` is either checked storage or the copy just made; `b` as in the caller.
    unsafe { gemm_into(tmp.as_mut_ptr().cast(), true, a, b, p, one, parallel) };
    // SAFETY: the product wrote every element.
    let tmp = unsafe { assume_init(tmp) };
    repack_mat(&tmp, 0, (p.m, p.n), (1, p.m), epi)
}

/// An element type gemm multiplies.
trait GemmElem:
    'static + Copy + Default + PartialOrd + Send + Sync + std::ops::Add<Output = Self>
{
}
impl<T> GemmElem for T where
    T: 'static + Copy + Default + PartialOrd + Send + Sync + std::ops::Add<Output = T>
{
}

/// One operand of a product: its storage slice and its view's layout.
type Operand<'a, T> = (&'a [T], &'a Layout);

/// `epi(a @ b)` (a bias row of `n` values added to every row, then ReLU, as `epi` says)
/// for gemm's element types, from storage slices and layouts.
fn product<T: GemmElem>(
    (sa, la): Operand<'_, T>,
    (sb, lb): Operand<'_, T>,
    one: T,
    epi: Epilogue<'_, T>,
) -> Vec<T> {
    let (p, rb) = (plan_of(la, lb), lb.rank());
    let b = Mat {
        data: sb,
        offset: lb.offset(),
        rs: lb.strides()[rb - 2],
        cs: lb.strides()[rb - 1],
    };
    if column_major(&b, p) && p.m >= REPACK_MIN_ROWS && !folds(la, rb) {
        let b = repack(sb, lb);
        return product_strided((sa, la), (&b, &Layout::contiguous(lb.shape())), one, epi);
    }
    product_strided((sa, la), (sb, lb), one, epi)
}

/// `epi(a @ b)` straight from the strided views.
fn product_strided<T: GemmElem>(
    (sa, la): Operand<'_, T>,
    (sb, lb): Operand<'_, T>,
    one: T,
    epi: Epilogue<'_, T>,
) -> Vec<T> {
    let (ra, rb) = (la.rank(), lb.rank());
    let Plan { m, k, n } = plan_of(la, lb);
    let batch_shape = &la.shape()[..ra - 2];
    let batch: usize = batch_shape.iter().product();
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return epi.applied(vec![T::default(); len], n);
    }
    let (ast, bst) = (la.strides(), lb.strides());
    let bmat = |off| Mat {
        data: sb,
        offset: off,
        rs: bst[rb - 2],
        cs: bst[rb - 1],
    };
    let amat = |off, rs| Mat {
        data: sa,
        offset: off,
        rs,
        cs: ast[ra - 1],
    };
    let par_of = |p: Plan| p.m * p.n * p.k >= GEMM_PAR_MIN && rayon::current_num_threads() > 1;
    // A shared 2-D b and batch dims that fold into a's rows: one tall product.
    if folds(la, rb) {
        let rows = Dims::new(&la.shape()[..ra - 1], [&ast[..ra - 1]]);
        let p = Plan { m: batch * m, k, n };
        let (a, b) = (amat(la.offset(), rows.strides[0][0]), bmat(lb.offset()));
        if column_major(&b, p) && p.m >= REPACK_MIN_ROWS {
            let a_copy = if a.rs == 1 { 0 } else { p.m * k };
            if p.m * n + a_copy < k * n {
                return column_major_product(a, b, p, (one, par_of(p)), epi);
            }
            let b = repack(sb, lb);
            return product_strided((sa, la), (&b, &Layout::contiguous(lb.shape())), one, epi);
        }
        let mut out = uninit(len);
        // SAFETY: the layouts were checked to lie inside their storage (`read2`), and
        // the folded rows walk exactly a's elements; `out` holds m * n elements.
        unsafe { gemm_into(out.as_mut_ptr().cast(), false, a, b, p, one, par_of(p)) };
        // SAFETY: the product wrote every element.
        return epi.applied(unsafe { assume_init(out) }, n);
    }
    let p = Plan { m, k, n };
    let one_product = |i: usize, dst: &mut [MaybeUninit<T>], par| {
        let ao = batch_offset(i, batch_shape, ast, la.offset());
        let bo = if rb == 2 {
            lb.offset()
        } else {
            batch_offset(i, batch_shape, bst, lb.offset())
        };
        let (a, b) = (amat(ao, ast[ra - 2]), bmat(bo));
        // SAFETY: as above; each batch's matrix lies inside the checked view, and `dst`
        // holds m * n elements.
        unsafe { gemm_into(dst.as_mut_ptr().cast(), false, a, b, p, one, par) };
    };
    let mut out = uninit(len);
    if batch > 1 && batch * m * n * k >= GEMM_PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| one_product(i, dst, false));
    } else {
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            one_product(i, dst, par_of(p));
        }
    }
    // SAFETY: every batch's product wrote its m * n elements.
    epi.applied(unsafe { assume_init(out) }, n)
}

/// What a product's elements get on their way out: a bias row added (`row[j]` to column
/// `j`), then ReLU. Either has the bits of the separate op after the product.
#[derive(Clone, Copy)]
struct Epilogue<'a, T> {
    row: Option<&'a [T]>,
    relu: bool,
}

impl<T: GemmElem> Epilogue<'_, T> {
    /// Nothing: the product as it is.
    const NONE: Self = Epilogue {
        row: None,
        relu: false,
    };

    fn is_none(&self) -> bool {
        self.row.is_none() && !self.relu
    }

    /// Element `x` of column `j`. ReLU as the elementwise op: `x < 0` gives 0, anything
    /// else (NaN and -0 included) stays.
    #[inline(always)]
    fn apply(&self, j: usize, x: T) -> T {
        let x = match self.row {
            Some(row) => x + row[j],
            None => x,
        };
        if self.relu && x < T::default() {
            T::default()
        } else {
            x
        }
    }

    /// `out` (rows of `n` elements) with the epilogue applied in place.
    fn applied(&self, mut out: Vec<T>, n: usize) -> Vec<T> {
        if self.is_none() || n == 0 {
            return out;
        }
        let run = |rows: &mut [T]| {
            for r in rows.chunks_mut(n) {
                r.iter_mut()
                    .enumerate()
                    .for_each(|(j, o)| *o = self.apply(j, *o));
            }
        };
        if out.len() >= super::strided::PAR_MIN && rayon::current_num_threads() > 1 {
            let rows = super::strided::PAR_MIN.div_ceil(n);
            out.par_chunks_mut(rows * n).for_each(run);
        } else {
            run(&mut out);
        }
        out
    }
}

/// An output buffer of `len` elements for gemm to write (no zeroing pass).
fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    v.resize_with(len, MaybeUninit::uninit);
    v
}

/// The buffer as initialised elements.
///
/// # Safety
/// Every element of `v` must have been written.
unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<T> has T's layout; the caller guarantees initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// The element types gemm multiplies directly, and f16 through f32.
trait MatmulElem: Float {
    /// `a @ b` as a new contiguous vector.
    fn matmul(a: &RawTensor, b: &RawTensor) -> Result<Vec<Self>>;
}

macro_rules! direct {
    ($t:ty) => {
        impl MatmulElem for $t {
            fn matmul(a: &RawTensor, b: &RawTensor) -> Result<Vec<Self>> {
                read2::<$t, _>("matmul", a, b, |sa, la, sb, lb| {
                    product((sa, la), (sb, lb), 1.0, Epilogue::NONE)
                })
            }
        }
    };
}

direct!(f32);
direct!(f64);

/// `MatmulElem` for a 16-bit float.
macro_rules! half_matmul {
    ($h:ty) => {
        impl MatmulElem for $h {
            /// f16 and bf16: widens both operands to f32 (so every sum accumulates in f32) and rounds the
            /// product once. The storage range a view spans is widened as it lies (F16C, eight at
            /// a time), so a transposed weight keeps its strides instead of being gathered.
            fn matmul(a: &RawTensor, b: &RawTensor) -> Result<Vec<Self>> {
                let widen = |t: &RawTensor| {
                    read::<$h, _>("matmul", t, |s, l| {
                        let (start, end) = (l.offset(), l.storage_extent().max(l.offset()));
                        if end - start > 2 * l.numel() {
                            // A sparse view (a slice of a larger matrix): gather it instead.
                            return (
                                map1(s, l, <$h as Half>::to_f32),
                                Layout::contiguous(l.shape()),
                            );
                        }
                        let w = par_convert(&s[start..end], <$h as Half>::widen);
                        let shifted = Layout::new(l.shape().to_vec(), l.strides().to_vec(), 0);
                        (w, shifted)
                    })
                };
                let ((wa, la), (wb, lb)) = (widen(a)?, widen(b)?);
                let v = product((&wa, &la), (&wb, &lb), 1.0f32, Epilogue::NONE);
                Ok(par_convert(&v, <$h as Half>::narrow))
            }
        }
    };
}

/// `src` converted by `convert(src, dst)` (equal lengths) into a new vector, in chunks
/// across the rayon threads when it is long (a weight's widening would otherwise run on
/// one core while the others wait for the product). Each chunk of the output is zeroed
/// right before its conversion, by the thread that converts it.
fn par_convert<S: Sync, D: Copy + Default + Send>(
    src: &[S],
    convert: fn(&[S], &mut [D]),
) -> Vec<D> {
    const CHUNK: usize = 1 << 14;
    let mut out = uninit::<D>(src.len());
    let run = |s: &[S], d: &mut [MaybeUninit<D>]| {
        d.fill(MaybeUninit::new(D::default()));
        // SAFETY: every element of `d` was just written; MaybeUninit<D> has D's layout.
        let d = unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<D>(), d.len()) };
        convert(s, d);
    };
    if src.len() >= super::strided::PAR_MIN && rayon::current_num_threads() > 1 {
        src.par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .for_each(|(s, d)| run(s, d));
    } else {
        run(src, &mut out);
    }
    // SAFETY: the chunks cover every element, each written by `run`.
    unsafe { assume_init(out) }
}

half_matmul!(f16);
half_matmul!(bf16);

/// The shape of `a @ b`; an unknown GRADSTEP_CPU_ISA is an error here, before any
/// product runs.
fn out_shape(a: &RawTensor, b: &RawTensor) -> Result<Vec<usize>> {
    super::isa::cap()?;
    let ra = a.rank();
    let mut shape = a.shape()[..ra - 1].to_vec();
    shape.push(b.shape()[b.rank() - 1]);
    Ok(shape)
}

fn matmul_t<T: MatmulElem + CpuElem>(a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
    let shape = out_shape(a, b)?;
    Ok(output(T::matmul(a, b)?, &shape))
}

/// `a @ b (+ bias) (then ReLU)` for gemm's own element types, the epilogue applied as
/// the product is laid out (`bias` is a row broadcast to the product's shape).
fn matmul_epilogue_t<T: GemmElem + CpuElem>(
    (a, b): (&RawTensor, &RawTensor),
    bias: Option<&RawTensor>,
    relu: bool,
    one: T,
) -> Result<RawTensor> {
    let shape = out_shape(a, b)?;
    let n = shape[shape.len() - 1];
    let row = bias
        .map(|bias| {
            read::<T, _>("matmul", bias, |s, l| {
                let stride = l.strides()[l.rank() - 1];
                (0..n)
                    .map(|j| s[l.offset() + j * stride])
                    .collect::<Vec<T>>()
            })
        })
        .transpose()?;
    let epi = Epilogue {
        row: row.as_deref(),
        relu,
    };
    let v = read2::<T, _>("matmul", a, b, |sa, la, sb, lb| {
        product((sa, la), (sb, lb), one, epi)
    })?;
    Ok(output(v, &shape))
}

impl Products for CpuBackend {
    fn matmul(&self, a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
        super::elem::with_float!(a.dtype(), "matmul", |T| matmul_t::<T>(a, b))
    }

    /// f32 and f64 add the bias and apply ReLU inside the product's passes; f16 and bf16
    /// round the product before the add, so they run the separate ops.
    fn matmul_epilogue(
        &self,
        (a, b): (&RawTensor, &RawTensor),
        bias: Option<&RawTensor>,
        relu: bool,
    ) -> Result<RawTensor> {
        match a.dtype() {
            DType::F32 => matmul_epilogue_t::<f32>((a, b), bias, relu, 1.0),
            DType::F64 => matmul_epilogue_t::<f64>((a, b), bias, relu, 1.0),
            _ => crate::backend::primitives::matmul_then_epilogue(self, (a, b), bias, relu),
        }
    }
}
