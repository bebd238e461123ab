//! `gradstep train --dtype f16` and `--dtype bf16`: mixed precision (16-bit parameters,
//! f32 master weights and state in the optimizer; for f16 a GradScaler) on a small slice
//! of Fashion-MNIST, checked against the same run in f32.

use gradstep::optim::{Adam, AdamConfig, AdamW, Impl, Optimizer, SgdConfig, SGD};
use gradstep::train::{self, LoopOptions, OptimizerKind, TrainConfig, TrainReport};
use gradstep::{DType, Device, Tensor};

/// 20 batches of 32 per epoch.
const TRAIN_N: usize = 640;
const TEST_N: usize = 200;

fn config(dtype: DType, device: Device, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        lr: 0.05,
        optimizer: OptimizerKind::Sgd,
        device,
        dtype,
        loop_options: LoopOptions {
            log_every: 1,
            ..LoopOptions::default()
        },
        train_samples: Some(TRAIN_N),
        test_samples: Some(TEST_N),
        ..TrainConfig::default()
    }
}

fn run(cfg: &TrainConfig) -> (TrainReport, String) {
    let mut out = Vec::new();
    let report = train::train(cfg, &mut out).unwrap();
    (report, String::from_utf8(out).unwrap())
}

/// Mean of the logged losses of the batches in `range` (indices into the history).
fn mean_loss(r: &TrainReport, range: std::ops::Range<usize>) -> f64 {
    let n = range.len() as f64;
    r.history.losses[range].iter().map(|(_, l)| l).sum::<f64>() / n
}

/// Trains in `dtype` (f16 or bf16) and in f32 from the same seed; checks the 16-bit run
/// learns, keeps finite parameters of its dtype, and tracks the f32 run: the last loss
/// within 0.1, the accuracy within `acc_tol`.
/// `weight_tol`: the largest difference allowed between f16 and f32 weights (Adam moves
/// each weight by up to about lr per step whatever the gradient's size, so small
/// gradient differences add up faster than with SGD).
fn check_against_f32(
    dtype: DType,
    device: Device,
    epochs: usize,
    (optimizer, lr): (OptimizerKind, f64),
    (weight_tol, acc_tol): (f64, f64),
) {
    let with = |dtype| TrainConfig {
        optimizer,
        lr,
        ..config(dtype, device, epochs)
    };
    let (half, text) = run(&with(dtype));
    let (full, _) = run(&with(DType::F32));
    let batches = epochs * TRAIN_N.div_ceil(32);
    assert_eq!(half.batches, batches);
    assert_eq!(half.history.losses.len(), batches);
    assert!(
        text.starts_with(&format!("Using {device} device\n")),
        "{text}"
    );
    assert!(text.ends_with("Done!\n"), "{text}");

    // Every logged loss is the unscaled cross-entropy: near ln(10) at the start, and
    // never scaled up by the GradScaler's 65536.
    let first = half.history.losses[0].1;
    assert!((first - 10f64.ln()).abs() < 0.2, "first loss {first}");
    let losses: Vec<f64> = half.history.losses.iter().map(|(_, l)| *l).collect();
    assert!(
        losses.iter().all(|l| l.is_finite() && *l < 5.0),
        "losses {losses:?}"
    );

    // The loss decreases clearly over training.
    let (early, late) = (
        mean_loss(&half, 0..20),
        mean_loss(&half, batches - 20..batches),
    );
    assert!(late < early - 0.5, "f16 loss {early} -> {late}");

    // Mixed precision follows the f32 run (same init, same shuffling).
    let late32 = mean_loss(&full, batches - 20..batches);
    assert!(
        (late - late32).abs() < 0.1,
        "{dtype} {late} vs f32 {late32}"
    );
    let (acc16, acc32) = (
        half.history.accuracy[epochs - 1],
        full.history.accuracy[epochs - 1],
    );
    assert!(acc16 > 0.6, "{dtype} accuracy {acc16}");
    assert!(
        (acc16 - acc32).abs() <= acc_tol,
        "{dtype} accuracy {acc16} vs f32 {acc32}"
    );

    // The parameters stay f16 and finite, and moved away from their initial values.
    assert_eq!(half.parameters.len(), 6);
    for (name, p) in &half.parameters {
        assert_eq!(p.dtype(), dtype, "{name}");
        let v = p.to_vec_f64().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{name} has a non-finite value"
        );
    }
    let (_, w16) = &half.parameters[0];
    let (_, w32) = &full.parameters[0];
    let diff = w16
        .to_vec_f64()
        .unwrap()
        .iter()
        .zip(w32.to_vec_f64().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        diff < weight_tol,
        "{dtype} and f32 weights differ by {diff}"
    );
}

#[test]
fn f16_mixed_precision_trains_on_cpu() {
    check_against_f32(
        DType::F16,
        Device::Cpu,
        10,
        (OptimizerKind::Sgd, 0.05),
        (0.01, 0.06),
    );
}

#[test]
fn bf16_mixed_precision_tracks_f32_on_cpu_and_emu() {
    // bf16 keeps 8 significand bits (f16 11): its weights sit further from f32's, and on
    // 200 test samples one point is two images.
    let sgd = (OptimizerKind::Sgd, 0.05);
    check_against_f32(DType::BF16, Device::Cpu, 10, sgd, (0.03, 0.03));
    check_against_f32(
        DType::BF16,
        Device::Emu(0),
        3,
        (OptimizerKind::AdamW, 1e-3),
        (0.08, 0.03),
    );
}

#[test]
fn bf16_quickstart_epoch_reaches_the_f32_accuracy_within_a_point() {
    // The quickstart itself (all 60,000 training and 10,000 test images, batch 64, SGD
    // at lr 1e-3) for one epoch, in bf16 and in f32.
    let quickstart = |dtype| TrainConfig {
        epochs: 1,
        dtype,
        ..TrainConfig::default()
    };
    let (bf16, _) = run(&quickstart(DType::BF16));
    let (f32, _) = run(&quickstart(DType::F32));
    let (a, b) = (bf16.history.accuracy[0], f32.history.accuracy[0]);
    assert!((a - b).abs() <= 0.01, "bf16 accuracy {a} vs f32 {b}");
    assert!(a > 0.3, "bf16 accuracy {a}: did it learn?");
}

#[test]
fn f16_mixed_precision_with_adamw_trains_on_cpu() {
    check_against_f32(
        DType::F16,
        Device::Cpu,
        4,
        (OptimizerKind::AdamW, 1e-3),
        (0.08, 0.06),
    );
}

/// An f16 parameter with f32 master weights keeps its optimizer state in f32: a
/// gradient of 1e-4 squares to 1e-8, below f16's smallest subnormal, so an f16 second
/// moment would be 0 and the step `m / (sqrt(v) + eps)` would explode. Checked for SGD
/// with momentum, Adam with amsgrad and AdamW, every implementation, on the emulated
/// CUDA kernels against the CPU backend, over 1029 elements (several CPU blocks and GPU
/// chunks, with a ragged tail).
#[test]
fn state_beside_master_weights_is_f32_on_cpu_and_emu() {
    const N: usize = 1029;
    let init: Vec<f32> = (0..N)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let grad_at = |step: usize| -> Vec<f32> {
        (0..N)
            .map(|i| (((i + 3 * step) % 13) as f32 - 6.0) * 2e-5)
            .collect()
    };
    type Make = fn(Tensor) -> Box<dyn Optimizer>;
    let optimizers: [(&str, Make); 3] = [
        ("sgd-momentum", |p| {
            Box::new(SGD::new(vec![p], SgdConfig::new(0.1).momentum(0.9)).unwrap())
        }),
        ("adam-amsgrad", |p| {
            Box::new(Adam::new(vec![p], AdamConfig::new(1e-3).amsgrad(true)).unwrap())
        }),
        ("adamw", |p| {
            Box::new(AdamW::new(vec![p], AdamConfig::adamw(1e-3)).unwrap())
        }),
    ];
    let run = |make: Make, dtype, device, imp| {
        let p = Tensor::from_vec(init.clone(), &[N], Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_device(device)
            .unwrap();
        p.requires_grad_(true).unwrap();
        let mut opt = make(p.clone());
        opt.set_impl(imp);
        opt.core_mut().set_master_weights(true);
        for step in 0..3 {
            let g = Tensor::from_vec(grad_at(step), &[N], Device::Cpu).unwrap();
            p.set_grad(Some(g.to_dtype(dtype).unwrap().to_device(device).unwrap()))
                .unwrap();
            opt.step().unwrap();
        }
        (p.to_vec_f64().unwrap(), opt.state_dict().unwrap())
    };
    for (name, make) in optimizers {
        // f32 parameters: what the f32 master weights must follow.
        let (want, _) = run(make, DType::F32, Device::Cpu, Impl::ForLoop);
        let (cpu, _) = run(make, DType::F16, Device::Cpu, Impl::ForLoop);
        for device in [Device::Cpu, Device::Emu(0)] {
            for imp in [Impl::ForLoop, Impl::Foreach, Impl::Fused] {
                let (got, sd) = run(make, DType::F16, device, imp);
                for i in 0..N {
                    // The f32 run rounded once to f16 (half an ulp, up to 2^-11 * 4 here).
                    let tol = want[i].abs() * 1e-3 + 1e-4;
                    assert!(
                        (got[i] - want[i]).abs() <= tol,
                        "{name} {device} {imp:?} [{i}]: got {}, f32 run {}",
                        got[i],
                        want[i]
                    );
                    // Emulated kernels against the CPU backend: the same f16 value, or
                    // the neighbouring one when the f32 masters differ in the last bit.
                    let ulp = half::f16::from_f64(cpu[i]).to_f64().abs().max(6.1e-5) * 1e-3;
                    assert!(
                        (got[i] - cpu[i]).abs() <= ulp,
                        "{name} {device} {imp:?} [{i}]: got {}, cpu for-loop {}",
                        got[i],
                        cpu[i]
                    );
                }
                assert!(!sd.tensors.is_empty());
                for (key, t) in &sd.tensors {
                    assert_eq!(t.dtype(), DType::F32, "{name} {device} {imp:?}: {key}");
                }
            }
        }
    }
}

#[test]
fn unsupported_dtype_is_an_error() {
    let mut out = Vec::new();
    let err = train::train(&config(DType::F64, Device::Cpu, 1), &mut out).unwrap_err();
    assert!(err.to_string().contains("f64"), "{err}");
}

#[test]
fn grad_scaler_state_round_trips_and_bad_state_changes_nothing() {
    use gradstep::optim::{GradScaler, ScalerState};
    for device in [Device::Cpu, Device::Emu(0)] {
        let mut s = GradScaler::with_options(device, 1024.0, 2.0, 0.5, 3).unwrap();
        let saved = ScalerState {
            scale: 8.0,
            growth_factor: 2.0,
            backoff_factor: 0.25,
            growth_interval: 3,
            growth_tracker: 2,
        };
        s.load_state_dict(&saved).unwrap();
        assert_eq!(s.state_dict().unwrap(), saved, "{device}");
        let bad = ScalerState {
            growth_factor: 0.5,
            ..saved.clone()
        };
        assert!(s.load_state_dict(&bad).is_err());
        assert_eq!(
            s.state_dict().unwrap(),
            saved,
            "{device}: unchanged after an error"
        );
        // The restored tracker counts: one more clean step reaches the interval of 3.
        s.update().unwrap();
        let after = s.state_dict().unwrap();
        assert_eq!((after.scale, after.growth_tracker), (16.0, 0), "{device}");
    }
}
