//! Views only the crate can build: offsets into a larger storage, in-place ops on them.

use crate::backend::BinaryOp;
use crate::tensor::prim as dispatch;
use crate::tensor::{DType, Device, Layout, Tensor};

fn arena(n: usize, dtype: DType) -> Tensor {
    let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
    Tensor::from_f64s(&v, &[n], dtype, Device::Cpu).unwrap()
}

#[test]
fn in_place_ops_touch_only_their_view_of_an_arena() {
    for dtype in [DType::F16, DType::F32, DType::F64] {
        let a = arena(20, dtype);
        // A [2, 3] view at offset 5 (elements 5..11).
        let view = a
            .with_layout(Layout::new(vec![2, 3], vec![3, 1], 5))
            .unwrap();
        let src = Tensor::from_f64s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], dtype, Device::Cpu)
            .unwrap();
        dispatch::add_(&view, &src, 2.0).unwrap();
        let mut want: Vec<f64> = (0..20).map(|i| i as f64).collect();
        for k in 0..6 {
            want[5 + k] += 2.0 * (k + 1) as f64;
        }
        assert_eq!(a.to_vec_f64().unwrap(), want);
        dispatch::zero_(&view).unwrap();
        want[5..11].fill(0.0);
        assert_eq!(a.to_vec_f64().unwrap(), want);
        dispatch::fill_(&view, 1.5).unwrap();
        want[5..11].fill(1.5);
        assert_eq!(a.to_vec_f64().unwrap(), want);
        // copy_ from a transposed view at another offset of the same storage.
        let src_t = a
            .with_layout(Layout::new(vec![2, 3], vec![1, 2], 12))
            .unwrap();
        dispatch::copy_(&view, &src_t).unwrap();
        let copied = [12.0, 14.0, 16.0, 13.0, 15.0, 17.0];
        want[5..11].copy_from_slice(&copied);
        assert_eq!(a.to_vec_f64().unwrap(), want);
        // An overlapping source reads the values from before the write.
        let shifted = a
            .with_layout(Layout::new(vec![2, 3], vec![3, 1], 4))
            .unwrap();
        dispatch::copy_(&view, &shifted).unwrap();
        let before = want.clone();
        want[5..11].copy_from_slice(&before[4..10]);
        assert_eq!(a.to_vec_f64().unwrap(), want);
    }
}

#[test]
fn ops_read_views_with_offsets_and_broadcast_strides() {
    let a = arena(40, DType::F32);
    // [3, 4] at offset 7 with row stride 10, and a row broadcast down 3 rows.
    let x = a
        .with_layout(Layout::new(vec![3, 4], vec![10, 1], 7))
        .unwrap();
    let row = a
        .with_layout(Layout::new(vec![3, 4], vec![0, 2], 1))
        .unwrap();
    let y = dispatch::binary(BinaryOp::Sub, &x, &row).unwrap();
    let want: Vec<f64> = (0..12)
        .map(|k| (7 + (k / 4) * 10 + k % 4) as f64 - (1 + 2 * (k % 4)) as f64)
        .collect();
    assert_eq!(y.to_vec_f64().unwrap(), want);
    let s = dispatch::sum_dims(&x, &[0], false).unwrap();
    assert_eq!(
        s.to_vec_f64().unwrap(),
        vec![
            7.0 + 17.0 + 27.0,
            8.0 + 18.0 + 28.0,
            9.0 + 19.0 + 29.0,
            10.0 + 20.0 + 30.0
        ]
    );
    let m = dispatch::matmul(
        &x,
        &x.with_layout(Layout::new(vec![4, 2], vec![1, 4], 0))
            .unwrap(),
    )
    .unwrap();
    // x @ [[0, 4], [1, 5], [2, 6], [3, 7]]
    let xv = x.to_vec_f64().unwrap();
    let want: Vec<f64> = (0..6)
        .map(|k| {
            let (i, j) = (k / 2, k % 2);
            (0..4).map(|t| xv[i * 4 + t] * (t + 4 * j) as f64).sum()
        })
        .collect();
    assert_eq!(m.to_vec_f64().unwrap(), want);
    let sm = dispatch::softmax(&x, false).unwrap().to_vec_f64().unwrap();
    let e: Vec<f64> = (0..4).map(|t| (t as f64 - 3.0).exp()).collect();
    let z: f64 = e.iter().sum();
    for r in 0..3 {
        for t in 0..4 {
            assert!((sm[r * 4 + t] - e[t] / z).abs() < 1e-6);
        }
    }
}

#[test]
fn a_view_past_its_storage_is_an_error() {
    let a = arena(5, DType::F32);
    // The view is refused where it is made: no primitive ever sees it.
    assert!(a
        .with_layout(Layout::new(vec![2, 3], vec![3, 1], 0))
        .is_err());
    assert!(a.with_layout(Layout::new(vec![2], vec![1], 3)).is_ok());
}

#[test]
fn f16_matmul_of_offset_transposed_and_sparse_views_matches_f32() {
    // Small integers: exact in f16, and every product sum below 2048 stays exact.
    let storage = |dtype| {
        let v: Vec<f64> = (0..64).map(|i| (i % 7) as f64 - 3.0).collect();
        Tensor::from_f64s(&v, &[64], dtype, Device::Cpu).unwrap()
    };
    let views = [
        // a [2, 3] at offset 5, b [3, 2] transposed at offset 20.
        (
            Layout::new(vec![2, 3], vec![3, 1], 5),
            Layout::new(vec![3, 2], vec![1, 3], 20),
        ),
        // b a sparse column pair of a wide matrix (stride 16 between rows).
        (
            Layout::new(vec![2, 3], vec![3, 1], 0),
            Layout::new(vec![3, 2], vec![16, 1], 11),
        ),
        // an empty a at a non-zero offset.
        (
            Layout::new(vec![0, 3], vec![3, 1], 9),
            Layout::new(vec![3, 2], vec![2, 1], 0),
        ),
    ];
    for (la, lb) in views {
        let product = |dtype| {
            let s = storage(dtype);
            let (a, b) = (
                s.with_layout(la.clone()).unwrap(),
                s.with_layout(lb.clone()).unwrap(),
            );
            dispatch::matmul(&a, &b).unwrap().to_vec_f64().unwrap()
        };
        assert_eq!(product(DType::F16), product(DType::F32), "{la:?} @ {lb:?}");
    }
}
