//! The training step on the emulated GPU, eager and captured: what a steady step costs
//! (host syncs, driver allocations, launches), what a replay costs, and what a capture
//! refuses.

use gradstep::backend::CounterSnapshot;
use gradstep::graph::StepGraph;
use gradstep::nn::{CrossEntropyLoss, Dropout, Linear, Module, ReLU, Sequential};
use gradstep::optim::{Adam, AdamConfig, LrScheduler, Optimizer, SgdConfig, StepLR, SGD};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Tensor};

use super::emu_lock;

const DEV: Device = Device::Emu(0);
const BATCH: usize = 8;
const FEATURES: usize = 16;
const CLASSES: usize = 4;

fn model() -> Sequential {
    let mut rng = Rng::new(7);
    Sequential::new()
        .add(Linear::new(FEATURES, 32, true, &mut rng, DType::F32, DEV).unwrap())
        .add(ReLU::new())
        .add(Linear::new(32, CLASSES, true, &mut rng, DType::F32, DEV).unwrap())
}

/// Batch `i`, on the host.
fn batch(i: u64) -> (Tensor, Tensor) {
    let x = Tensor::randn(&[BATCH, FEATURES], 100 + i, DType::F32, Device::Cpu).unwrap();
    let y: Vec<i64> = (0..BATCH as i64).map(|r| (r + i as i64) % 4).collect();
    (x, Tensor::from_vec(y, &[BATCH], Device::Cpu).unwrap())
}

/// forward, loss, zero_grad(set_to_none), backward, step.
fn step(
    m: &Sequential,
    opt: &mut dyn Optimizer,
    x: &Tensor,
    y: &Tensor,
) -> gradstep::Result<Tensor> {
    let loss = CrossEntropyLoss::new().forward(&m.forward(x)?, y)?;
    opt.zero_grad(true)?;
    loss.backward()?;
    opt.step()?;
    Ok(loss)
}

fn counters() -> CounterSnapshot {
    DEV.counters().unwrap()
}

/// Static input buffers on the device, holding batch 0.
fn static_inputs() -> (Tensor, Tensor) {
    let (x, y) = batch(0);
    (x.to_device(DEV).unwrap(), y.to_device(DEV).unwrap())
}

#[test]
fn steady_eager_step_makes_no_host_sync_and_no_allocation() {
    let _guard = emu_lock();
    let m = model();
    let mut opt = SGD::new(m.parameters(), SgdConfig::new(0.1).momentum(0.9)).unwrap();
    let (x, y) = static_inputs();
    // The pool and the optimizer's table cache settle over the first steps: the grads of
    // the step before are live during the second step's forward pass, and each of the
    // first three steps finds its grads at new addresses (one new table each).
    for _ in 0..4 {
        step(&m, &mut opt, &x, &y).unwrap();
    }
    let before = counters();
    let mut last = None;
    for i in 0..3 {
        let (xb, yb) = batch(i);
        x.copy_(&xb).unwrap();
        y.copy_(&yb).unwrap();
        last = Some(step(&m, &mut opt, &x, &y).unwrap());
    }
    let d = counters() - before;
    assert_eq!((d.syncs, d.dtoh), (0, 0), "{d:?}");
    assert_eq!((d.allocs, d.frees), (0, 0), "{d:?}");
    // Two uploads per batch (its inputs and targets), none in the step.
    assert_eq!(d.htod, 6, "{d:?}");
    assert!(d.launches > 0);
    // The log line's read-back is the one synchronisation.
    assert!(last.unwrap().item().unwrap().is_finite());
    let stats = DEV.memory_stats().unwrap();
    assert!(stats.allocated_bytes > 0 && stats.allocated_bytes <= stats.reserved_bytes);
    assert!(stats.peak_allocated_bytes >= stats.allocated_bytes);
    assert!(stats.peak_reserved_bytes >= stats.reserved_bytes);
}

/// An eager run of `steps` batches and a run that warms up, captures and replays: the
/// losses and parameters agree bit for bit.
fn eager_and_replayed(make: fn(Vec<Tensor>) -> Box<dyn Optimizer>, sched: bool) {
    let steps = 6;
    let run = |graph: bool| -> (Vec<f64>, Vec<Vec<f64>>) {
        let m = model();
        let mut opt = make(m.parameters());
        let mut lr = sched.then(|| StepLR::new(opt.as_mut(), 1, 0.8).unwrap());
        let (x, y) = static_inputs();
        let mut losses = Vec::new();
        let mut captured: Option<(StepGraph, Tensor)> = None;
        for i in 0..steps {
            let (xb, yb) = batch(i);
            let loss = match &captured {
                Some((g, loss)) => {
                    g.replay_with(&[&xb, &yb]).unwrap();
                    loss.clone()
                }
                None if graph && i == 1 => {
                    x.copy_(&xb).unwrap();
                    y.copy_(&yb).unwrap();
                    let (g, loss) =
                        StepGraph::capture(DEV, &[&x, &y], || step(&m, opt.as_mut(), &x, &y))
                            .unwrap();
                    g.replay().unwrap();
                    captured = Some((g, loss.clone()));
                    loss
                }
                None => {
                    x.copy_(&xb).unwrap();
                    y.copy_(&yb).unwrap();
                    step(&m, opt.as_mut(), &x, &y).unwrap()
                }
            };
            losses.push(loss.item().unwrap());
            if let Some(s) = lr.as_mut() {
                s.step(opt.as_mut()).unwrap();
            }
        }
        let params = m
            .parameters()
            .iter()
            .map(|p| p.to_vec_f64().unwrap())
            .collect();
        (losses, params)
    };
    let (eager_losses, eager_params) = run(false);
    let (graph_losses, graph_params) = run(true);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&eager_losses),
        bits(&graph_losses),
        "{eager_losses:?} vs {graph_losses:?}"
    );
    for (a, b) in eager_params.iter().zip(&graph_params) {
        assert_eq!(bits(a), bits(b));
    }
    // The run learned something: the replays ran steps, not nothing.
    assert_ne!(graph_losses[1], graph_losses[steps as usize - 1]);
}

#[test]
fn replays_match_eager_steps_bit_for_bit() {
    let _guard = emu_lock();
    eager_and_replayed(
        |p| Box::new(SGD::new(p, SgdConfig::new(0.1).momentum(0.9)).unwrap()),
        true,
    );
    eager_and_replayed(
        |p| Box::new(Adam::new(p, AdamConfig::new(1e-2)).unwrap()),
        true,
    );
    eager_and_replayed(
        |p| Box::new(SGD::new(p, SgdConfig::new(0.1)).unwrap()),
        false,
    );
}

#[test]
fn a_replay_is_one_graph_launch_and_nothing_else() {
    let _guard = emu_lock();
    let m = model();
    let mut opt = Adam::new(m.parameters(), AdamConfig::new(1e-3)).unwrap();
    let (x, y) = static_inputs();
    step(&m, &mut opt, &x, &y).unwrap();
    let before = counters();
    let (g, _loss) = StepGraph::capture(DEV, &[&x, &y], || step(&m, &mut opt, &x, &y)).unwrap();
    let captured = counters() - before;
    // Capturing runs nothing. It synchronises once before it starts (a wait and the read
    // of the error record, two syncs by the counters' count): tables written during it
    // go to blocks no queued work still uses.
    assert_eq!(
        (captured.syncs, captured.dtoh, captured.graph_launches),
        (2, 1, 0)
    );
    assert!(captured.launches > 5, "{captured:?}");
    for _ in 0..2 {
        let before = counters();
        g.replay().unwrap();
        let d = counters() - before;
        let want = CounterSnapshot {
            graph_launches: 1,
            ..CounterSnapshot::default()
        };
        assert_eq!(d, want, "a replay: {d:?}");
    }
    // A new batch: one upload per input, then the graph launch.
    let (xb, yb) = batch(3);
    let before = counters();
    g.replay_with(&[&xb, &yb]).unwrap();
    let d = counters() - before;
    assert_eq!(
        (d.htod, d.graph_launches, d.launches, d.syncs, d.allocs),
        (2, 1, 0, 0, 0)
    );
}

#[test]
fn a_host_scalar_learning_rate_that_changes_is_refused_at_replay() {
    let _guard = emu_lock();
    let m = model();
    let mut opt = SGD::new(m.parameters(), SgdConfig::new(0.1).momentum(0.9)).unwrap();
    opt.set_capturable(false);
    let mut sched = StepLR::new(&mut opt, 1, 0.5).unwrap();
    let (x, y) = static_inputs();
    step(&m, &mut opt, &x, &y).unwrap();
    let (g, _) = StepGraph::capture(DEV, &[&x, &y], || step(&m, &mut opt, &x, &y)).unwrap();
    g.replay().unwrap(); // the lr is still the captured one
    sched.step(&mut opt).unwrap();
    let before: Vec<Vec<f64>> = m
        .parameters()
        .iter()
        .map(|p| p.to_vec_f64().unwrap())
        .collect();
    let err = g.replay().unwrap_err().to_string();
    assert!(
        err.contains("learning rate of param group 0")
            && err.contains("0.1")
            && err.contains("0.05"),
        "{err}"
    );
    // Nothing ran.
    let after: Vec<Vec<f64>> = m
        .parameters()
        .iter()
        .map(|p| p.to_vec_f64().unwrap())
        .collect();
    assert_eq!(before, after);
    // A capturable optimizer follows the same schedule.
    opt.set_capturable(true);
    step(&m, &mut opt, &x, &y).unwrap();
    let (g, _) = StepGraph::capture(DEV, &[&x, &y], || step(&m, &mut opt, &x, &y)).unwrap();
    sched.step(&mut opt).unwrap();
    g.replay().unwrap();
}

#[test]
fn a_capture_refuses_what_a_replay_cannot_repeat_and_leaves_the_device_usable() {
    let _guard = emu_lock();
    let m = model();
    let mut opt = Adam::new(m.parameters(), AdamConfig::new(1e-3)).unwrap();
    let (x, y) = static_inputs();
    let expect = |r: gradstep::Result<(StepGraph, Tensor)>, says: &str| {
        let err = r.unwrap_err().to_string();
        assert!(err.contains(says), "expected '{says}' in: {err}");
    };
    // Without a warm-up step the optimizer state would be created (zeroed) by every replay.
    expect(
        StepGraph::capture(DEV, &[&x, &y], || step(&m, &mut opt, &x, &y)),
        "optimizer state",
    );
    step(&m, &mut opt, &x, &y).unwrap();
    // A read-back inside the step.
    expect(
        StepGraph::capture(DEV, &[&x, &y], || {
            let loss = step(&m, &mut opt, &x, &y)?;
            loss.item()?;
            Ok(loss)
        }),
        "host synchronisation",
    );
    // An upload inside the step.
    expect(
        StepGraph::capture(DEV, &[&x, &y], || Tensor::from_vec(vec![1.0f32], &[1], DEV)),
        "copy from the host",
    );
    // Dropout's seed is a host value.
    let drop = Dropout::new(0.5, 3).unwrap();
    expect(
        StepGraph::capture(DEV, &[&x, &y], || drop.forward(&x)),
        "dropout",
    );
    // Static inputs must be on the captured device.
    let host = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
    expect(
        StepGraph::capture(DEV, &[&host], || Ok(host.clone())),
        "cpu",
    );
    // A batch of another shape.
    let (g, _) = StepGraph::capture(DEV, &[&x, &y], || step(&m, &mut opt, &x, &y)).unwrap();
    let small = Tensor::zeros(&[2, FEATURES], DType::F32, Device::Cpu).unwrap();
    let err = g.replay_with(&[&small, &y]).unwrap_err().to_string();
    assert!(err.contains("input 0") && err.contains("[2, 16]"), "{err}");
    // Eager work still runs after the refusals.
    let loss = step(&m, &mut opt, &x, &y).unwrap().item().unwrap();
    assert!(loss.is_finite());
    DEV.synchronize().unwrap();
}

#[test]
fn a_bad_target_is_reported_at_the_next_synchronisation_not_in_the_step() {
    let _guard = emu_lock();
    let m = model();
    let mut opt = SGD::new(m.parameters(), SgdConfig::new(0.1)).unwrap();
    let (x, _) = static_inputs();
    let bad = Tensor::from_vec(vec![0i64, 1, 2, 3, 9, 0, 1, 2], &[BATCH], DEV).unwrap();
    let before = counters();
    let loss = step(&m, &mut opt, &x, &bad).unwrap();
    let d = counters() - before;
    assert_eq!((d.syncs, d.dtoh), (0, 0), "{d:?}");
    let err = loss.item().unwrap_err().to_string();
    assert!(err.contains("target 9") && err.contains("row 4"), "{err}");
    // Reported once: the record is clear again.
    DEV.synchronize().unwrap();
}
