//! zero_grad semantics that need autograd: gradient accumulation, detaching a grad that
//! has a grad_fn, and set_to_none with params the next backward doesn't reach.

use gradstep::nn::{Linear, Module};
use gradstep::ops::{mse_loss, Reduction};
use gradstep::optim::{Optimizer, SgdConfig, SGD};
use gradstep::{DType, Device, Tensor};

use crate::common::assert_close;

/// A Linear 3 -> 2 with fixed weights.
fn model() -> Linear {
    let w = Tensor::from_vec(
        vec![0.3f32, -0.2, 0.5, 0.1, 0.4, -0.6],
        &[2, 3],
        Device::Cpu,
    );
    let b = Tensor::from_vec(vec![0.05f32, -0.1], &[2], Device::Cpu);
    Linear::from_tensors(w.unwrap(), Some(b.unwrap())).unwrap()
}

/// Rows `rows` of an `n x cols` batch of deterministic values.
fn batch(rows: std::ops::Range<usize>, cols: usize, seed: f32) -> Tensor {
    let v: Vec<f32> = rows
        .clone()
        .flat_map(|r| (0..cols).map(move |c| ((r * cols + c) as f32 * 0.37 + seed).sin()))
        .collect();
    Tensor::from_vec(v, &[rows.len(), cols], Device::Cpu).unwrap()
}

fn sum_loss(m: &Linear, x: &Tensor, y: &Tensor) -> Tensor {
    mse_loss(&m.forward(x).unwrap(), y, Reduction::Sum).unwrap()
}

fn values(ts: &[Tensor]) -> Vec<f64> {
    ts.iter().flat_map(|t| t.to_vec_f64().unwrap()).collect()
}

#[test]
fn zero_grad_every_two_half_batches_equals_full_batch_steps() {
    let (acc, full) = (model(), model());
    let cfg = SgdConfig::new(0.05).momentum(0.9);
    let mut opt_acc = SGD::new(acc.parameters(), cfg).unwrap();
    let mut opt_full = SGD::new(full.parameters(), cfg).unwrap();
    for it in 0..4 {
        let seed = it as f32;
        let (x, y) = (batch(0..8, 3, seed), batch(0..8, 2, seed + 0.5));
        opt_acc.zero_grad(false).unwrap();
        for half in [0..4, 4..8] {
            let (xh, yh) = (batch(half.clone(), 3, seed), batch(half, 2, seed + 0.5));
            sum_loss(&acc, &xh, &yh).backward().unwrap();
        }
        opt_full.zero_grad(false).unwrap();
        sum_loss(&full, &x, &y).backward().unwrap();
        let grads = |m: &Linear| -> Vec<Tensor> {
            m.parameters().iter().map(|p| p.grad().unwrap()).collect()
        };
        let (got, want) = (values(&grads(&acc)), values(&grads(&full)));
        assert_close(&format!("grads at {it}"), &got, &want, 1e-5, 1e-5);
        opt_acc.step().unwrap();
        opt_full.step().unwrap();
        let (got, want) = (values(&acc.parameters()), values(&full.parameters()));
        assert_close(&format!("params after step {it}"), &got, &want, 1e-5, 1e-5);
    }
    // The steps moved the weights (the comparison is not vacuous).
    let start = values(&model().parameters());
    assert!(values(&acc.parameters())
        .iter()
        .zip(&start)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn zero_grad_detaches_a_grad_with_a_grad_fn_in_place() {
    let w = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3], Device::Cpu).unwrap();
    w.requires_grad_(true).unwrap();
    let mut opt = SGD::new(vec![w.clone()], SgdConfig::new(0.1)).unwrap();
    let loss = w.mul(&w).unwrap().sum_all().unwrap();
    loss.backward_with(None, false, true).unwrap();
    let before = w.grad().unwrap();
    assert!(
        before.grad_fn().is_some(),
        "create_graph gives the grad a grad_fn"
    );
    assert_eq!(before.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 6.0]);
    opt.zero_grad(false).unwrap();
    let after = w.grad().unwrap();
    assert!(after.grad_fn().is_none());
    assert!(!after.requires_grad());
    assert!(
        after.shares_storage(&before),
        "zeroed in place, not replaced"
    );
    assert_eq!(after.to_vec::<f32>().unwrap(), vec![0.0; 3]);
    assert_eq!(after.dtype(), DType::F32);
}

#[test]
fn set_to_none_leaves_unused_params_without_grad() {
    let (used, unused) = (model(), model());
    let mut params = used.parameters();
    params.extend(unused.parameters());
    let mut opt = SGD::new(params, SgdConfig::new(0.1)).unwrap();
    let (x, y) = (batch(0..5, 3, 1.0), batch(0..5, 2, 2.0));
    // First both layers get grads.
    let both = sum_loss(&used, &x, &y)
        .add(&sum_loss(&unused, &x, &y))
        .unwrap();
    both.backward().unwrap();
    assert!(unused.parameters().iter().all(|p| p.grad().is_some()));
    opt.zero_grad(true).unwrap();
    sum_loss(&used, &x, &y).backward().unwrap();
    assert!(used.parameters().iter().all(|p| p.grad().is_some()));
    assert!(unused.parameters().iter().all(|p| p.grad().is_none()));
    let before = values(&unused.parameters());
    opt.step().unwrap();
    assert_eq!(values(&unused.parameters()), before, "no grad: no update");
}
