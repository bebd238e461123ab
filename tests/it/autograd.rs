//! The autograd engine's contract: PyTorch's accumulation rules, graph freeing, the
//! version counter, grad mode, retain_grad, detach, higher-order gradients, errors.

use std::sync::{Arc, Mutex};

use gradstep::autograd::{self, is_grad_enabled, no_grad, record};
use gradstep::ops::{self, Reduction};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Error, Result, Tensor};

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, Device::Cpu).unwrap()
}

fn leaf(v: &[f64], shape: &[usize]) -> Tensor {
    t64(v, shape).requires_grad_(true).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

fn storage_addr(t: &Tensor) -> usize {
    t.data_ptr().unwrap()
}

/// `x * 1` whose backward passes on a fresh `g * k` and records the address of the
/// storage it handed out.
fn scale_recording(x: &Tensor, k: f64, seen: Arc<Mutex<Vec<usize>>>) -> Tensor {
    let y = {
        let _plain = no_grad();
        x.affine(1.0, 0.0).unwrap()
    };
    record("ScaleRecording", &[x], y, move |g, _| {
        let out = {
            let _plain = no_grad();
            g.affine(k, 0.0)?
        };
        seen.lock().unwrap().push(storage_addr(&out));
        Ok(vec![Some(out)])
    })
}

#[test]
fn fresh_gradient_is_taken_over_without_a_copy() {
    let w = leaf(&[1.0, 2.0, 3.0], &[3]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    scale_recording(&w, 2.0, seen.clone())
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = w.grad().unwrap();
    assert_eq!(vals(&g), vec![2.0; 3]);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[storage_addr(&g)],
        "the gradient was copied"
    );
    assert!(g.is_leaf() && !g.requires_grad());
}

#[test]
fn a_gradient_held_elsewhere_is_copied() {
    let w = leaf(&[1.0, 2.0], &[2]);
    let gout = t64(&[0.5, -1.0], &[2]);
    w.backward_with(Some(&gout), false, false).unwrap();
    let g = w.grad().unwrap();
    assert!(
        !g.shares_storage(&gout),
        "the caller's gradient must not become .grad"
    );
    assert_eq!(vals(&g), vec![0.5, -1.0]);
    // Both inputs of an add receive the same tensor: each gets its own copy.
    let (a, b) = (leaf(&[1.0], &[1]), leaf(&[2.0], &[1]));
    a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(!a.grad().unwrap().shares_storage(&b.grad().unwrap()));
}

#[test]
fn existing_gradient_is_added_in_place_into_an_arena_view() {
    let w = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let arena = Tensor::zeros(&[4], DType::F64, Device::Cpu).unwrap();
    arena.fill_(10.0).unwrap();
    let view = arena.reshape(&[2, 2]).unwrap();
    w.set_grad(Some(view.clone())).unwrap();
    let before = arena.version();
    for k in [1.0, 2.0] {
        w.mul_scalar(k)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    }
    let g = w.grad().unwrap();
    assert!(
        g.same_tensor(&view),
        ".grad must stay the tensor that was set"
    );
    assert!(g.shares_storage(&arena));
    assert_eq!(vals(&arena), vec![13.0; 4]);
    assert_eq!(arena.version(), before + 2, "one in-place add per backward");
}

#[test]
fn gradients_of_one_leaf_are_summed_before_accumulation() {
    // x feeds y twice (diamond): the node of y runs once with the summed gradient.
    let x = leaf(&[1.0, -2.0], &[2]);
    let y = x.mul_scalar(2.0).unwrap();
    y.retain_grad().unwrap();
    let z = y
        .mul_scalar(3.0)
        .unwrap()
        .add(&y.mul_scalar(4.0).unwrap())
        .unwrap();
    z.sum_all().unwrap().backward().unwrap();
    assert_eq!(vals(&y.grad().unwrap()), vec![7.0, 7.0]);
    assert_eq!(vals(&x.grad().unwrap()), vec![14.0, 14.0]);
    // x * x: both contributions arrive as one fresh sum.
    let x = leaf(&[3.0], &[1]);
    x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(vals(&x.grad().unwrap()), vec![6.0]);
}

#[test]
fn second_backward_needs_retain_graph() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let loss = x.exp().unwrap().sum_all().unwrap();
    loss.backward_with(None, true, false).unwrap();
    loss.backward().unwrap();
    let e: Vec<f64> = [1.0f64, 2.0].iter().map(|v| 2.0 * v.exp()).collect();
    for (g, w) in vals(&x.grad().unwrap()).iter().zip(&e) {
        assert!((g - w).abs() < 1e-12);
    }
    assert!(loss.grad_fn().unwrap().is_freed());
    let err = loss.backward().unwrap_err();
    assert!(
        matches!(err, Error::Autograd(ref m) if m.contains("second time")),
        "{err}"
    );
}

#[test]
fn in_place_change_to_a_saved_tensor_is_an_error() {
    // A saved output.
    let x = leaf(&[1.0, 2.0], &[2]);
    let y = x.exp().unwrap();
    let loss = y.sum_all().unwrap();
    y.detach().fill_(0.0).unwrap();
    let err = loss.backward().unwrap_err();
    assert!(
        matches!(err, Error::Autograd(ref m) if m.contains("in-place")),
        "{err}"
    );
    // A saved input.
    let a = leaf(&[1.0, 2.0], &[2]);
    let b = t64(&[3.0, 4.0], &[2]);
    let loss = a.mul(&b).unwrap().sum_all().unwrap();
    b.add_(&t64(&[1.0, 1.0], &[2]), 1.0).unwrap();
    assert!(loss.backward().is_err());
    // An unsaved tensor may change: a + b saves nothing.
    let a = leaf(&[1.0], &[1]);
    let b = t64(&[3.0], &[1]);
    let loss = a.add(&b).unwrap().sum_all().unwrap();
    b.fill_(5.0).unwrap();
    loss.backward().unwrap();
}

#[test]
fn no_grad_stops_recording_and_nests() {
    let x = leaf(&[1.0], &[1]);
    {
        let _g = no_grad();
        let y = x.mul_scalar(2.0).unwrap();
        assert!(!y.requires_grad() && y.is_leaf());
        {
            let _h = no_grad();
            assert!(!is_grad_enabled());
        }
        assert!(!is_grad_enabled());
        assert!(y.backward().is_err());
    }
    assert!(is_grad_enabled());
    let y = x.mul_scalar(2.0).unwrap();
    assert!(y.requires_grad() && !y.is_leaf());
    assert_eq!(y.grad_fn().unwrap().name(), "AffineBackward");
}

#[test]
fn non_leaf_grad_only_with_retain_grad() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let h = x.square().unwrap();
    let r = x.square().unwrap();
    r.retain_grad().unwrap();
    assert!(r.retains_grad() && !h.retains_grad() && x.retains_grad());
    h.add(&r)
        .unwrap()
        .mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(h.grad().is_none());
    assert_eq!(vals(&r.grad().unwrap()), vec![3.0, 3.0]);
    assert_eq!(vals(&x.grad().unwrap()), vec![12.0, 24.0]);
    assert!(t64(&[1.0], &[1]).retain_grad().is_err());
}

#[test]
fn detach_and_detach_in_place() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let y = x.mul_scalar(2.0).unwrap();
    let d = y.detach();
    assert!(d.shares_storage(&y) && !d.requires_grad() && d.is_leaf());
    // Gradients do not flow through a detached tensor.
    let loss = d.mul(&x).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    assert_eq!(vals(&x.grad().unwrap()), vec![2.0, 4.0]);
    y.detach_();
    assert!(y.is_leaf() && !y.requires_grad() && y.grad_fn().is_none());
    assert!(y.backward().is_err());
}

#[test]
fn errors_not_panics() {
    let x = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let y = x.mul_scalar(2.0).unwrap();
    assert!(
        matches!(y.backward(), Err(Error::Autograd(_))),
        "non-scalar without gradient"
    );
    assert!(
        y.backward_with(Some(&t64(&[1.0], &[1])), false, false)
            .is_err(),
        "wrong gradient shape"
    );
    assert!(
        matches!(t64(&[1.0], &[1]).backward(), Err(Error::Autograd(_))),
        "does not require grad"
    );
    assert!(matches!(
        x.matmul(&t64(&[1.0; 3], &[3, 1])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        x.add(&t64(&[1.0; 3], &[3])),
        Err(Error::ShapeMismatch { .. })
    ));
    let f = Tensor::from_slice(&[1.0f32; 4], &[2, 2], Device::Cpu).unwrap();
    assert!(matches!(x.mul(&f), Err(Error::DTypeMismatch { .. })));
    if let Ok(e) = Tensor::from_slice(&[1.0f32; 4], &[2, 2], Device::Emu(0)) {
        assert!(matches!(f.add(&e), Err(Error::DeviceMismatch { .. })));
    }
    let i = Tensor::from_slice(&[1i64], &[1], Device::Cpu).unwrap();
    assert!(i.requires_grad_(true).is_err());
    assert!(x.sum(Some(&[0, 0]), false).is_err());
    assert!(x.transpose(0, 2).is_err());
    assert!(x.reshape(&[3, -1]).is_err());
}

#[test]
fn create_graph_accumulates_out_of_place_with_history() {
    let x = leaf(&[1.5, -0.5], &[2]);
    let old = t64(&[1.0, 1.0], &[2]);
    x.set_grad(Some(old.clone())).unwrap();
    x.mul(&x)
        .unwrap()
        .mul(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward_with(None, false, true)
        .unwrap();
    let g = x.grad().unwrap();
    assert!(
        !g.shares_storage(&old) && vals(&old) == vec![1.0, 1.0],
        "must not add in place"
    );
    assert!(g.grad_fn().is_some(), "the gradient carries history");
    assert_eq!(vals(&g), vec![1.0 + 3.0 * 2.25, 1.0 + 3.0 * 0.25]);
    // d/dx sum(.grad) = 6x
    x.set_grad(None).unwrap();
    g.sum_all().unwrap().backward().unwrap();
    assert_eq!(vals(&x.grad().unwrap()), vec![9.0, -3.0]);
}

#[test]
fn autograd_grad_returns_without_touching_dot_grad() {
    let a = leaf(&[1.0, 2.0], &[2]);
    let b = leaf(&[3.0, 4.0], &[2]);
    let c = leaf(&[5.0], &[1]);
    let y = a.mul(&b).unwrap();
    let loss = y.sum_all().unwrap();
    let g = autograd::grad(&loss, &[&a, &y, &c], None, false, false).unwrap();
    assert_eq!(vals(g[0].as_ref().unwrap()), vec![3.0, 4.0]);
    assert_eq!(vals(g[1].as_ref().unwrap()), vec![1.0, 1.0]);
    assert!(g[2].is_none(), "c does not influence the loss");
    assert!(a.grad().is_none() && b.grad().is_none());
}

/// A small MLP `x -> tanh(x W1^T + b1) -> sigmoid(. W2^T + b2)`, mse against `t`.
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    x: Vec<f64>,
    t: Tensor,
}

impl Mlp {
    fn new() -> Mlp {
        let mut rng = Rng::new(3);
        let mut r = |shape: &[usize]| {
            Tensor::rand_with(shape, &mut rng, -1.0, 1.0, DType::F64, Device::Cpu)
                .unwrap()
                .requires_grad_(true)
                .unwrap()
        };
        let (w1, b1, w2, b2) = (r(&[5, 3]), r(&[5]), r(&[2, 5]), r(&[2]));
        let x = r(&[4, 3]).to_vec_f64().unwrap();
        let t = r(&[4, 2]).detach();
        Mlp {
            w1,
            b1,
            w2,
            b2,
            x,
            t,
        }
    }

    fn loss(&self, x: &Tensor, w1: &Tensor) -> Result<Tensor> {
        let h = ops::linear(x, w1, Some(&self.b1))?.tanh()?;
        let y = ops::linear(&h, &self.w2, Some(&self.b2))?.sigmoid()?;
        ops::mse_loss(&y, &self.t, Reduction::Mean)
    }

    /// `||d loss / d x||^2` computed by first-order backward with `create_graph`.
    fn penalty(&self, w1: &Tensor, create_graph: bool) -> Result<Tensor> {
        let x = Tensor::from_slice(&self.x, &[4, 3], Device::Cpu)?.requires_grad_(true)?;
        self.loss(&x, w1)?
            .backward_with(None, false, create_graph)?;
        x.grad().expect("x.grad").square()?.sum_all()
    }
}

#[test]
fn gradient_penalty_through_an_mlp_matches_finite_differences() {
    let m = Mlp::new();
    let p = m.penalty(&m.w1, true).unwrap();
    for w in [&m.w1, &m.b1, &m.w2, &m.b2] {
        w.set_grad(None).unwrap();
    }
    p.backward().unwrap();
    let got = vals(&m.w1.grad().unwrap());
    let w1 = vals(&m.w1);
    let eps = 1e-6;
    for j in 0..w1.len() {
        let at = |d: f64| {
            let mut v = w1.clone();
            v[j] += d;
            m.penalty(&t64(&v, &[5, 3]), false).unwrap().item().unwrap()
        };
        let want = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (got[j] - want).abs() <= 1e-7 + 1e-5 * want.abs(),
            "w1[{j}]: {} vs {want}",
            got[j]
        );
    }
    // Every parameter got a second-order gradient.
    for w in [&m.b1, &m.w2, &m.b2] {
        assert!(w.grad().is_some_and(|g| vals(&g).iter().any(|v| *v != 0.0)));
    }
}

#[test]
fn double_backward_through_a_fused_backward_is_an_error() {
    let x = leaf(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[2, 3]);
    let target = Tensor::from_slice(&[0i64, 2], &[2], Device::Cpu).unwrap();
    let loss = ops::cross_entropy(&x, &target, &Default::default()).unwrap();
    let g = autograd::grad(&loss, &[&x], None, false, true)
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(g.requires_grad());
    assert!(matches!(
        g.sum_all().unwrap().backward(),
        Err(Error::Autograd(_))
    ));
}
