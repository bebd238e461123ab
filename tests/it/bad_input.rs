//! Bad input through the public API: sizes checked before use, output files that lose
//! nothing, checkpoint values validated, data files read safely, conversions rounded
//! once, and kernels kept inside what a tensor owns. Every case is an `Err`, never a
//! panic or an abort.

use std::io::Write;
use std::path::Path;

use gradstep::data::idx::{encode_idx, read_idx};
use gradstep::data::{MnistDataset, Split};
use gradstep::io::{self, TensorFile};
use gradstep::optim::{GradScaler, Optimizer, SgdConfig, SGD};
use gradstep::train::{self, Checkpoint, TrainConfig};
use gradstep::{DType, Device, Error, Tensor};

use super::common::gzip;
use super::train::{config, run, scratch, small_data};

fn is_oom(r: gradstep::Result<Tensor>) -> bool {
    matches!(r, Err(Error::OutOfMemory { .. }))
}

#[test]
fn shapes_whose_size_overflows_are_errors_in_every_constructor() {
    let huge = [(1usize << 63) + 1, 2];
    let msg = |r: gradstep::Result<Tensor>| r.expect_err("must fail").to_string();
    for device in [Device::Cpu, Device::Emu(0)] {
        assert!(msg(Tensor::zeros(&huge, DType::F32, device)).contains("more elements"));
        assert!(
            msg(Tensor::from_f64s(&[1.0, 2.0], &huge, DType::F32, device))
                .contains("more elements")
        );
        assert!(msg(Tensor::from_vec(vec![1f32, 2.0], &huge, device)).contains("more elements"));
        assert!(msg(Tensor::rand(&huge, 1, DType::F32, device)).contains("more elements"));
        let x = Tensor::ones(&[1, 1], DType::F32, device).unwrap();
        assert!(x.expand(&huge).is_err());
    }
}

#[test]
fn requests_larger_than_memory_are_out_of_memory_not_aborts() {
    let n = 1usize << 40; // 4 TiB of f32, more than any host this runs on
    for device in [Device::Cpu, Device::Emu(0)] {
        assert!(is_oom(Tensor::zeros(&[n], DType::F32, device)), "{device}");
        assert!(
            is_oom(Tensor::rand(&[n], 1, DType::F32, device)),
            "{device}"
        );
        // A view is free; what is computed from it must fit.
        let x = Tensor::ones(&[1], DType::F32, device).unwrap();
        let big = x.expand(&[n]).unwrap();
        assert!(is_oom(big.relu()), "relu on {device}");
        assert!(is_oom(big.contiguous()), "contiguous on {device}");
        assert!(is_oom(big.add(&big)), "add on {device}");
        let col = Tensor::ones(&[1 << 20, 1], DType::F32, device).unwrap();
        let row = Tensor::ones(&[1, 1 << 20], DType::F32, device).unwrap();
        assert!(is_oom(col.matmul(&row)), "matmul on {device}");
    }
}

// ---- output files ---------------------------------------------------------------------

#[test]
fn outputs_write_through_symlinks_and_refuse_special_files() {
    let dir = scratch("outputs");
    let target = dir.join("target.bin");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.join("link.bin");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("target.bin", &link).unwrap();
        io::write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // One file under two names is refused as two outputs.
        let e = io::check_distinct(&[("--save", &target), ("--plot", &link)]).unwrap_err();
        assert!(e.to_string().contains("same file"), "{e}");
    }
    let sub = dir.join("a-directory");
    std::fs::create_dir_all(&sub).unwrap();
    for bad in [sub.as_path(), Path::new("/dev/null")] {
        let e = io::write_atomic(bad, b"x").unwrap_err().to_string();
        assert!(e.contains("not a file to write"), "{e}");
        assert!(io::check_output(bad).is_err());
    }
    assert!(sub.is_dir());
    let e = io::check_output(&dir.join("missing-dir/x.bin")).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    io::check_output(&dir.join("fresh.bin")).unwrap();
    assert!(!dir.join("fresh.bin").exists(), "the probe leaves nothing");
}

#[test]
fn temporary_names_fit_and_a_killed_save_leaves_nothing_behind() {
    let dir = scratch("temp-names");
    // The longest legal name: the temporary file beside it must still be creatable.
    let long = dir.join("n".repeat(255));
    io::write_atomic(&long, b"long").unwrap();
    assert_eq!(std::fs::read(&long).unwrap(), b"long");
    // A save killed before its rename leaves its temporary file; the next save to the
    // same target reuses and removes it.
    let target = dir.join("ckpt.safetensors");
    let stale = dir.join(".ckpt.safetensors.gradstep-tmp");
    std::fs::File::create(&stale)
        .unwrap()
        .write_all(b"partial")
        .unwrap();
    io::write_atomic(&target, b"whole").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"whole");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("gradstep-tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_bad_save_path_is_refused_before_the_first_epoch() {
    let mut cfg = config(1);
    cfg.save = Some(scratch("bad-save").join("no-such-dir/ckpt.safetensors"));
    let mut out = Vec::new();
    let e = train::train(&cfg, &mut out).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(
        !String::from_utf8_lossy(&out).contains("Epoch"),
        "refused before training"
    );
}

// ---- checkpoint values ------------------------------------------------------------------

/// A checkpoint after one epoch of Adam, and a copy of it with `edit` applied to its JSON
/// metadata and tensors.
fn edited_checkpoint(
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value, &mut Vec<(String, Tensor)>),
) -> std::path::PathBuf {
    let dir = scratch(&format!("ckpt-{name}"));
    let path = dir.join("a.safetensors");
    let mut cfg = config(1);
    cfg.optimizer = train::OptimizerKind::Adam;
    cfg.save = Some(path.clone());
    run(&cfg);
    let mut file = io::load(&path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&file.metadata["gradstep"]).unwrap();
    edit(&mut meta, &mut file.tensors);
    let out = dir.join("edited.safetensors");
    file.metadata
        .insert("gradstep".to_string(), meta.to_string());
    io::save(
        &out,
        &TensorFile {
            tensors: file.tensors,
            metadata: file.metadata,
        },
    )
    .unwrap();
    out
}

/// Resumes from `path` and returns the error text.
fn resume_error(path: &Path) -> String {
    let mut cfg = config(2);
    cfg.optimizer = train::OptimizerKind::Adam;
    cfg.resume = Some(path.to_path_buf());
    let mut out = Vec::new();
    let e = train::train(&cfg, &mut out)
        .expect_err("a bad checkpoint must be refused")
        .to_string();
    assert!(!String::from_utf8_lossy(&out).contains("Epoch"), "{e}");
    e
}

#[test]
fn checkpoint_values_are_validated_naming_the_field() {
    type Edit = fn(&mut serde_json::Value, &mut Vec<(String, Tensor)>);
    let cases: [(&str, Edit, &str); 10] = [
        (
            "step-negative",
            |m, _| m["optimizer_state"]["state"]["0"]["step"] = (-3.0).into(),
            "step -3",
        ),
        (
            "step-fraction",
            |m, _| m["optimizer_state"]["state"]["0"]["step"] = 2.5.into(),
            "step 2.5",
        ),
        (
            "step-absurd",
            |m, _| m["optimizer_state"]["state"]["0"]["step"] = 1e30.into(),
            "not a count",
        ),
        (
            "rng-zero",
            |m, _| m["rng_state"] = serde_json::json!([0, 0, 0, 0]),
            "rng_state",
        ),
        (
            "epoch-absurd",
            |m, _| m["epoch"] = 1_000_000_000u64.into(),
            "epoch",
        ),
        (
            "unknown-key",
            |m, _| m["optimizer_state"]["param_groups"][0]["lr_typo"] = 1.0.into(),
            "lr_typo",
        ),
        (
            "missing-lr",
            |m, _| {
                m["optimizer_state"]["param_groups"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("lr");
            },
            "no 'lr'",
        ),
        (
            "extra-tensor",
            |_, t| {
                let x = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
                t.push(("optimizer.state.0.bogus".into(), x));
            },
            "unexpected tensor",
        ),
        (
            "int-state",
            |_, t| {
                let (_, x) = t
                    .iter_mut()
                    .find(|(n, _)| n == "optimizer.state.0.exp_avg")
                    .unwrap();
                *x = Tensor::zeros(x.shape(), DType::I64, Device::Cpu).unwrap();
            },
            "not a float type",
        ),
        (
            "history-longer",
            |m, _| m["history"]["accuracy"] = serde_json::json!([0.1, 0.2, 0.3]),
            "history",
        ),
    ];
    for (name, edit, want) in cases {
        let path = edited_checkpoint(name, edit);
        let e = resume_error(&path);
        assert!(e.contains(want), "{name}: {e}");
        let _ = Checkpoint::load(&path); // loads or errs, never panics
    }
}

#[test]
fn resumed_settings_follow_the_checkpoint_unless_overridden() {
    let dir = scratch("resume-rule");
    let path = dir.join("a.safetensors");
    let mut cfg = config(1);
    cfg.optimizer = train::OptimizerKind::Adam;
    cfg.lr = 0.01;
    cfg.save = Some(path.clone());
    run(&cfg);
    let ckpt = Checkpoint::load(&path).unwrap();
    let settings = ckpt.meta.unwrap().settings.expect("settings are recorded");
    assert_eq!((settings.batch_size, settings.lr), (32, 0.01));
    // Defaults (SGD, lr 1e-3) are not given explicitly: the checkpoint's win.
    let mut resumed = TrainConfig {
        resume: Some(path.clone()),
        save: None,
        ..config(2)
    };
    let (report, _) = run(&resumed);
    assert_eq!(report.epochs_run, 1);
    // An explicit optimizer overrides: the parameters resume, the optimizer is fresh.
    resumed.resume_overrides.optimizer = true;
    let (report, _) = run(&resumed);
    assert_eq!(report.epochs_run, 1);
}

// ---- data ---------------------------------------------------------------------------------

#[test]
fn multi_member_gzip_is_read_and_a_gzip_bomb_is_refused_in_bounded_memory() {
    let dir = scratch("gzip");
    let idx = encode_idx(&[3, 2], &[1, 2, 3, 4, 5, 6]).unwrap();
    let (a, b) = idx.split_at(7);
    let multi = [gzip(a), gzip(b)].concat();
    let p = dir.join("multi.gz");
    std::fs::write(&p, &multi).unwrap();
    let arr = read_idx(&p, Some(2)).unwrap();
    assert_eq!((arr.dims, arr.data), (vec![3, 2], vec![1, 2, 3, 4, 5, 6]));
    // A header declaring 4 bytes, then 1 GiB of zeros (about 1 MB compressed): refused
    // after reading one byte past what the header declares.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&encode_idx(&[4], &[0; 4]).unwrap()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = dir.join("bomb.gz");
    std::fs::write(&bomb, e.finish().unwrap()).unwrap();
    let msg = read_idx(&bomb, Some(1)).unwrap_err().to_string();
    assert!(msg.contains("trailing bytes"), "{msg}");
}

#[test]
fn labels_are_checked_at_load_time_and_an_empty_training_set_is_an_error() {
    let dir = scratch("labels");
    let src = small_data();
    for f in [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let d = MnistDataset::load(src, Split::Train).unwrap();
    let mut labels = d.labels().to_vec();
    labels[7] = 10;
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        encode_idx(&[labels.len()], &labels).unwrap(),
    )
    .unwrap();
    let e = MnistDataset::load(&dir, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("label 10 of sample 7"),
        "{e}"
    );
    let mut cfg = config(1);
    cfg.train_samples = Some(0);
    let e = train::train(&cfg, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("training set") && e.contains("empty"), "{e}");
}

// ---- conversions and kernels ------------------------------------------------------------

#[test]
fn conversions_to_f16_and_bf16_round_once_on_every_device() {
    // Just above the midpoint of 1 and the next value: the nearest is 1 + 2^-10 (f16) or
    // 1 + 2^-7 (bf16), but through f32 the value first lands on the midpoint, which ties
    // to even (1.0).
    let cases = [
        (
            DType::F16,
            1.0 + 2f64.powi(-11) + 2f64.powi(-40),
            1.0 + 2f64.powi(-10),
        ),
        (
            DType::BF16,
            1.0 + 2f64.powi(-8) + 2f64.powi(-40),
            1.0 + 2f64.powi(-7),
        ),
    ];
    for (dtype, v, want) in cases {
        for device in [Device::Cpu, Device::Emu(0)] {
            let cast = Tensor::from_f64s(&[v], &[1], DType::F64, device)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let filled = Tensor::full(&[3], v, dtype, device).unwrap();
            let what = format!("{dtype} on {device}");
            assert_eq!(cast.to_vec_f64().unwrap(), vec![want], "cast {what}");
            assert_eq!(filled.to_vec_f64().unwrap(), vec![want; 3], "fill {what}");
        }
    }
}

#[test]
fn the_scaler_never_reads_past_an_expanded_grad() {
    for device in [Device::Cpu, Device::Emu(0)] {
        let p = Tensor::zeros(&[1000], DType::F32, device)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let one = Tensor::full(&[1], f64::NAN, DType::F32, device).unwrap();
        p.set_grad(Some(one.expand(&[1000]).unwrap())).unwrap();
        let mut opt = SGD::new(vec![p.clone()], SgdConfig::new(0.1)).unwrap();
        let mut scaler = GradScaler::new(device).unwrap();
        match scaler.step(&mut opt) {
            // The CPU reads the view as it is: the NaN is found and the step skipped.
            Ok(()) => assert!(scaler.found_inf().unwrap(), "{device}"),
            // A GPU refuses a grad it would read past.
            Err(e) => assert!(e.to_string().contains("contiguous"), "{device}: {e}"),
        }
        assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.0; 1000], "{device}");
        let _ = opt.param_groups();
    }
}
