//! `gradstep train --dtype f16`: mixed precision (f16 parameters, f32 master weights in
//! the optimizer, a GradScaler) on a small slice of Fashion-MNIST, checked against the
//! same run in f32.

use gradstep::train::{self, LoopOptions, OptimizerKind, TrainConfig, TrainReport};
use gradstep::{DType, Device};

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

/// Trains in f16 and in f32 from the same seed; checks the f16 run learns, keeps f16
/// finite parameters, and tracks the f32 run.
fn check_against_f32(device: Device, epochs: usize) {
    let (half, text) = run(&config(DType::F16, device, epochs));
    let (full, _) = run(&config(DType::F32, device, epochs));
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
    assert!((late - late32).abs() < 0.1, "f16 {late} vs f32 {late32}");
    let (acc16, acc32) = (
        half.history.accuracy[epochs - 1],
        full.history.accuracy[epochs - 1],
    );
    assert!(acc16 > 0.6, "f16 accuracy {acc16}");
    assert!(
        (acc16 - acc32).abs() < 0.06,
        "f16 accuracy {acc16} vs f32 {acc32}"
    );

    // The parameters stay f16 and finite, and moved away from their initial values.
    assert_eq!(half.parameters.len(), 6);
    for (name, p) in &half.parameters {
        assert_eq!(p.dtype(), DType::F16, "{name}");
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
    assert!(diff < 0.01, "f16 and f32 weights differ by {diff}");
}

#[test]
fn f16_mixed_precision_trains_on_cpu() {
    check_against_f32(Device::Cpu, 10);
}

#[test]
fn unsupported_dtype_is_an_error() {
    let mut out = Vec::new();
    let err = train::train(&config(DType::F64, Device::Cpu, 1), &mut out).unwrap_err();
    assert!(err.to_string().contains("f64"), "{err}");
}
