//! The optimizer step inside backward ([`StepInBackward`]): the same parameters as the
//! ordinary zero_grad/backward/step loop for every optimizer and implementation on the
//! CPU and the emulated GPU, at most one layer's grads alive at once, less device
//! memory at the peak (the device's memory statistics, which is why these tests live in
//! the counters' binary), and the combinations it refuses.

use gradstep::nn::{CrossEntropyLoss, Linear, Module, ReLU, Sequential};
use gradstep::optim::{
    clip_grad_norm_, Adam, AdamConfig, AdamW, Impl, Optimizer, SgdConfig, StepInBackward, SGD,
};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Tensor};

use super::emu_lock;

const SIZES: [usize; 4] = [24, 32, 16, 5];

fn model(device: Device, dtype: DType) -> Sequential {
    let mut rng = Rng::new(3);
    let mut m = Sequential::new();
    for (i, w) in SIZES.windows(2).enumerate() {
        m = m.add(Linear::new(w[0], w[1], true, &mut rng, dtype, device).unwrap());
        if i + 2 < SIZES.len() {
            m = m.add(ReLU::new());
        }
    }
    m
}

/// One of the optimizers of this test over `params`.
fn optimizer(kind: usize, params: Vec<Tensor>, imp: Impl) -> Box<dyn Optimizer + Send> {
    let mut o: Box<dyn Optimizer + Send> = match kind {
        0 => Box::new(SGD::new(params, SgdConfig::new(0.1).momentum(0.9).nesterov(true)).unwrap()),
        1 => Box::new(Adam::new(params, AdamConfig::new(1e-2).amsgrad(true)).unwrap()),
        _ => Box::new(AdamW::new(params, AdamConfig::new(1e-2).weight_decay(0.1)).unwrap()),
    };
    o.set_impl(imp);
    o
}

/// A batch of 8 inputs and labels drawn from `seed`.
fn batch(device: Device, dtype: DType, seed: u64) -> (Tensor, Tensor) {
    let x = Tensor::randn(&[8, SIZES[0]], seed, dtype, device).unwrap();
    let y: Vec<i64> = (0..8).map(|i| ((seed as i64) * 7 + i) % 5).collect();
    (x, Tensor::from_vec(y, &[8], device).unwrap())
}

fn loss(m: &Sequential, (x, y): &(Tensor, Tensor)) -> Tensor {
    let out = m.forward(x).unwrap();
    let out = if out.dtype() == DType::F32 {
        out
    } else {
        out.cast(DType::F32).unwrap()
    };
    CrossEntropyLoss::new().forward(&out, y).unwrap()
}

fn values(m: &Sequential) -> Vec<Vec<f64>> {
    m.parameters()
        .iter()
        .map(|p| p.to_vec_f64().unwrap())
        .collect()
}

#[test]
fn stepping_in_backward_equals_the_three_steps() {
    let _guard = emu_lock();
    for device in [Device::Cpu, Device::Emu(0)] {
        for kind in 0..3 {
            for imp in [Impl::ForLoop, Impl::Foreach, Impl::Fused] {
                let what = format!("{device} optimizer {kind} {imp:?}");
                let (plain, inb) = (model(device, DType::F32), model(device, DType::F32));
                let mut opt = optimizer(kind, plain.parameters(), imp);
                let sib = StepInBackward::new(optimizer(kind, inb.parameters(), imp)).unwrap();
                for s in 0..3 {
                    let b = batch(device, DType::F32, s);
                    opt.zero_grad(true).unwrap();
                    loss(&plain, &b).backward().unwrap();
                    opt.step().unwrap();
                    loss(&inb, &b).backward().unwrap();
                    assert!(
                        inb.parameters().iter().all(|p| p.grad().is_none()),
                        "{what}"
                    );
                }
                assert_eq!(values(&plain), values(&inb), "{what}");
                // One group per layer and step: a linear layer is one node of the graph, so
                // its weight and bias become final together and step in one call.
                assert_eq!(sib.groups_stepped(), 3 * 3, "{what}");
            }
        }
    }
}

/// Device bytes allocated at the peak of one steady step over those allocated before it,
/// and the peak gradient bytes of the step in backward (None for the three steps).
fn step_peak(dtype: DType, in_backward: bool) -> (u64, Option<usize>) {
    let device = Device::Emu(0);
    let m = model(device, dtype);
    let b = batch(device, dtype, 1);
    let mut plain = (!in_backward).then(|| optimizer(2, m.parameters(), Impl::Fused));
    let sib = in_backward
        .then(|| StepInBackward::new(optimizer(2, m.parameters(), Impl::Fused)).unwrap());
    let mut step = || {
        if let Some(o) = plain.as_mut() {
            o.zero_grad(true).unwrap();
        }
        let l = loss(&m, &b);
        device.synchronize().unwrap();
        device.reset_peak_memory_stats().unwrap();
        let before = device.memory_stats().unwrap().allocated_bytes;
        let counted = device.counters().unwrap();
        l.backward().unwrap();
        if let Some(o) = plain.as_mut() {
            o.step().unwrap();
        }
        let d = device.counters().unwrap() - counted;
        assert_eq!(
            (d.syncs, d.dtoh),
            (0, 0),
            "{dtype} in backward {in_backward}: {d:?}"
        );
        device.memory_stats().unwrap().peak_allocated_bytes - before
    };
    // Warm-up: the first step makes the optimizer state, the next ones the multi-tensor
    // tables of each group of params stepped together (then kept by the optimizer).
    for _ in 0..3 {
        step();
    }
    if let Some(s) = &sib {
        s.reset_peak_grad_bytes();
    }
    let peak = step();
    (peak, sib.map(|s| s.peak_grad_bytes()))
}

#[test]
fn at_most_one_layer_of_grads_is_alive_and_the_device_peak_falls() {
    let _guard = emu_lock();
    for dtype in [DType::F32, DType::BF16] {
        let bytes = |w: &[usize], bias: usize| (w[0] + bias) * w[1] * dtype.size_in_bytes();
        let largest_layer = SIZES.windows(2).map(|w| bytes(w, 1)).max().unwrap();
        let all_grads: usize = SIZES.windows(2).map(|w| bytes(w, 1)).sum();
        let (plain, _) = step_peak(dtype, false);
        let (inb, held) = step_peak(dtype, true);
        let held = held.unwrap();
        assert!(
            held > 0 && held <= largest_layer,
            "{dtype}: {held} grad bytes at once, the largest layer's are {largest_layer}"
        );
        // The same forward and activations; the three steps also hold every grad at the
        // step, the step in backward one group's.
        let saved = plain.saturating_sub(inb);
        assert!(
            saved as usize >= all_grads - largest_layer,
            "{dtype}: device peak {plain} bytes in the three steps, {inb} stepping in \
             backward: saved {saved}, the grads are {all_grads} (largest layer {largest_layer})"
        );
    }
}

#[test]
fn what_needs_every_grad_at_once_is_refused() {
    let _guard = emu_lock();
    let m = model(Device::Cpu, DType::F32);
    let sib = StepInBackward::new(optimizer(0, m.parameters(), Impl::Fused)).unwrap();
    let e = clip_grad_norm_(&m.parameters(), 1.0, 2.0, false, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stepped inside backward"), "{e}");
    // A param cannot be stepped in backward by two optimizers.
    let e = StepInBackward::new(optimizer(1, m.parameters(), Impl::Fused))
        .unwrap_err()
        .to_string();
    assert!(e.contains("post-accumulate-grad hook"), "{e}");
    // Handing the optimizer back ends it: grads stay, clipping works again.
    let opt = sib.into_optimizer().unwrap();
    loss(&m, &batch(Device::Cpu, DType::F32, 0))
        .backward()
        .unwrap();
    assert!(m.parameters().iter().all(|p| p.grad().is_some()));
    clip_grad_norm_(opt.core().params(), 1.0, 2.0, false, None).unwrap();
    // A param that already has a grad would step with a sum over two passes.
    let e = StepInBackward::new(optimizer(0, m.parameters(), Impl::Fused))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already has a grad"), "{e}");
}
