//! The CPU backend's primitives against plain f64 loops written here, and against the
//! PyTorch cases in `tests/data/ops.json`.

use crate::backend::{BinaryOp, CrossEntropyOpts, Reduction, UnaryOp};
use crate::tensor::broadcast_shapes;
use crate::tensor::prim as dispatch;
use crate::{DType, Device, Tensor};

const FLOATS: [DType; 4] = [DType::F16, DType::BF16, DType::F32, DType::F64];

/// Deterministic values in `[lo, hi)`.
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn tensor(data: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f64s(data, shape, dtype, Device::Cpu).unwrap()
}

/// A tensor of random values and those values as the tensor holds them.
fn random(shape: &[usize], seed: u64, lo: f64, hi: f64, dtype: DType) -> (Tensor, Vec<f64>) {
    let n = shape.iter().product();
    let t = tensor(&values(n, seed, lo, hi), shape, dtype);
    let v = t.to_vec_f64().unwrap();
    (t, v)
}

/// Relative and absolute tolerance of one rounding in `dtype` after exact math.
fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (2e-3, 1e-4),
        DType::BF16 => (1.6e-2, 1e-3),
        DType::F32 => (2e-6, 1e-7),
        _ => (1e-12, 1e-14),
    }
}

/// Checks `got` against `want`; `mag[i]` is the size of the terms behind `want[i]`
/// (|want| for elementwise results, the sum of |terms| for sums).
fn assert_close_mag(what: &str, dtype: DType, got: &[f64], want: &[f64], mag: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (rtol, atol) = tol(dtype);
    for i in 0..got.len() {
        let ok = (got[i] - want[i]).abs() <= atol + rtol * mag[i]
            || (got[i].is_nan() && want[i].is_nan());
        assert!(
            ok,
            "{what} [{dtype}]: element {i}: got {}, want {}",
            got[i], want[i]
        );
    }
}

/// [`assert_close_mag`] for the values of a tensor.
fn assert_tensor_close_mag(what: &str, dtype: DType, got: &Tensor, want: &[f64], mag: &[f64]) {
    assert_close_mag(what, dtype, &got.to_vec_f64().unwrap(), want, mag);
}

fn assert_close(what: &str, dtype: DType, got: &[f64], want: &[f64]) {
    let mag: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    assert_close_mag(what, dtype, got, want, &mag);
}

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse; integrate the series instead.
    let mut sum = x;
    let mut term = x;
    let x2 = x * x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x2 / n;
        sum += term / (2.0 * n + 1.0);
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn unary_ref(op: UnaryOp, x: f64) -> f64 {
    let phi = |x: f64| 0.5 * (1.0 + erf(x / 2f64.sqrt()));
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let inner = |x: f64| (k * (x + 0.044715 * x * x * x)).tanh();
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Gelu => x * phi(x),
        UnaryOp::GeluTanh => 0.5 * x * (1.0 + inner(x)),
        UnaryOp::Step => (x > 0.0) as i32 as f64,
        UnaryOp::GeluGrad => {
            phi(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        UnaryOp::GeluTanhGrad => {
            let t = inner(x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        }
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Square => x * x,
        UnaryOp::Abs => x.abs(),
    }
}

const UNARY: [UnaryOp; 15] = UnaryOp::ALL;

#[test]
fn unary_ops_match_f64_loops() {
    for dtype in FLOATS {
        for (i, &n) in [1usize, 7, 33, 1031, 40_000].iter().enumerate() {
            for op in UNARY {
                let (lo, hi) = match op {
                    UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Recip => (0.1, 4.0),
                    UnaryOp::Exp => (-6.0, 6.0),
                    _ => (-5.0, 5.0),
                };
                let (x, xv) = random(&[n], 100 + i as u64, lo, hi, dtype);
                let y = dispatch::unary(op, &x).unwrap();
                assert_eq!((y.shape(), y.dtype()), (&[n][..], dtype));
                let want: Vec<f64> = xv.iter().map(|&v| unary_ref(op, v)).collect();
                // The GELU family computes `1 + erf` or `1 + tanh`, which cancels for
                // negative x: its rounding is relative to 1 + |x|, as in PyTorch.
                let gelu = matches!(
                    op,
                    UnaryOp::Gelu | UnaryOp::GeluTanh | UnaryOp::GeluGrad | UnaryOp::GeluTanhGrad
                );
                let floor = |x: f64| if gelu { 1.0 + x.abs() } else { 1e-3 };
                let mag: Vec<f64> = want
                    .iter()
                    .zip(&xv)
                    .map(|(w, &x)| w.abs().max(floor(x)))
                    .collect();
                assert_tensor_close_mag(&format!("{op:?} n={n}"), dtype, &y, &want, &mag);
            }
        }
    }
}

#[test]
fn relu_and_step_at_zero_and_nan() {
    let x = tensor(&[0.0, -0.0, f64::NAN, -1.0, 2.0], &[5], DType::F32);
    let r = dispatch::unary(UnaryOp::Relu, &x)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_eq!((r[0], r[3], r[4]), (0.0, 0.0, 2.0));
    assert!(r[2].is_nan());
    let s = dispatch::unary(UnaryOp::Step, &x)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_eq!((s[0], s[1], s[3], s[4]), (0.0, 0.0, 0.0, 1.0));
}

/// Row-major index of `out_idx` in a tensor of `shape` broadcast to `out_shape`.
fn broadcast_index(out_idx: usize, out_shape: &[usize], shape: &[usize]) -> usize {
    let mut rem = out_idx;
    let mut idx = 0;
    let mut stride = 1;
    let pad = out_shape.len() - shape.len();
    for d in (0..out_shape.len()).rev() {
        let i = rem % out_shape[d];
        rem /= out_shape[d];
        if d >= pad {
            let s = shape[d - pad];
            if s != 1 {
                idx += i * stride;
            }
            stride *= s;
        }
    }
    idx
}

#[test]
fn binary_ops_broadcast_like_loops() {
    // (a, b, the broadcast shape)
    let pairs: [(&[usize], &[usize], &[usize]); 9] = [
        (&[3, 4], &[4], &[3, 4]),
        (&[2, 1, 4], &[3, 1], &[2, 3, 4]),
        (&[4, 1], &[1, 5], &[4, 5]),
        (&[3, 4], &[], &[3, 4]),
        (&[], &[5], &[5]),
        (&[65, 33], &[65, 33], &[65, 33]),
        (&[300, 200], &[200], &[300, 200]),
        (&[300, 1], &[1, 200], &[300, 200]),
        (&[7, 1, 33], &[7, 5, 1], &[7, 5, 33]),
    ];
    let ops = BinaryOp::ALL;
    for dtype in FLOATS {
        for (i, &(sa, sb, shape)) in pairs.iter().enumerate() {
            let (a, av) = random(sa, 2 * i as u64, -2.0, 2.0, dtype);
            // Division keeps b away from 0; the threshold needs both signs.
            let positive = random(sb, 2 * i as u64 + 1, 0.5, 3.0, dtype);
            let signed = random(sb, 2 * i as u64 + 1, -3.0, 3.0, dtype);
            assert_eq!(broadcast_shapes("binary", sa, sb).unwrap(), shape);
            for op in ops {
                let (b, bv) = if op == BinaryOp::ThresholdBackward {
                    &signed
                } else {
                    &positive
                };
                let y = dispatch::binary(op, &a, b).unwrap();
                assert_eq!(y.shape(), shape);
                let n: usize = shape.iter().product();
                let want: Vec<f64> = (0..n)
                    .map(|j| {
                        let (x, z) = (
                            av[broadcast_index(j, shape, sa)],
                            bv[broadcast_index(j, shape, sb)],
                        );
                        match op {
                            BinaryOp::Add => x + z,
                            BinaryOp::Sub => x - z,
                            BinaryOp::Mul => x * z,
                            BinaryOp::Div => x / z,
                            BinaryOp::ThresholdBackward => {
                                if z <= 0.0 {
                                    0.0
                                } else {
                                    x
                                }
                            }
                        }
                    })
                    .collect();
                // Sums and differences round relative to the operands.
                let mag: Vec<f64> = (0..n)
                    .map(|j| {
                        av[broadcast_index(j, shape, sa)].abs()
                            + bv[broadcast_index(j, shape, sb)].abs()
                    })
                    .map(|m| {
                        if matches!(op, BinaryOp::Add | BinaryOp::Sub) {
                            m
                        } else {
                            0.0
                        }
                    })
                    .zip(&want)
                    .map(|(m, w)| m.max(w.abs()))
                    .collect();
                assert_tensor_close_mag(&format!("{op:?} {sa:?} {sb:?}"), dtype, &y, &want, &mag);
            }
        }
    }
}

#[test]
fn binary_and_unary_read_transposed_and_expanded_views() {
    for dtype in FLOATS {
        for &(r, c) in &[(7usize, 33usize), (300, 200)] {
            let (a, av) = random(&[r, c], 5, -1.0, 1.0, dtype);
            let at = a.transpose(0, 1).unwrap();
            let (b, bv) = random(&[c, r], 6, -1.0, 1.0, dtype);
            let y = dispatch::binary(BinaryOp::Mul, &at, &b)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let want: Vec<f64> = (0..c * r)
                .map(|k| av[(k % r) * c + k / r] * bv[k])
                .collect();
            assert_close(&format!("transposed mul {r}x{c}"), dtype, &y, &want);
            let e = dispatch::unary(UnaryOp::Exp, &at)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let want: Vec<f64> = (0..c * r).map(|k| av[(k % r) * c + k / r].exp()).collect();
            assert_close(&format!("transposed exp {r}x{c}"), dtype, &e, &want);
            let (col, cv) = random(&[r, 1], 7, -1.0, 1.0, dtype);
            let ex = col.expand(&[r, c]).unwrap();
            let s = dispatch::affine(&ex, 2.0, 0.5)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let want: Vec<f64> = (0..r * c).map(|k| cv[k / c] * 2.0 + 0.5).collect();
            let mag: Vec<f64> = want.iter().map(|w| w.abs() + 0.5).collect();
            assert_close_mag("affine of an expanded view", dtype, &s, &want, &mag);
        }
    }
}

/// Sum over `dims` of a contiguous tensor, with magnitudes.
fn sum_ref(v: &[f64], shape: &[usize], dims: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if dims.contains(&d) { 1 } else { s })
        .collect();
    let n_out: usize = out_shape.iter().product();
    let (mut out, mut mag) = (vec![0.0; n_out], vec![0.0; n_out]);
    for (i, &x) in v.iter().enumerate() {
        let mut rem = i;
        let mut o = 0;
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            let k = rem % shape[d];
            rem /= shape[d];
            if !dims.contains(&d) {
                o += k * stride;
            }
            stride *= out_shape[d];
        }
        out[o] += x;
        mag[o] += x.abs();
    }
    (out, mag)
}

#[test]
fn sum_dims_matches_loops() {
    let cases: [(&[usize], &[usize]); 9] = [
        (&[7], &[0]),
        (&[3, 4, 5], &[1]),
        (&[3, 4, 5], &[0, 2]),
        (&[3, 4, 5], &[0, 1, 2]),
        (&[1000, 33], &[0]),
        (&[1000, 33], &[1]),
        (&[65, 1000], &[0, 1]),
        (&[300, 200], &[0]),
        (&[2, 1, 3], &[1]),
    ];
    for dtype in FLOATS {
        for (i, (shape, dims)) in cases.iter().enumerate() {
            let (x, xv) = random(shape, 40 + i as u64, -1.0, 1.0, dtype);
            let (want, mag) = sum_ref(&xv, shape, dims);
            for keepdim in [true, false] {
                let y = dispatch::sum_dims(&x, dims, keepdim).unwrap();
                let expect: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .filter_map(|(d, &s)| match (dims.contains(&d), keepdim) {
                        (true, true) => Some(1),
                        (true, false) => None,
                        _ => Some(s),
                    })
                    .collect();
                assert_eq!(y.shape(), &expect[..]);
                assert_tensor_close_mag(&format!("sum {shape:?} {dims:?}"), dtype, &y, &want, &mag);
            }
            // The same sum over a transposed view.
            if shape.len() == 2 {
                let xt = x.transpose(0, 1).unwrap();
                let tdims: Vec<usize> = dims.iter().map(|&d| 1 - d).rev().collect();
                let y = dispatch::sum_dims(&xt, &tdims, true).unwrap();
                // The kept dim holds the same values in the same order.
                let got = y.to_vec_f64().unwrap();
                assert_close_mag(
                    &format!("sum of transposed {shape:?}"),
                    dtype,
                    &got,
                    &want,
                    &mag,
                );
            }
        }
    }
}

/// `a [b, m, k] @ b [b or 1, k, n]` in f64, with magnitudes.
fn matmul_ref(
    a: &[f64],
    b: &[f64],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    shared_b: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut mag) = (vec![0.0; batch * m * n], vec![0.0; batch * m * n]);
    for p in 0..batch {
        let bo = if shared_b { 0 } else { p * k * n };
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    let v = a[p * m * k + i * k + t] * b[bo + t * n + j];
                    out[p * m * n + i * n + j] += v;
                    mag[p * m * n + i * n + j] += v.abs();
                }
            }
        }
    }
    (out, mag)
}

#[test]
fn matmul_matches_loops_for_odd_sizes_batches_and_views() {
    let sizes = [1usize, 7, 33, 65];
    for dtype in FLOATS {
        for &m in &sizes {
            for &k in &sizes {
                for &n in &[1usize, 33, 65] {
                    let (a, av) = random(&[m, k], (m * 100 + k) as u64, -1.0, 1.0, dtype);
                    let (b, bv) = random(&[k, n], (k * 100 + n) as u64, -1.0, 1.0, dtype);
                    let (want, mag) = matmul_ref(&av, &bv, 1, m, k, n, true);
                    let y = dispatch::matmul(&a, &b).unwrap();
                    assert_eq!(y.shape(), &[m, n]);
                    assert_tensor_close_mag(&format!("matmul {m}x{k}x{n}"), dtype, &y, &want, &mag);
                    // Transposed operands: (b^T)^T, as backward passes them.
                    let (at, bt) = (transposed(&av, m, k, dtype), transposed(&bv, k, n, dtype));
                    let y = dispatch::matmul(&at, &bt).unwrap();
                    assert_tensor_close_mag(
                        &format!("matmul^T {m}x{k}x{n}"),
                        dtype,
                        &y,
                        &want,
                        &mag,
                    );
                }
            }
        }
        // A linear layer's forward: row-major x [16, 200] @ W^T, W [300, 200].
        let (x, xv) = random(&[16, 200], 11, -1.0, 1.0, dtype);
        let (w, wv) = random(&[300, 200], 12, -1.0, 1.0, dtype);
        let (want, mag) = matmul_ref(&xv, &transpose(&wv, 300, 200), 1, 16, 200, 300, true);
        let y = dispatch::matmul(&x, &w.transpose(0, 1).unwrap()).unwrap();
        assert_tensor_close_mag("x @ W^T", dtype, &y, &want, &mag);
        let (a, av) = random(&[3, 33, 7], 1, -1.0, 1.0, dtype);
        let (b, bv) = random(&[3, 7, 65], 2, -1.0, 1.0, dtype);
        let (want, mag) = matmul_ref(&av, &bv, 3, 33, 7, 65, false);
        let y = dispatch::matmul(&a, &b).unwrap();
        assert_eq!(y.shape(), &[3, 33, 65]);
        assert_tensor_close_mag("batched matmul", dtype, &y, &want, &mag);
        let (a, av) = random(&[2, 3, 33, 65], 3, -1.0, 1.0, dtype);
        let (b, bv) = random(&[65, 7], 4, -1.0, 1.0, dtype);
        let (want, mag) = matmul_ref(&av, &bv, 6, 33, 65, 7, true);
        let y = dispatch::matmul(&a, &b).unwrap();
        assert_eq!(y.shape(), &[2, 3, 33, 7]);
        assert_tensor_close_mag("shared-b matmul", dtype, &y, &want, &mag);
        // A batched a whose batches do not fold into rows (transposed inner dims).
        let at = tensor(&av, &[2, 3, 33, 65], dtype);
        let a_t = at.transpose(2, 3).unwrap();
        let (b2, b2v) = random(&[33, 5], 8, -1.0, 1.0, dtype);
        let y = dispatch::matmul(&a_t, &b2).unwrap();
        let mut at_v = Vec::new();
        for p in 0..6 {
            at_v.extend(transpose(&av[p * 33 * 65..(p + 1) * 33 * 65], 33, 65));
        }
        let (want, mag) = matmul_ref(&at_v, &b2v, 6, 65, 33, 5, true);
        assert_tensor_close_mag("batched transposed a", dtype, &y, &want, &mag);
    }
}

#[test]
fn matmul_with_empty_inner_dim_is_zero() {
    let a = Tensor::zeros(&[3, 0], DType::F32, Device::Cpu).unwrap();
    let b = Tensor::zeros(&[0, 4], DType::F32, Device::Cpu).unwrap();
    assert_eq!(
        dispatch::matmul(&a, &b).unwrap().to_vec_f64().unwrap(),
        vec![0.0; 12]
    );
}

/// The row-major `r x c` values `v` as the transposed view of a `[c, r]` tensor.
fn transposed(v: &[f64], r: usize, c: usize, dtype: DType) -> Tensor {
    tensor(&transpose(v, r, c), &[c, r], dtype)
        .transpose(0, 1)
        .unwrap()
}

fn transpose(v: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..r * c).map(|k| v[(k % r) * c + k / r]).collect()
}

fn softmax_rows(v: &[f64], cols: usize) -> Vec<f64> {
    v.chunks(cols)
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
            row.iter()
                .map(move |x| (x - m).exp() / s)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn softmax_and_log_softmax_forward_and_backward() {
    for dtype in FLOATS {
        for (i, shape) in [
            &[5usize, 7][..],
            &[3, 1000],
            &[1, 1],
            &[2, 3, 33],
            &[200, 300],
        ]
        .iter()
        .enumerate()
        {
            let cols = *shape.last().unwrap();
            let (x, xv) = random(shape, 70 + i as u64, -80.0, 80.0, dtype);
            let (g, gv) = random(shape, 80 + i as u64, -1.0, 1.0, dtype);
            let p = softmax_rows(&xv, cols);
            let y = dispatch::softmax(&x, false).unwrap();
            let yv = y.to_vec_f64().unwrap();
            let mag: Vec<f64> = p.iter().map(|v| v.abs().max(1e-3)).collect();
            assert_close_mag(&format!("softmax {shape:?}"), dtype, &yv, &p, &mag);
            let ly = dispatch::softmax(&x, true).unwrap();
            let lyv = ly.to_vec_f64().unwrap();
            let want: Vec<f64> = p.iter().map(|v| v.ln()).collect();
            // log-softmax rounds relative to the logits' size.
            let mag: Vec<f64> = want.iter().map(|w| w.abs().max(80.0)).collect();
            assert_close_mag(&format!("log_softmax {shape:?}"), dtype, &lyv, &want, &mag);
            // Backward from the op's own output, references from those same values.
            let dx = dispatch::softmax_backward(&y, &g, false)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let ldx = dispatch::softmax_backward(&ly, &g, true)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let (mut want, mut lwant) = (Vec::new(), Vec::new());
            for r in 0..xv.len() / cols {
                let (yr, lr, gr) = (
                    &yv[r * cols..][..cols],
                    &lyv[r * cols..][..cols],
                    &gv[r * cols..][..cols],
                );
                let s: f64 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                want.extend(yr.iter().zip(gr).map(|(y, g)| y * (g - s)));
                let sg: f64 = gr.iter().sum();
                lwant.extend(lr.iter().zip(gr).map(|(y, g)| g - y.exp() * sg));
            }
            let mag: Vec<f64> = want.iter().map(|w| w.abs().max(1e-2)).collect();
            assert_close_mag(
                &format!("softmax backward {shape:?}"),
                dtype,
                &dx,
                &want,
                &mag,
            );
            let mag: Vec<f64> = lwant
                .iter()
                .map(|w| w.abs().max(cols as f64 * 1e-2))
                .collect();
            assert_close_mag(
                &format!("log_softmax backward {shape:?}"),
                dtype,
                &ldx,
                &lwant,
                &mag,
            );
        }
    }
}

/// Cross-entropy in f64: (per-row losses, loss, lse, grad) for a given output gradient.
fn ce_ref(
    x: &[f64],
    c: usize,
    t: &[i64],
    opts: &CrossEntropyOpts,
    g: &[f64],
) -> (Vec<f64>, f64, Vec<f64>, Vec<f64>) {
    let n = t.len();
    let eps = opts.label_smoothing;
    let count = t.iter().filter(|&&v| v != opts.ignore_index).count() as f64;
    let (mut rows, mut lses, mut grad) = (vec![0.0; n], vec![0.0; n], vec![0.0; n * c]);
    for r in 0..n {
        let row = &x[r * c..(r + 1) * c];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        lses[r] = lse;
        if t[r] == opts.ignore_index {
            continue;
        }
        let tr = t[r] as usize;
        rows[r] = (1.0 - eps) * (lse - row[tr])
            + eps / c as f64 * row.iter().map(|v| lse - v).sum::<f64>();
        let gr = match opts.reduction {
            Reduction::None => g[r],
            Reduction::Sum => g[0],
            Reduction::Mean => g[0] / count,
        };
        for j in 0..c {
            let on = if j == tr { 1.0 - eps } else { 0.0 };
            grad[r * c + j] = gr * ((row[j] - lse).exp() - on - eps / c as f64);
        }
    }
    let total: f64 = rows.iter().sum();
    let loss = if opts.reduction == Reduction::Mean {
        total / count
    } else {
        total
    };
    (rows, loss, lses, grad)
}

#[test]
fn cross_entropy_forward_and_backward_match_loops() {
    let (n, c) = (37, 11);
    let targets: Vec<i64> = (0..n as i64)
        .map(|i| {
            if i % 5 == 3 {
                4
            } else if i % 7 == 6 {
                -100
            } else {
                (i * 7) % c as i64
            }
        })
        .collect();
    for dtype in FLOATS {
        for &reduction in &[Reduction::Mean, Reduction::Sum, Reduction::None] {
            for &ls in &[0.0, 0.1] {
                for &ignore in &[-100i64, 4] {
                    let opts = CrossEntropyOpts {
                        ignore_index: ignore,
                        label_smoothing: ls,
                        reduction,
                    };
                    let (x, xv) = random(&[n, c], 9, -5.0, 5.0, dtype);
                    let tgt: Vec<i64> = targets
                        .iter()
                        .map(|&t| if t == -100 && ignore != -100 { 0 } else { t })
                        .collect();
                    let t = Tensor::from_vec(tgt.clone(), &[n], Device::Cpu).unwrap();
                    let gshape: &[usize] = if reduction == Reduction::None {
                        &[n]
                    } else {
                        &[]
                    };
                    let (g, gv) = random(gshape, 10, 0.5, 2.0, dtype);
                    let (rows, loss, lses, grad) = ce_ref(&xv, c, &tgt, &opts, &gv);
                    let (l, lse) = dispatch::cross_entropy(&x, &t, &opts).unwrap();
                    assert_eq!(lse.dtype(), crate::backend::stats_dtype(dtype));
                    let what = format!("ce {reduction:?} ls={ls} ignore={ignore}");
                    if reduction == Reduction::None {
                        assert_eq!(l.shape(), &[n]);
                        let mag: Vec<f64> = rows.iter().map(|v| v.abs().max(5.0)).collect();
                        assert_tensor_close_mag(&what, dtype, &l, &rows, &mag);
                    } else {
                        assert_eq!(l.shape(), &[] as &[usize]);
                        assert_close_mag(
                            &what,
                            dtype,
                            &[l.item().unwrap()],
                            &[loss],
                            &[loss.abs().max(5.0)],
                        );
                    }
                    let lse_dtype = crate::backend::stats_dtype(dtype);
                    assert_tensor_close_mag(&what, lse_dtype, &lse, &lses, &vec![5.0; n]);
                    let dx = dispatch::cross_entropy_backward(&x, &t, &lse, &g, &opts).unwrap();
                    let mag: Vec<f64> = grad.iter().map(|v| v.abs().max(0.1)).collect();
                    assert_tensor_close_mag(&format!("{what} backward"), dtype, &dx, &grad, &mag);
                }
            }
        }
    }
}

#[test]
fn cross_entropy_rejects_bad_targets_and_gives_nan_when_all_ignored() {
    let x = tensor(&values(6, 1, -1.0, 1.0), &[2, 3], DType::F32);
    let t = Tensor::from_vec(vec![1i64, 3], &[2], Device::Cpu).unwrap();
    let err = dispatch::cross_entropy(&x, &t, &CrossEntropyOpts::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 3"), "{err}");
    let t = Tensor::from_vec(vec![-1i64, 0], &[2], Device::Cpu).unwrap();
    assert!(dispatch::cross_entropy(&x, &t, &CrossEntropyOpts::default()).is_err());
    let t = Tensor::from_vec(vec![-100i64, -100], &[2], Device::Cpu).unwrap();
    let (l, lse) = dispatch::cross_entropy(&x, &t, &CrossEntropyOpts::default()).unwrap();
    assert!(l.item().unwrap().is_nan());
    let g = tensor(&[1.0], &[], DType::F32);
    let dx =
        dispatch::cross_entropy_backward(&x, &t, &lse, &g, &CrossEntropyOpts::default()).unwrap();
    assert_eq!(dx.to_vec_f64().unwrap(), vec![0.0; 6]);
}

#[test]
fn layer_norm_forward_and_backward_match_loops() {
    for dtype in FLOATS {
        for (i, &(rows, d)) in [(4usize, 10usize), (3, 7), (1, 1), (65, 33), (200, 257)]
            .iter()
            .enumerate()
        {
            let seed = 20 + i as u64;
            let (x, xv) = random(&[rows, d], seed, -2.0, 3.0, dtype);
            let (w, wv) = random(&[d], seed + 1, 0.5, 1.5, dtype);
            let (b, bv) = random(&[d], seed + 2, -1.0, 1.0, dtype);
            let (g, gv) = random(&[rows, d], seed + 3, -1.0, 1.0, dtype);
            let eps = 1e-5;
            for affine in [true, false] {
                let (wo, bo) = if affine {
                    (Some(&w), Some(&b))
                } else {
                    (None, None)
                };
                let (y, mean, rstd) = dispatch::layer_norm(&x, wo, bo, eps).unwrap();
                let (ms, rs) = (mean.to_vec_f64().unwrap(), rstd.to_vec_f64().unwrap());
                let yv = y.to_vec_f64().unwrap();
                let (mut wy, mut wm, mut wr, mut wdx) = (vec![], vec![], vec![], vec![]);
                let (mut wdw, mut wdb) = (vec![0.0; d], vec![0.0; d]);
                for r in 0..rows {
                    let row = &xv[r * d..][..d];
                    let m = row.iter().sum::<f64>() / d as f64;
                    let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / d as f64;
                    let s = 1.0 / (var + eps).sqrt();
                    wm.push(m);
                    wr.push(s);
                    let xh: Vec<f64> = row.iter().map(|v| (v - m) * s).collect();
                    let wj = |j: usize| if affine { wv[j] } else { 1.0 };
                    wy.extend((0..d).map(|j| xh[j] * wj(j) + if affine { bv[j] } else { 0.0 }));
                    let gr = &gv[r * d..][..d];
                    let gw: Vec<f64> = (0..d).map(|j| gr[j] * wj(j)).collect();
                    let a = gw.iter().sum::<f64>() / d as f64;
                    let c = gw.iter().zip(&xh).map(|(g, h)| g * h).sum::<f64>() / d as f64;
                    wdx.extend((0..d).map(|j| s * (gw[j] - a - xh[j] * c)));
                    for j in 0..d {
                        wdw[j] += gr[j] * xh[j];
                        wdb[j] += gr[j];
                    }
                }
                let what = format!("layer_norm {rows}x{d} affine={affine}");
                let sd = crate::backend::stats_dtype(dtype);
                assert_close_mag(&what, sd, &ms, &wm, &vec![3.0; rows]);
                assert_close_mag(&what, sd, &rs, &wr, &wr);
                let mag: Vec<f64> = wy.iter().map(|v| v.abs().max(1.0)).collect();
                assert_close_mag(&what, dtype, &yv, &wy, &mag);
                let (dx, dw, db) = dispatch::layer_norm_backward(&g, &x, &mean, &rstd, wo).unwrap();
                let mag: Vec<f64> = wdx.iter().map(|v| v.abs().max(1.0)).collect();
                assert_tensor_close_mag(&format!("{what} dx"), dtype, &dx, &wdx, &mag);
                assert_eq!(dw.is_some(), affine);
                assert_eq!(db.is_some(), affine);
                if let (Some(dw), Some(db)) = (dw, db) {
                    let mag = vec![rows as f64 * 2.0; d];
                    assert_tensor_close_mag(&format!("{what} dw"), dtype, &dw, &wdw, &mag);
                    assert_tensor_close_mag(&format!("{what} db"), dtype, &db, &wdb, &mag);
                }
            }
        }
    }
}

#[test]
fn embedding_gathers_rows_and_scatters_gradients() {
    for dtype in FLOATS {
        let (v, d) = (11, 33);
        let (w, wv) = random(&[v, d], 3, -1.0, 1.0, dtype);
        let ids: Vec<i64> = vec![3, 0, 10, 3, 3, 7, 1, 0];
        let idx = Tensor::from_vec(ids.clone(), &[2, 4], Device::Cpu).unwrap();
        let y = dispatch::embedding(&w, &idx).unwrap();
        assert_eq!(y.shape(), &[2, 4, d]);
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&i| wv[i as usize * d..][..d].to_vec())
            .collect();
        assert_eq!(y.to_vec_f64().unwrap(), want);
        let (g, gv) = random(&[2, 4, d], 4, -1.0, 1.0, dtype);
        let dw = dispatch::embedding_backward(&g, &idx, v).unwrap();
        assert_eq!(dw.shape(), &[v, d]);
        let mut want = vec![0.0; v * d];
        for (p, &i) in ids.iter().enumerate() {
            for j in 0..d {
                want[i as usize * d + j] += gv[p * d + j];
            }
        }
        assert_tensor_close_mag("embedding backward", dtype, &dw, &want, &vec![3.0; v * d]);
        let bad = Tensor::from_vec(vec![0i64, 11], &[2], Device::Cpu).unwrap();
        let err = dispatch::embedding(&w, &bad).unwrap_err().to_string();
        assert!(err.contains("11"), "{err}");
        assert!(dispatch::embedding_backward(&g, &bad, v).is_err());
    }
}

/// The counter-based generator of the working agreement, written out again.
fn uniform(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / 16_777_216.0)
}

#[test]
fn dropout_mask_follows_the_counter_generator() {
    for dtype in FLOATS {
        for &p in &[0.0, 0.1, 0.5, 0.9] {
            let shape = [3, 5, 4001];
            let m = dispatch::dropout_mask(&shape, p, 1234, dtype, Device::Cpu).unwrap();
            let mv = m.to_vec_f64().unwrap();
            let keep = match dtype {
                DType::F64 => 1.0 / (1.0 - p),
                DType::F32 => (1.0f32 / (1.0 - p as f32)) as f64,
                DType::BF16 => half::bf16::from_f32(1.0f32 / (1.0 - p as f32)).to_f64(),
                _ => half::f16::from_f32(1.0f32 / (1.0 - p as f32)).to_f64(),
            };
            for (i, &v) in mv.iter().enumerate() {
                let want = if uniform(1234, i as u64) as f64 >= p {
                    keep
                } else {
                    0.0
                };
                assert_eq!(v, want, "dropout p={p} element {i}");
            }
            let kept = mv.iter().filter(|&&v| v != 0.0).count() as f64 / mv.len() as f64;
            assert!(
                (kept - (1.0 - p)).abs() < 0.01,
                "kept fraction {kept} for p={p}"
            );
        }
    }
}

#[test]
fn argmax_takes_the_first_maximum() {
    let x = tensor(
        &[
            1.0,
            3.0,
            3.0,
            -1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            5.0,
            f64::NAN,
            7.0,
            2.0,
        ],
        &[3, 4],
        DType::F32,
    );
    let a = dispatch::argmax(&x).unwrap();
    assert_eq!((a.shape(), a.dtype()), (&[3][..], DType::I64));
    assert_eq!(a.to_vec::<i64>().unwrap(), vec![1, 0, 1]);
    for dtype in FLOATS {
        let (x, xv) = random(&[65, 1000], 5, -1.0, 1.0, dtype);
        let got = dispatch::argmax(&x.transpose(0, 1).unwrap())
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        for (c, &g) in got.iter().enumerate() {
            let col: Vec<f64> = (0..65).map(|r| xv[r * 1000 + c]).collect();
            let best = col.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(g, col.iter().position(|&v| v == best).unwrap() as i64);
        }
    }
}

#[test]
fn cast_and_contiguous_convert_every_dtype() {
    let data = [-2.75, -1.0, 0.0, 0.5, 1.25, 3.0e4, 7.0, -9.5];
    let all = [DType::F16, DType::BF16, DType::F32, DType::F64, DType::I64];
    for from in all {
        let x = tensor(&data, &[2, 4], from);
        let xv = x.to_vec_f64().unwrap();
        for to in all {
            let y = dispatch::cast(&x.transpose(0, 1).unwrap(), to).unwrap();
            assert_eq!((y.shape(), y.dtype()), (&[4, 2][..], to));
            let want: Vec<f64> = transpose(&xv, 2, 4)
                .iter()
                .map(|&v| match to {
                    DType::I64 => v.trunc(),
                    DType::F16 => half::f16::from_f64(v).to_f64(),
                    DType::BF16 => crate::base::bf16_from_f64(v).to_f64(),
                    DType::F32 => v as f32 as f64,
                    DType::F64 => v,
                })
                .collect();
            assert_eq!(y.to_vec_f64().unwrap(), want, "cast {from} -> {to}");
        }
        let c = dispatch::contiguous(&x.transpose(0, 1).unwrap()).unwrap();
        assert!(c.is_contiguous());
        assert_eq!(c.to_vec_f64().unwrap(), transpose(&xv, 2, 4));
    }
}

#[test]
fn in_place_ops_write_their_tensor() {
    for dtype in FLOATS {
        let (d, dv) = random(&[33, 7], 1, -1.0, 1.0, dtype);
        let (s, sv) = random(&[7, 33], 2, -1.0, 1.0, dtype);
        let st = s.transpose(0, 1).unwrap();
        dispatch::add_(&d, &st, -0.5).unwrap();
        let want: Vec<f64> = (0..33 * 7)
            .map(|k| dv[k] - 0.5 * sv[(k % 7) * 33 + k / 7])
            .collect();
        let mag: Vec<f64> = want.iter().map(|w| w.abs().max(1.0)).collect();
        assert_tensor_close_mag("add_", dtype, &d, &want, &mag);
        dispatch::copy_(&d, &st).unwrap();
        assert_eq!(d.to_vec_f64().unwrap(), transpose(&sv, 7, 33));
        dispatch::fill_(&d, 0.25).unwrap();
        assert_eq!(d.to_vec_f64().unwrap(), vec![0.25; 33 * 7]);
        dispatch::zero_(&d).unwrap();
        assert_eq!(d.to_vec_f64().unwrap(), vec![0.0; 33 * 7]);
    }
    let i = Tensor::from_vec(vec![1i64, 2, 3], &[3], Device::Cpu).unwrap();
    dispatch::fill_(&i, 7.0).unwrap();
    assert_eq!(i.to_vec::<i64>().unwrap(), vec![7, 7, 7]);
}

// ---- PyTorch cases ---------------------------------------------------------------------

mod oracle {
    use super::*;
    use serde_json::Value;

    fn floats(v: &Value) -> Vec<f64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn shape(v: &Value) -> Vec<usize> {
        v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    }

    fn input(case: &Value, i: usize, dtype: DType) -> Tensor {
        let inp = &case["inputs"][i];
        match inp.get("int_data") {
            Some(ints) => {
                let v: Vec<i64> = ints
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                Tensor::from_vec(v, &shape(inp), Device::Cpu).unwrap()
            }
            None => tensor(&floats(inp), &shape(inp), dtype),
        }
    }

    fn check(case: &Value, what: &str, got: &Tensor, want: &Value) {
        let (rtol, atol) = (
            case["tolerance"]["rtol"].as_f64().unwrap(),
            case["tolerance"]["atol"].as_f64().unwrap(),
        );
        assert_eq!(
            got.shape(),
            &shape(want)[..],
            "{} {what}: shape",
            case["id"]
        );
        for (i, (g, w)) in got
            .to_vec_f64()
            .unwrap()
            .iter()
            .zip(floats(want))
            .enumerate()
        {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{} {what} [{i}]: got {g}, want {w}",
                case["id"]
            );
        }
    }

    /// Runs one case with the primitives; false when the case is not one this file covers.
    fn run(case: &Value) -> bool {
        let dtype = match case["dtype"].as_str().unwrap() {
            "float16" => DType::F16,
            "float32" => DType::F32,
            _ => DType::F64,
        };
        let attrs = &case["attrs"];
        let g = tensor(
            &floats(&case["grad_output"]),
            &shape(&case["grad_output"]),
            dtype,
        );
        match case["op"].as_str().unwrap() {
            "cross_entropy" => {
                let reduction = match attrs["reduction"].as_str().unwrap() {
                    "mean" => Reduction::Mean,
                    "sum" => Reduction::Sum,
                    _ => Reduction::None,
                };
                let opts = CrossEntropyOpts {
                    ignore_index: attrs["ignore_index"].as_i64().unwrap(),
                    label_smoothing: attrs["label_smoothing"].as_f64().unwrap(),
                    reduction,
                };
                let (x, t) = (input(case, 0, dtype), input(case, 1, dtype));
                let (loss, lse) = dispatch::cross_entropy(&x, &t, &opts).unwrap();
                check(case, "output", &loss, &case["output"]);
                let dx = dispatch::cross_entropy_backward(&x, &t, &lse, &g, &opts).unwrap();
                check(case, "grad", &dx, &case["grads"][0]);
            }
            "layer_norm" => {
                let x = input(case, 0, dtype);
                let d: usize = attrs["normalized_shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .product();
                let rows = x.numel() / d;
                let flat = |t: &Tensor, s: &[usize]| tensor(&t.to_vec_f64().unwrap(), s, dtype);
                let x2 = flat(&x, &[rows, d]);
                let (w, b) = (
                    flat(&input(case, 1, dtype), &[d]),
                    flat(&input(case, 2, dtype), &[d]),
                );
                let eps = attrs["eps"].as_f64().unwrap();
                let (y, mean, rstd) = dispatch::layer_norm(&x2, Some(&w), Some(&b), eps).unwrap();
                check(case, "output", &flat(&y, x.shape()), &case["output"]);
                let (dx, dw, db) = dispatch::layer_norm_backward(
                    &flat(&g, &[rows, d]),
                    &x2,
                    &mean,
                    &rstd,
                    Some(&w),
                )
                .unwrap();
                check(case, "dx", &flat(&dx, x.shape()), &case["grads"][0]);
                let ws = shape(&case["grads"][1]);
                check(case, "dweight", &flat(&dw.unwrap(), &ws), &case["grads"][1]);
                check(case, "dbias", &flat(&db.unwrap(), &ws), &case["grads"][2]);
            }
            op @ ("softmax" | "log_softmax") => {
                let x = input(case, 0, dtype);
                let dim = attrs["dim"].as_i64().unwrap();
                if dim != -1 && dim != x.rank() as i64 - 1 {
                    return false;
                }
                let log = op == "log_softmax";
                let y = dispatch::softmax(&x, log).unwrap();
                check(case, "output", &y, &case["output"]);
                let dx = dispatch::softmax_backward(&y, &g, log).unwrap();
                check(case, "grad", &dx, &case["grads"][0]);
            }
            "matmul" => {
                let (a, b) = (input(case, 0, dtype), input(case, 1, dtype));
                check(
                    case,
                    "output",
                    &dispatch::matmul(&a, &b).unwrap(),
                    &case["output"],
                );
                let (ra, rb) = (a.rank() as isize, b.rank() as isize);
                let da = dispatch::matmul(&g, &b.transpose(rb - 2, rb - 1).unwrap()).unwrap();
                check(case, "grad a", &da, &case["grads"][0]);
                let db = dispatch::matmul(&a.transpose(ra - 2, ra - 1).unwrap(), &g).unwrap();
                check(case, "grad b", &db, &case["grads"][1]);
            }
            "gelu" => {
                let x = input(case, 0, dtype);
                let tanh = attrs["approximate"].as_str() == Some("tanh");
                let (f, df) = if tanh {
                    (UnaryOp::GeluTanh, UnaryOp::GeluTanhGrad)
                } else {
                    (UnaryOp::Gelu, UnaryOp::GeluGrad)
                };
                check(
                    case,
                    "output",
                    &dispatch::unary(f, &x).unwrap(),
                    &case["output"],
                );
                if dtype != DType::F16 {
                    let dx = dispatch::binary(BinaryOp::Mul, &g, &dispatch::unary(df, &x).unwrap())
                        .unwrap();
                    check(case, "grad", &dx, &case["grads"][0]);
                }
            }
            op @ ("exp" | "log" | "sqrt" | "tanh" | "sigmoid" | "relu" | "neg") => {
                let u = match op {
                    "exp" => UnaryOp::Exp,
                    "log" => UnaryOp::Log,
                    "sqrt" => UnaryOp::Sqrt,
                    "tanh" => UnaryOp::Tanh,
                    "sigmoid" => UnaryOp::Sigmoid,
                    "relu" => UnaryOp::Relu,
                    _ => UnaryOp::Neg,
                };
                check(
                    case,
                    "output",
                    &dispatch::unary(u, &input(case, 0, dtype)).unwrap(),
                    &case["output"],
                );
            }
            _ => return false,
        }
        true
    }

    #[test]
    fn pytorch_op_cases() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ops.json");
        let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(file["format"], "ops-ref/1");
        let ran = file["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| run(c))
            .count();
        assert!(ran >= 140, "only {ran} cases ran");
    }
}

/// This test binary re-run on `tests` (exact names) with `GRADSTEP_CPU_ISA=value`, which
/// the process reads once: its success and its output.
fn run_capped(value: &str, tests: &[&str]) -> (bool, String) {
    let path = module_path!().trim_start_matches("gradstep::");
    let names: Vec<String> = tests.iter().map(|t| format!("{path}::{t}")).collect();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(&names)
        .args(["--exact", "--test-threads=1"])
        .env(crate::backend::cpu::isa::ISA_ENV, value)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `matmul_epilogue` (a linear layer's forward, with or without the ReLU after it) gives
/// the bits of a product followed by an add of the broadcast row and ReLU, on every path:
/// a transposed weight (the epilogue applied in the transposing copy, serial and in
/// bands), a row-major one, batched and shared-b inputs, an empty inner dim, a strided
/// bias, no bias, and the 16-bit dtypes (separate ops).
#[test]
fn matmul_epilogue_has_the_bits_of_matmul_add_and_relu() {
    let cases: [(&[usize], &[usize], bool); 6] = [
        (&[16, 200], &[300, 200], true),
        (&[100, 400], &[333, 400], true),
        (&[2, 3, 33, 65], &[7, 65], true),
        (&[33, 65], &[65, 7], false),
        (&[3, 33, 65], &[65, 70], false),
        (&[5, 0], &[0, 9], false),
    ];
    for dtype in FLOATS {
        for (i, &(xs, ws, transposed)) in cases.iter().enumerate() {
            let seed = 60 + 3 * i as u64;
            let (x, _) = random(xs, seed, -1.0, 1.0, dtype);
            let (w, _) = random(ws, seed + 1, -1.0, 1.0, dtype);
            let w = if transposed {
                w.transpose(0, 1).unwrap()
            } else {
                w
            };
            let n = w.shape()[1];
            // Every other element of a longer vector: a strided bias.
            let (long, _) = random(&[2 * n], seed + 2, -1.0, 1.0, dtype);
            let every_other = crate::base::Layout::new(vec![n], vec![2], 1);
            let bias = long.with_layout(every_other).unwrap();
            for (with_bias, relu) in [(true, false), (true, true), (false, true)] {
                let b = with_bias.then_some(&bias);
                let got = dispatch::matmul_epilogue(&x, &w, b, relu).unwrap();
                let mut want = dispatch::matmul(&x, &w).unwrap();
                if let Some(b) = b {
                    dispatch::add_(&want, &b.expand(want.shape()).unwrap(), 1.0).unwrap();
                }
                if relu {
                    want = dispatch::unary(UnaryOp::Relu, &want).unwrap();
                }
                assert_eq!(got.shape(), want.shape());
                let (g, e) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
                assert!(
                    g.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dtype:?} case {i} (bias {with_bias}, relu {relu}): {xs:?} @ {ws:?}"
                );
                assert!(!relu || g.iter().all(|v| v.is_nan() || *v >= 0.0));
            }
        }
    }
    let (x, _) = random(&[4, 6], 1, -1.0, 1.0, DType::F32);
    let (w, _) = random(&[6, 5], 2, -1.0, 1.0, DType::F32);
    let (bad, _) = random(&[4], 3, -1.0, 1.0, DType::F32);
    assert!(dispatch::matmul_epilogue(&x, &w, Some(&bad), false).is_err());
}

/// Products above the threading threshold are split across the rayon threads: in pools
/// of 1, 2 and 3 threads (uneven parts) they match the loops, and bit for bit each
/// other. Covers splits along rows and columns, a row-major and a transposed left
/// operand, the transposed-weight product whose copies run in bands, and a narrow
/// transposed right operand that gemm takes as it lies.
#[test]
fn split_products_match_loops_and_do_not_depend_on_the_thread_count() {
    let shapes = [
        (67usize, 129usize, 131usize),
        (301, 70, 45),
        (100, 400, 333),
        (20, 517, 150),
        (64, 512, 10),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            let seed = 40 + 2 * i as u64;
            let (a, av) = random(&[m, k], seed, -1.0, 1.0, dtype);
            let (b, bv) = random(&[k, n], seed + 1, -1.0, 1.0, dtype);
            let (want, mag) = matmul_ref(&av, &bv, 1, m, k, n, true);
            let (at, bt) = (transposed(&av, m, k, dtype), transposed(&bv, k, n, dtype));
            let mut first: Option<Vec<Vec<f64>>> = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got: Vec<Vec<f64>> = pool.install(|| {
                    [(&a, &b), (&at, &b), (&a, &bt), (&at, &bt)]
                        .into_iter()
                        .enumerate()
                        .map(|(v, (x, y))| {
                            let out = dispatch::matmul(x, y).unwrap();
                            let what = format!("{m}x{k}x{n} variant {v} on {threads} threads");
                            assert_tensor_close_mag(&what, dtype, &out, &want, &mag);
                            out.to_vec_f64().unwrap()
                        })
                        .collect()
                });
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(
                        f.iter()
                            .zip(&got)
                            .all(|(x, y)| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())),
                        "{m}x{k}x{n} on {threads} threads differs from one thread"
                    ),
                }
            }
        }
    }
}

#[test]
fn matmul_capped_at_avx2_matches_loops_and_says_it_is_capped() {
    if std::env::var_os(crate::backend::cpu::isa::ISA_ENV).is_some() {
        return; // the child itself, or a run under a cap already
    }
    let (ok, out) = run_capped(
        "avx2",
        &[
            "matmul_matches_loops_for_odd_sizes_batches_and_views",
            "split_products_match_loops_and_do_not_depend_on_the_thread_count",
            "vector_isa_follows_the_cap",
        ],
    );
    assert!(ok && out.contains("3 passed"), "{out}");
    let (ok, out) = run_capped(
        "avx-9000",
        &["matmul_matches_loops_for_odd_sizes_batches_and_views"],
    );
    assert!(!ok, "an unknown cap must fail the products: {out}");
    assert!(
        out.contains("GRADSTEP_CPU_ISA must be avx2 or avx512") && out.contains("avx-9000"),
        "{out}"
    );
}

#[test]
fn vector_isa_follows_the_cap() {
    let isa = crate::backend::cpu::vector_isa();
    let capped = std::env::var(crate::backend::cpu::isa::ISA_ENV).is_ok_and(|v| v == "avx2");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        let avx512 = std::is_x86_feature_detected!("avx512f");
        let want = match (avx512, capped) {
            (true, false) => "avx512f",
            (true, true) => "avx2+fma (capped)",
            (false, _) => "avx2+fma",
        };
        assert_eq!(isa, want);
    }
    let _ = (isa, capped);
}
