//! Budgets asserted on the emulated GPU's counters (launches, memsets, copies, host
//! syncs, allocations): zero_grad and step, and the zero_grad semantics that PyTorch
//! documents; the training step, eager and captured into a graph (`graph`); the step
//! inside backward (`step_in_backward`); a data-parallel step (`distributed`). Its own
//! test binary: the counters are process-wide, so these tests run one at a time and no
//! other test's work lands between two snapshots.

#[path = "counters/distributed.rs"]
mod distributed;
#[path = "counters/graph.rs"]
mod graph;
#[path = "counters/step_in_backward.rs"]
mod step_in_backward;

use gradstep::optim::raw::ZERO_TENSORS_PER_LAUNCH as ZERO_MAX;
use gradstep::optim::{Adam, AdamConfig, Impl, Optimizer, SgdConfig, SGD};
use gradstep::{DType, Device, Tensor};

/// Tests that read the counters run one at a time.
static EMU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn emu_lock() -> std::sync::MutexGuard<'static, ()> {
    EMU.lock().unwrap_or_else(|e| e.into_inner())
}

fn params(device: Device, n32: usize, n16: usize) -> Vec<Tensor> {
    let mut v = Vec::new();
    for i in 0..n32 + n16 {
        let dtype = if i < n32 { DType::F32 } else { DType::F16 };
        let p = Tensor::full(&[1 + i % 37], 1.0, dtype, device).unwrap();
        p.requires_grad_(true).unwrap();
        p.set_grad(Some(
            Tensor::full(&[1 + i % 37], 0.5, dtype, device).unwrap(),
        ))
        .unwrap();
        v.push(p);
    }
    v
}

#[test]
fn zero_grad_launches_per_dtype_group_without_sync() {
    let _guard = emu_lock();
    let ps = params(Device::Emu(0), 1000, 10);
    let mut opt = SGD::new(ps.clone(), SgdConfig::new(0.1)).unwrap();
    let before = Device::Emu(0).counters().unwrap();
    opt.zero_grad(false).unwrap();
    let d = Device::Emu(0).counters().unwrap() - before;
    assert!(
        d.launches as usize <= 1000usize.div_ceil(ZERO_MAX) + 1,
        "{d:?}"
    );
    assert_eq!((d.syncs, d.dtoh), (0, 0));
    for p in &ps {
        assert!(p
            .grad()
            .unwrap()
            .to_vec_f64()
            .unwrap()
            .iter()
            .all(|&x| x == 0.0));
    }
}

#[test]
fn arena_zero_grad_is_one_memset_per_group() {
    let _guard = emu_lock();
    let ps = params(Device::Emu(0), 300, 5);
    let mut opt = SGD::new(ps.clone(), SgdConfig::new(0.1)).unwrap();
    opt.core_mut().enable_grad_arena().unwrap();
    let before = Device::Emu(0).counters().unwrap();
    opt.zero_grad(false).unwrap();
    let d = Device::Emu(0).counters().unwrap() - before;
    assert_eq!(d.launches + d.memsets, 2, "{d:?}");
}

#[test]
fn fused_step_is_one_launch_per_group_without_sync() {
    let _guard = emu_lock();
    let ps = params(Device::Emu(0), 1000, 0);
    let mut opt = Adam::new(ps, AdamConfig::new(1e-3)).unwrap();
    opt.set_impl(Impl::Fused);
    opt.step().unwrap();
    let before = Device::Emu(0).counters().unwrap();
    opt.step().unwrap();
    let d = Device::Emu(0).counters().unwrap() - before;
    assert_eq!(d.launches, 1, "{d:?}");
    assert_eq!((d.syncs, d.dtoh), (0, 0));
}

#[test]
fn zero_grad_detaches_or_clears_requires_grad_then_zeroes_on_cpu() {
    let ps = params(Device::Cpu, 3, 1);
    ps[0].grad().unwrap().requires_grad_(true).unwrap();
    let mut opt = SGD::new(ps.clone(), SgdConfig::new(0.1)).unwrap();
    opt.zero_grad(false).unwrap();
    for p in &ps {
        let g = p.grad().unwrap();
        assert!(!g.requires_grad());
        assert!(g.to_vec_f64().unwrap().iter().all(|&x| x == 0.0));
    }
    opt.zero_grad(true).unwrap();
    assert!(ps.iter().all(|p| p.grad().is_none()));
}

#[test]
fn zero_grad_still_steps_none_grad_skips() {
    // A zero grad still applies weight decay; a None grad leaves the param alone.
    let ps = params(Device::Cpu, 2, 0);
    let mut opt = SGD::new(ps.clone(), SgdConfig::new(0.5).weight_decay(0.1)).unwrap();
    opt.zero_grad(false).unwrap();
    ps[1].set_grad(None).unwrap();
    opt.step().unwrap();
    assert!(ps[0]
        .to_vec_f64()
        .unwrap()
        .iter()
        .all(|&x| (x - 0.95).abs() < 1e-7));
    assert!(ps[1].to_vec_f64().unwrap().iter().all(|&x| x == 1.0));
    assert!(opt.param_state(1).unwrap().is_none());
}

#[test]
fn construction_validates_like_pytorch() {
    let p = || params(Device::Cpu, 1, 0);
    assert!(SGD::new(p(), SgdConfig::new(-1.0)).is_err());
    assert!(SGD::new(p(), SgdConfig::new(0.1).nesterov(true)).is_err());
    assert!(SGD::new(
        p(),
        SgdConfig::new(0.1)
            .momentum(0.9)
            .dampening(0.1)
            .nesterov(true)
    )
    .is_err());
    assert!(SGD::new(vec![], SgdConfig::new(0.1)).is_err());
    assert!(Adam::new(p(), AdamConfig::new(0.1).betas(1.0, 0.999)).is_err());
    assert!(Adam::new(p(), AdamConfig::new(0.1).eps(-1.0)).is_err());
    let q = p();
    let mut opt = SGD::new(q.clone(), SgdConfig::new(0.1)).unwrap();
    assert!(opt.add_param_group(q, SgdConfig::new(0.2)).is_err());
    assert_eq!(opt.param_groups().len(), 1);
}

#[test]
fn load_state_dict_round_trips_and_rejects_mismatch_unchanged() {
    let ps = params(Device::Cpu, 2, 0);
    let mut opt = Adam::new(ps.clone(), AdamConfig::new(0.01)).unwrap();
    opt.step().unwrap();
    let sd = opt.state_dict().unwrap();
    assert_eq!(sd.meta.state[&0].step, Some(1.0));
    let mut other = Adam::new(ps.clone(), AdamConfig::new(0.5)).unwrap();
    other.load_state_dict(&sd).unwrap();
    assert_eq!(other.lr(0).unwrap(), 0.01);
    assert_eq!(other.param_state(1).unwrap().unwrap().step, Some(1.0));
    let mut bad = sd.clone();
    bad.tensors.clear();
    let mut fresh = Adam::new(ps, AdamConfig::new(0.5)).unwrap();
    assert!(fresh.load_state_dict(&bad).is_err());
    assert_eq!(fresh.lr(0).unwrap(), 0.5);
    assert!(fresh.param_state(0).unwrap().is_none());
}

#[test]
fn clipping_launches_per_dtype_group_without_sync() {
    let _guard = emu_lock();
    let ps = params(Device::Emu(0), 300, 20);
    let before = Device::Emu(0).counters().unwrap();
    let total = gradstep::optim::clip_grad_norm_(&ps, 0.1, 2.0, false, None).unwrap();
    let d = Device::Emu(0).counters().unwrap() - before;
    // Per dtype: partials, tensor norms, the scaled write; once: the total.
    assert_eq!(d.launches, 2 * 3 + 1, "{d:?}");
    assert_eq!((d.syncs, d.dtoh), (0, 0), "{d:?}");
    let before = Device::Emu(0).counters().unwrap();
    gradstep::optim::clip_grad_value_(&ps, 0.001, None).unwrap();
    let d = Device::Emu(0).counters().unwrap() - before;
    assert_eq!((d.launches, d.syncs, d.dtoh), (2, 0, 0), "{d:?}");
    // The norm of 320 grads of 0.5 (about 38, then clipped to 0.1: each grad about 0.0013, then clamped to 0.001).
    let n: f64 = (0..320)
        .map(|i| 0.25 * (1 + i % 37) as f64)
        .sum::<f64>()
        .sqrt();
    assert!((total.item().unwrap() - n).abs() < 1e-3 * n);
    for p in &ps {
        let bound = Tensor::full(&[], 0.001, p.dtype(), Device::Cpu)
            .unwrap()
            .item()
            .unwrap();
        assert!(p
            .grad()
            .unwrap()
            .to_vec_f64()
            .unwrap()
            .iter()
            .all(|&x| x == bound));
    }
}
