//! The quickstart end to end on a small slice of Fashion-MNIST: the printed lines,
//! checkpoints and exact resume, gradient accumulation, evaluation of a saved state dict
//! against a plain-loop reference, and one-line errors for bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gradstep::data::idx::encode_idx;
use gradstep::data::{MnistDataset, Split};
use gradstep::io::{self as safetensors_io, TensorFile};
use gradstep::nn::Module;
use gradstep::optim::Impl;
use gradstep::tensor::Rng;
use gradstep::train::{self, Checkpoint, EvalConfig, OptimizerKind, TrainConfig};
use gradstep::{DType, Device, Tensor};

const TRAIN_N: usize = 320;
const TEST_N: usize = 200;

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradstep-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_split(dir: &Path, prefix: &str, d: &MnistDataset) {
    let (rows, cols) = d.image_size();
    let n = d.labels().len();
    let px: Vec<u8> = (0..n).flat_map(|i| d.image(i).unwrap().to_vec()).collect();
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte")),
        encode_idx(&[n, rows, cols], &px).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte")),
        encode_idx(&[n], d.labels()).unwrap(),
    )
    .unwrap();
}

/// A directory holding the first samples of the bundled Fashion-MNIST, uncompressed.
pub(crate) fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
        let dir = scratch("data");
        write_split(
            &dir,
            "train",
            &MnistDataset::load(&src, Split::Train)
                .unwrap()
                .take(TRAIN_N),
        );
        write_split(
            &dir,
            "t10k",
            &MnistDataset::load(&src, Split::Test).unwrap().take(TEST_N),
        );
        dir
    })
}

pub(crate) fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        data_dir: small_data().to_path_buf(),
        ..TrainConfig::default()
    }
}

pub(crate) fn run(cfg: &TrainConfig) -> (train::TrainReport, String) {
    let mut out = Vec::new();
    let report = train::train(cfg, &mut out).unwrap();
    (report, String::from_utf8(out).unwrap())
}

/// The parameters' values (f16 widened exactly), by name.
fn params_f32(p: &[(String, Tensor)]) -> HashMap<String, Vec<f32>> {
    p.iter()
        .map(|(n, t)| {
            let t = t.to_dtype(DType::F32).unwrap();
            (n.clone(), t.to_vec::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn prints_the_quickstart_lines() {
    let mut cfg = config(2);
    cfg.loop_options.log_every = 4;
    let (report, text) = run(&cfg);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Using cpu device");
    assert_eq!(lines[1], "Epoch 1");
    assert_eq!(lines[2], "-------------------------------");
    // 10 batches of 32: logged at batches 0, 4, 8.
    let currents: Vec<&str> = lines[3..6].iter().map(|l| &l[l.len() - 13..]).collect();
    assert_eq!(
        currents,
        ["[    0/  320]", "[  128/  320]", "[  256/  320]"]
    );
    for l in &lines[3..6] {
        assert!(l.starts_with("loss: ") && l.as_bytes()[7] == b'.', "{l}");
        assert_eq!(&l[14..16], "  ", "{l}");
    }
    assert_eq!(lines[6], "Test Error: ");
    assert!(
        lines[7].starts_with(" Accuracy: ") && lines[7].ends_with(" "),
        "{:?}",
        lines[7]
    );
    assert_eq!(lines[8], "");
    assert_eq!(lines[9], "Epoch 2");
    assert_eq!(*lines.last().unwrap(), "Done!");
    // The printed numbers are those recorded in the history.
    let (step, loss) = report.history.losses[1];
    assert_eq!(step, 4);
    // Python's f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]" for finite numbers.
    assert_eq!(lines[4], format!("loss: {loss:>7.6}  [  128/  320]"));
    let acc = report.history.accuracy[0];
    assert_eq!(
        format!("{}\n{}", lines[6], lines[7]),
        format!(
            "Test Error: \n Accuracy: {:.1}%, Avg loss: {:>8.6} ",
            100.0 * acc,
            report.history.test_loss[0]
        )
    );
    assert_eq!(report.history.accuracy.len(), 2);
    assert_eq!(report.batches, 20);
}

/// Two epochs straight and one epoch + resume + one epoch give identical parameters.
fn check_resume(optimizer: OptimizerKind, imp: Impl, dtype: DType, schedule: Option<&str>) {
    let dir = scratch(&format!("resume-{}-{dtype}", optimizer.name()));
    let mut cfg = config(2);
    // A resumed schedule continues from the steps already taken.
    cfg.lr_schedule = schedule.map(|s| train::LrSchedule::parse(s).unwrap());
    cfg.optimizer = optimizer;
    cfg.imp = imp;
    cfg.dtype = dtype;
    cfg.lr = if optimizer == OptimizerKind::Sgd {
        0.05
    } else {
        1e-3
    };
    let (straight, straight_text) = run(&cfg);

    let ckpt = dir.join("ckpt.safetensors");
    let (_, first_text) = run(&TrainConfig {
        epochs: 1,
        save: Some(ckpt.clone()),
        ..cfg.clone()
    });
    let (resumed, resumed_text) = run(&TrainConfig {
        resume: Some(ckpt.clone()),
        ..cfg.clone()
    });
    assert_eq!(resumed.epochs_run, 1);
    let (want, got) = (
        params_f32(&straight.parameters),
        params_f32(&resumed.parameters),
    );
    assert_eq!(want.len(), got.len());
    for (name, w) in &want {
        let g = &got[name];
        if let Some(i) = (0..w.len()).find(|&i| w[i].to_bits() != g[i].to_bits()) {
            panic!(
                "{name}[{i}]: {} after two epochs, {} after a resume",
                w[i], g[i]
            );
        }
    }
    assert_eq!(
        straight.history, resumed.history,
        "the history continues across the resume"
    );
    // The printed epochs of the two halves are those of the straight run.
    let body = |t: &str| {
        t.lines()
            .skip(1)
            .filter(|l| *l != "Done!")
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        [body(&first_text), body(&resumed_text)].concat(),
        body(&straight_text)
    );

    let meta = Checkpoint::load(&ckpt).unwrap().meta.unwrap();
    assert_eq!(meta.epoch, 1);
    assert_eq!(meta.optimizer, optimizer.name());
    assert!(meta.rng_state.is_some());
    // Mixed precision: the scaler's state and the f32 master weights are saved too.
    assert_eq!(meta.scaler.is_some(), dtype == DType::F16);
    let masters = Checkpoint::load(&ckpt)
        .unwrap()
        .optimizer
        .tensors
        .keys()
        .filter(|k| k.starts_with("master."))
        .count();
    assert_eq!(masters, if dtype == DType::F16 { 6 } else { 0 });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_continues_exactly_sgd() {
    check_resume(OptimizerKind::Sgd, Impl::Fused, DType::F32, None);
}

#[test]
fn resume_continues_exactly_adam() {
    check_resume(
        OptimizerKind::Adam,
        Impl::Foreach,
        DType::F32,
        Some("cosine:15"),
    );
}

#[test]
fn resume_continues_exactly_f16_adamw() {
    check_resume(
        OptimizerKind::AdamW,
        Impl::Fused,
        DType::F16,
        Some("step:3:0.8"),
    );
}

#[test]
fn gradient_accumulation_is_a_larger_batch() {
    // zero_grad every 2 batches of 32 adds two mean gradients: the step of one batch of
    // 64 (the same samples, the same shuffle) with twice the learning rate.
    let mut acc = config(1);
    acc.loop_options.zero_grad_every = 2;
    acc.lr = 0.05;
    let mut big = config(1);
    big.batch_size = 64;
    big.lr = 0.1;
    let (a, _) = run(&acc);
    let (b, _) = run(&big);
    let (pa, pb) = (params_f32(&a.parameters), params_f32(&b.parameters));
    let mut max_diff = 0f32;
    for (name, va) in &pa {
        for (x, y) in va.iter().zip(&pb[name]) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(max_diff < 1e-5, "max difference {max_diff}");
    // And it differs from stepping every batch.
    let (c, _) = run(&TrainConfig {
        lr: 0.05,
        ..config(1)
    });
    assert_ne!(params_f32(&c.parameters), pa);
    // set_to_none=false zeroes instead of dropping the grads: the same values.
    let mut zeroed = acc.clone();
    zeroed.loop_options.set_to_none = false;
    assert_eq!(params_f32(&run(&zeroed).0.parameters), pa);
}

/// Plain f64 loops: accuracy and mean per-batch loss of the quickstart model.
fn reference_eval(
    weights: &HashMap<String, Vec<f32>>,
    data: &MnistDataset,
    batch: usize,
) -> (f64, f64) {
    let layer = |x: &[f64], i: usize, n_in: usize, relu: bool| -> Vec<f64> {
        let w = &weights[&format!("linear_relu_stack.{i}.weight")];
        let b = &weights[&format!("linear_relu_stack.{i}.bias")];
        (0..b.len())
            .map(|o| {
                let s: f64 = (0..n_in)
                    .map(|k| w[o * n_in + k] as f64 * x[k])
                    .sum::<f64>()
                    + b[o] as f64;
                if relu {
                    s.max(0.0)
                } else {
                    s
                }
            })
            .collect()
    };
    let n = data.labels().len();
    let (mut correct, mut loss_sum, mut batches) = (0usize, 0.0, 0usize);
    for start in (0..n).step_by(batch) {
        let mut batch_loss = 0.0;
        let end = (start + batch).min(n);
        for i in start..end {
            let x: Vec<f64> = data
                .image(i)
                .unwrap()
                .iter()
                .map(|&b| (b as f32 / 255.0) as f64)
                .collect();
            let logits = layer(
                &layer(&layer(&x, 0, 784, true), 2, 512, true),
                4,
                512,
                false,
            );
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let y = data.labels()[i] as usize;
            batch_loss += lse - logits[y];
            let arg = (0..10).fold(0, |a, j| if logits[j] > logits[a] { j } else { a });
            correct += (arg == y) as usize;
        }
        loss_sum += batch_loss / (end - start) as f64;
        batches += 1;
    }
    (correct as f64 / n as f64, loss_sum / batches as f64)
}

#[test]
fn eval_of_a_bare_state_dict_matches_a_plain_loop() {
    // A state dict as PyTorch's safetensors.torch.save_file writes it: the model's names,
    // no metadata.
    let dir = scratch("eval");
    let model = train::quickstart_model(&mut Rng::new(3), DType::F32, Device::Cpu).unwrap();
    let sd = TensorFile {
        tensors: model.named_parameters(),
        metadata: HashMap::new(),
    };
    let path = dir.join("model.safetensors");
    safetensors_io::save(&path, &sd).unwrap();
    let cfg = EvalConfig {
        load: path.clone(),
        device: Device::Cpu,
        batch_size: 64,
        data_dir: small_data().to_path_buf(),
        test_samples: None,
    };
    let mut out = Vec::new();
    let (acc, loss) = train::eval(&cfg, &mut out).unwrap();
    let data = MnistDataset::load(small_data(), Split::Test).unwrap();
    let (ref_acc, ref_loss) = reference_eval(&params_f32(&model.named_parameters()), &data, 64);
    assert_eq!(acc, ref_acc);
    assert!((loss - ref_loss).abs() < 1e-5, "{loss} vs {ref_loss}");
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("Test Error: \n Accuracy: "));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_checkpoints_leave_the_model_untouched() {
    let dir = scratch("bad-ckpt");
    let ckpt = dir.join("ckpt.safetensors");
    run(&TrainConfig {
        epochs: 1,
        save: Some(ckpt.clone()),
        ..config(1)
    });
    let bytes = std::fs::read(&ckpt).unwrap();
    let mut model = train::quickstart_model(&mut Rng::new(9), DType::F32, Device::Cpu).unwrap();
    let before = params_f32(&model.named_parameters());

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[12] = b'#';
    let corrupt_path = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    for p in [&truncated, &corrupt_path, &dir.join("missing.safetensors")] {
        let e = Checkpoint::load(p).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && !e.contains('\n'),
            "{e}"
        );
    }

    // A checkpoint whose first layer has another shape: rejected before anything changes.
    let mut other = train::quickstart_model(&mut Rng::new(1), DType::F32, Device::Cpu)
        .unwrap()
        .named_parameters();
    let last = other.len() - 1;
    other[last].1 = Tensor::zeros(&[11], DType::F32, Device::Cpu).unwrap();
    let mismatched = dir.join("mismatched.safetensors");
    safetensors_io::save(
        &mismatched,
        &TensorFile {
            tensors: other,
            metadata: HashMap::new(),
        },
    )
    .unwrap();
    let c = Checkpoint::load(&mismatched).unwrap();
    let e = c
        .apply_model(&mut model, &mismatched)
        .unwrap_err()
        .to_string();
    assert!(e.contains("linear_relu_stack.4.bias has shape [11]"), "{e}");
    assert_eq!(params_f32(&model.named_parameters()), before);

    // Resuming with another optimizer: an error, nothing changes.
    let c = Checkpoint::load(&ckpt).unwrap();
    let mut opt = OptimizerKind::Adam
        .build(model.parameters(), 1e-3, 0.0, Impl::Fused)
        .unwrap();
    let e = c
        .apply_training(&mut model, opt.as_mut(), "adam", None, &ckpt)
        .unwrap_err()
        .to_string();
    assert!(e.contains("optimizer sgd"), "{e}");
    assert_eq!(params_f32(&model.named_parameters()), before);

    // No temporary files are left next to the checkpoint.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs the CLI; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradstep"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], what: &str) {
    let (code, _, err) = cli(args);
    assert_ne!(code, 0, "{args:?}");
    assert_ne!(code, 101, "{args:?} panicked: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(what),
        "{args:?}: '{err}' lacks '{what}'"
    );
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = scratch("cli");
    let data = small_data().to_str().unwrap();
    let missing = dir.join("nowhere");
    assert_one_line_error(
        &["train", "--data-dir", missing.to_str().unwrap()],
        "data directory not found",
    );
    assert_one_line_error(
        &["train", "--data-dir", data, "--device", "tpu"],
        "unknown device 'tpu'",
    );
    assert_one_line_error(
        &["train", "--data-dir", data, "--optimizer", "lbfgs"],
        "unknown optimizer",
    );
    assert_one_line_error(
        &["train", "--data-dir", data, "--dtype", "f64"],
        "unknown dtype 'f64'",
    );
    if Device::cuda_if_available(0) == Device::Cpu {
        assert_one_line_error(&["train", "--data-dir", data, "--device", "cuda"], "CUDA");
    }
    assert_one_line_error(
        &["train", "--data-dir", data, "--device", "cpu", "--graph"],
        "--graph",
    );
    assert_one_line_error(
        &["train", "--data-dir", data, "--lr-schedule", "exp:0.9"],
        "unknown schedule 'exp'",
    );
    assert_one_line_error(
        &[
            "train",
            "--data-dir",
            data,
            "--optimizer",
            "adam",
            "--momentum",
            "0.9",
        ],
        "SGD option",
    );
    assert_one_line_error(
        &[
            "train",
            "--data-dir",
            data,
            "--device",
            "emu",
            "--graph",
            "--zero-grad-every",
            "2",
        ],
        "gradient accumulation",
    );
    // Images of 32x32 do not fit the 784-input model.
    let wrong = dir.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            wrong.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[2, 32, 32], &[0; 2048]).unwrap(),
        )
        .unwrap();
        std::fs::write(
            wrong.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[2], &[0, 1]).unwrap(),
        )
        .unwrap();
    }
    assert_one_line_error(
        &["train", "--data-dir", wrong.to_str().unwrap()],
        "do not fit the model",
    );
    // A truncated IDX file.
    let cut = dir.join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    for f in std::fs::read_dir(small_data()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, cut.join(f.file_name().unwrap())).unwrap();
    }
    let images = cut.join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&["train", "--data-dir", cut.to_str().unwrap()], "truncated");
    // Unreadable checkpoints.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    assert_one_line_error(
        &["eval", "--data-dir", data, "--load", junk.to_str().unwrap()],
        "junk.safetensors",
    );
    assert_one_line_error(
        &[
            "eval",
            "--data-dir",
            data,
            "--load",
            missing.to_str().unwrap(),
        ],
        "nowhere",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_trains_saves_and_evaluates() {
    let dir = scratch("cli-ok");
    let data = small_data().to_str().unwrap();
    let ckpt = dir.join("m.safetensors");
    let (code, out, err) = cli(&[
        "train",
        "--data-dir",
        data,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--save",
        ckpt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let report: Vec<&str> = out.lines().filter(|l| l.starts_with(" Accuracy")).collect();
    let (code, eval_out, err) = cli(&[
        "eval",
        "--data-dir",
        data,
        "--device",
        "cpu",
        "--load",
        ckpt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(eval_out.lines().nth(1), report.last().copied());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `train --graph` against the eager run: the same printed lines and parameters, bit for
/// bit, with a learning rate that changes every batch; most steps replayed.
fn graph_matches_eager(cfg: TrainConfig) -> train::TrainReport {
    let (eager, eager_text) = run(&cfg);
    let (graph, graph_text) = run(&TrainConfig {
        graph: true,
        ..cfg.clone()
    });
    assert_eq!(eager_text, graph_text, "{:?}", cfg.optimizer);
    for ((name, a), (_, b)) in eager.parameters.iter().zip(&graph.parameters) {
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_vec_f64()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(a), bits(b), "{name}");
    }
    // Per epoch: one eager warm-up step (the first epoch only), the partial last batch
    // eagerly, every other batch replayed (the capture's own step included).
    let per_epoch = cfg.train_samples.unwrap().div_ceil(cfg.batch_size);
    assert_eq!(eager.replayed_steps, 0);
    assert_eq!(graph.replayed_steps, cfg.epochs * (per_epoch - 1) - 1);
    assert_eq!(eager.grad_scale, graph.grad_scale);
    graph
}

/// Two epochs of five batches (the last one partial) on the emulated GPU.
fn graph_config(optimizer: OptimizerKind, lr: f64, schedule: &str) -> TrainConfig {
    TrainConfig {
        device: Device::Emu(0),
        optimizer,
        lr,
        lr_schedule: Some(train::LrSchedule::parse(schedule).unwrap()),
        train_samples: Some(150),
        test_samples: Some(64),
        loop_options: train::LoopOptions {
            log_every: 1,
            ..Default::default()
        },
        ..config(2)
    }
}

#[test]
fn graph_training_prints_what_eager_training_prints() {
    let _ = graph_matches_eager(TrainConfig {
        momentum: 0.9,
        ..graph_config(OptimizerKind::Sgd, 0.05, "step:1:0.9")
    });
    let _ = graph_matches_eager(graph_config(OptimizerKind::Adam, 1e-3, "cosine:7"));
    let _ = graph_matches_eager(graph_config(OptimizerKind::AdamW, 1e-3, "linear:0.25:1:12"));
}

#[test]
fn graph_training_in_f16_skips_steps_as_eager_training_does() {
    // An initial scale of 2^24 overflows the f16 gradients: the GradScaler skips steps
    // and backs off, inside the captured step as in the eager one.
    let init_scale = 16777216.0;
    let cfg = TrainConfig {
        dtype: DType::F16,
        init_scale,
        momentum: 0.9,
        ..graph_config(OptimizerKind::Sgd, 0.05, "step:2:0.8")
    };
    let report = graph_matches_eager(cfg);
    let scale = report.grad_scale.unwrap();
    assert!(scale < init_scale, "no step was skipped: scale {scale}");
}

#[test]
fn clipped_training_is_the_same_eager_captured_and_on_the_cpu() {
    let clipped = |cfg: TrainConfig| TrainConfig {
        loop_options: train::LoopOptions {
            clip_grad_norm: Some(0.1),
            ..cfg.loop_options.clone()
        },
        ..cfg
    };
    let sgd = || TrainConfig {
        momentum: 0.9,
        ..graph_config(OptimizerKind::Sgd, 0.05, "step:1:0.9")
    };
    let emu = graph_matches_eager(clipped(sgd()));
    // f16 with a GradScaler: unscale_, clip, step, inside the captured step too.
    let _ = graph_matches_eager(clipped(TrainConfig {
        dtype: DType::F16,
        ..sgd()
    }));
    let cpu = run(&clipped(TrainConfig {
        device: Device::Cpu,
        ..sgd()
    }))
    .0;
    let plain = run(&sgd()).0;
    let max_diff = |a: &train::TrainReport, b: &train::TrainReport| {
        let (pa, pb) = (params_f32(&a.parameters), params_f32(&b.parameters));
        pa.iter()
            .flat_map(|(n, v)| v.iter().zip(&pb[n]).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max)
    };
    assert!(max_diff(&emu, &cpu) < 1e-5, "{}", max_diff(&emu, &cpu));
    assert!(max_diff(&emu, &plain) > 1e-3, "clipping changed nothing");
}

#[test]
fn cli_trains_with_clipping_and_bf16_on_cpu_and_emu() {
    let data = small_data().to_str().unwrap();
    for device in ["cpu", "emu"] {
        for dtype in ["f32", "f16", "bf16"] {
            let (code, out, err) = cli(&[
                "train",
                "--data-dir",
                data,
                "--epochs",
                "1",
                "--device",
                device,
                "--dtype",
                dtype,
                "--clip-grad-norm",
                "1.0",
                "--train-samples",
                "96",
                "--test-samples",
                "32",
            ]);
            assert_eq!(code, 0, "{device} {dtype}: {err}");
            assert!(out.ends_with("Done!\n"), "{device} {dtype}: {out}");
        }
    }
    assert_one_line_error(
        &["train", "--data-dir", data, "--clip-grad-norm=-1"],
        "--clip-grad-norm",
    );
}
