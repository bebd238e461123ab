//! `train --world-size N` on emulated ranks: the same run as one rank with N times the
//! batch, for SGD and AdamW, with even, uneven and empty shards; and its errors.

use gradstep::train::{self, OptimizerKind, TrainConfig};
use gradstep::Device;

use crate::train::{config, run};

fn ranks(world: usize, batch: usize, optimizer: OptimizerKind, samples: usize) -> TrainConfig {
    TrainConfig {
        device: Device::Emu(0),
        world_size: world,
        batch_size: batch,
        optimizer,
        lr: if optimizer == OptimizerKind::Sgd {
            0.05
        } else {
            1e-3
        },
        train_samples: Some(samples),
        test_samples: Some(100),
        ..config(1)
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// The runs end with the same test accuracy and loss within 1e-5 relative, and print
/// the same loss lines. Returns the first run's report.
fn same_run(a: &TrainConfig, b: &TrainConfig) -> train::TrainReport {
    let (ra, ta) = run(a);
    let (rb, tb) = run(b);
    let (acc_a, loss_a) = (ra.history.accuracy[0], ra.history.test_loss[0]);
    let (acc_b, loss_b) = (rb.history.accuracy[0], rb.history.test_loss[0]);
    assert!(rel(acc_a, acc_b) <= 1e-5, "accuracy {acc_a} vs {acc_b}");
    assert!(
        rel(loss_a, loss_b) <= 1e-5,
        "test loss {loss_a} vs {loss_b}"
    );
    let losses = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("loss:"))
            .map(String::from)
            .collect()
    };
    assert_eq!(losses(&ta), losses(&tb));
    assert!(ta.starts_with("Using emu device"), "{ta}");
    assert_eq!(ra.batches, rb.batches);
    ra
}

#[test]
fn two_ranks_of_32_train_like_one_rank_of_64_with_sgd_and_adamw() {
    for opt in [OptimizerKind::Sgd, OptimizerKind::AdamW] {
        // 304 samples: four full global batches and one of 48 (24 per rank).
        let acc = same_run(&ranks(2, 32, opt, 304), &ranks(1, 64, opt, 304))
            .history
            .accuracy[0];
        assert!(acc > 0.2, "{opt:?}: the model did not learn: {acc}");
    }
}

#[test]
fn uneven_and_empty_shards_keep_the_one_rank_run() {
    // Global batches of 6 over 3 ranks; the last has 1 sample: ranks get 1, 0 and 0.
    same_run(
        &ranks(3, 2, OptimizerKind::Sgd, 19),
        &ranks(1, 6, OptimizerKind::Sgd, 19),
    );
    // The last global batch of 30 - 24 = 6 over 4 ranks: 2, 2, 1, 1 (weighted losses).
    let mut a = ranks(4, 6, OptimizerKind::AdamW, 30);
    let mut b = ranks(1, 24, OptimizerKind::AdamW, 30);
    // Gradient accumulation over 2 batches: the first of each pair runs under no_sync.
    a.loop_options.zero_grad_every = 2;
    b.loop_options.zero_grad_every = 2;
    same_run(&a, &b);
}

#[test]
fn world_size_errors_name_the_problem() {
    let err = |cfg: &TrainConfig| train::train(cfg, &mut Vec::new()).unwrap_err().to_string();
    let e = err(&ranks(0, 32, OptimizerKind::Sgd, 64));
    assert!(
        e.contains("--world-size (world_size) must be between 1 and 64, got 0"),
        "{e}"
    );
    let e = err(&TrainConfig {
        device: Device::Cpu,
        ..ranks(2, 32, OptimizerKind::Sgd, 64)
    });
    assert!(e.contains("needs emulated ranks (--device emu)"), "{e}");
    let e = err(&TrainConfig {
        device: Device::Cpu,
        ddp: true,
        ..ranks(1, 32, OptimizerKind::Sgd, 64)
    });
    assert!(e.contains("(or --ddp) needs emulated ranks"), "{e}");
}

#[test]
fn captured_data_parallel_steps_replay_the_all_reduces() {
    let graphed = TrainConfig {
        graph: true,
        ..ranks(2, 32, OptimizerKind::AdamW, 304)
    };
    let report = same_run(&graphed, &ranks(1, 64, OptimizerKind::AdamW, 304));
    // Batch 0 warms up, batch 1 is captured and replayed, 2 and 3 replay; the last,
    // smaller batch runs eagerly.
    assert_eq!(report.replayed_steps, 3);
}

#[test]
fn one_rank_through_ddp_trains_as_without_it() {
    let plain = ranks(1, 32, OptimizerKind::AdamW, 128);
    let ddp = TrainConfig {
        ddp: true,
        ..plain.clone()
    };
    let ((a, _), (b, _)) = (run(&plain), run(&ddp));
    assert_eq!(a.history.test_loss, b.history.test_loss);
    assert_eq!(a.parameters.len(), b.parameters.len());
    for ((n, x), (_, y)) in a.parameters.iter().zip(&b.parameters) {
        assert_eq!(x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "{n}");
    }
}
