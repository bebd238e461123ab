//! `nn`: the PyTorch quickstart model (names, init, forward, backward), PyTorch's
//! training reference cases replayed with a plain SGD step, module utilities, and the
//! same gradients on the CPU and the emulated GPU.

use gradstep::autograd::no_grad;
use gradstep::nn::{
    CrossEntropyLoss, Dropout, Embedding, Flatten, LayerNorm, Linear, MSELoss, Module, ReLU,
    Sequential, StateDict, GELU,
};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Result, Tensor};
use serde_json::Value;

use crate::common::{assert_close, case_file, floats, usizes};

/// PyTorch's quickstart `NeuralNetwork`: `flatten`, then `linear_relu_stack`.
fn quickstart(sizes: [usize; 4], seed: u64, dtype: DType, device: Device) -> Result<Sequential> {
    let mut rng = Rng::new(seed);
    let [i, h1, h2, o] = sizes;
    let stack = Sequential::new()
        .add(Linear::new(i, h1, true, &mut rng, dtype, device)?)
        .add(ReLU::new())
        .add(Linear::new(h1, h2, true, &mut rng, dtype, device)?)
        .add(ReLU::new())
        .add(Linear::new(h2, o, true, &mut rng, dtype, device)?);
    Ok(Sequential::new()
        .add_named("flatten", Flatten::new())
        .add_named("linear_relu_stack", stack))
}

const NAMES: [&str; 6] = [
    "linear_relu_stack.0.weight",
    "linear_relu_stack.0.bias",
    "linear_relu_stack.2.weight",
    "linear_relu_stack.2.bias",
    "linear_relu_stack.4.weight",
    "linear_relu_stack.4.bias",
];

#[test]
fn quickstart_parameter_names_shapes_and_init() {
    let m = quickstart([784, 512, 512, 10], 0, DType::F32, Device::Cpu).unwrap();
    let named = m.named_parameters();
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, NAMES);
    let shapes: Vec<Vec<usize>> = named.iter().map(|(_, t)| t.shape().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![512, 784],
            vec![512],
            vec![512, 512],
            vec![512],
            vec![10, 512],
            vec![10]
        ]
    );
    for (n, t) in &named {
        assert!(t.is_leaf() && t.requires_grad(), "{n}");
        let fan_in = if n.starts_with("linear_relu_stack.0") {
            784.0
        } else {
            512.0f64
        };
        let bound = 1.0 / fan_in.sqrt();
        let v = t.to_vec_f64().unwrap();
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "{n} outside U(-{bound}, {bound})"
        );
        // Uniform: the mean |x| is about bound / 2.
        let mean_abs = v.iter().map(|x| x.abs()).sum::<f64>() / v.len() as f64;
        assert!(
            (mean_abs / bound - 0.5).abs() < 0.2,
            "{n}: mean |x| {mean_abs} for bound {bound}"
        );
    }
    // Reproducible from the seed, different for another.
    let again = quickstart([784, 512, 512, 10], 0, DType::F32, Device::Cpu).unwrap();
    let other = quickstart([784, 512, 512, 10], 1, DType::F32, Device::Cpu).unwrap();
    let first = |m: &Sequential| m.parameters()[0].to_vec::<f32>().unwrap();
    assert_eq!(first(&m), first(&again));
    assert_ne!(first(&m), first(&other));
}

/// Loss, logits and gradients of the quickstart model on `device` for a fixed batch.
fn quickstart_step(device: Device) -> Result<(f64, Vec<f64>, Vec<Vec<f64>>)> {
    let m = quickstart([784, 512, 512, 10], 42, DType::F32, device)?;
    let x = Tensor::rand(&[8, 1, 28, 28], 7, DType::F32, device)?;
    let y = Tensor::from_slice(&[3i64, 0, 9, 1, 1, 5, 7, 2], &[8], device)?;
    let logits = m.forward(&x)?;
    let loss = CrossEntropyLoss::new().forward(&logits, &y)?;
    loss.backward()?;
    let grads = m
        .parameters()
        .iter()
        .map(|p| p.grad().expect("grad").to_vec_f64())
        .collect::<Result<_>>()?;
    Ok((loss.item()?, logits.to_vec_f64()?, grads))
}

#[test]
fn quickstart_gradients_agree_on_cpu_and_emulated_gpu() {
    let (loss_c, logits_c, grads_c) = quickstart_step(Device::Cpu).unwrap();
    assert!(loss_c.is_finite() && grads_c.iter().all(|g| g.iter().any(|v| *v != 0.0)));
    let (loss_e, logits_e, grads_e) = quickstart_step(Device::Emu(0)).unwrap();
    assert!((loss_c - loss_e).abs() < 1e-5, "loss {loss_c} vs {loss_e}");
    assert_close("logits", &logits_e, &logits_c, 1e-4, 1e-5);
    for (k, (e, c)) in grads_e.iter().zip(&grads_c).enumerate() {
        assert_close(NAMES[k], e, c, 1e-3, 1e-6);
    }
}

/// The quickstart's forward and gradients with every `Linear` + `ReLU` pair run as
/// separate ops (each child's `forward`), as a list of per-sample values.
fn unfused_step(m: &Sequential, x: &Tensor, y: &Tensor) -> Result<Vec<Vec<f64>>> {
    fn forward(m: &dyn Module, x: Tensor) -> Result<Tensor> {
        let children = m.children();
        if children.is_empty() {
            return m.forward(&x);
        }
        children.into_iter().try_fold(x, |x, (_, c)| forward(c, x))
    }
    let logits = forward(m, x.clone())?;
    step_values(m, &logits, y)
}

fn step_values(m: &Sequential, logits: &Tensor, y: &Tensor) -> Result<Vec<Vec<f64>>> {
    for p in m.parameters() {
        p.set_grad(None)?;
    }
    let loss = CrossEntropyLoss::new().forward(&logits.cast(DType::F32)?, y)?;
    loss.backward()?;
    let mut out = vec![logits.to_vec_f64()?];
    for p in m.parameters() {
        out.push(p.grad().expect("grad").to_vec_f64()?);
    }
    Ok(out)
}

#[test]
fn sequential_fuses_linear_and_relu_with_the_bits_of_the_separate_ops() {
    for device in [Device::Cpu, Device::Emu(0)] {
        let dtypes: &[DType] = if device == Device::Cpu {
            &[DType::F32, DType::F64, DType::F16]
        } else {
            &[DType::F32, DType::F16]
        };
        for &dtype in dtypes {
            let m = quickstart([40, 33, 20, 10], 3, dtype, device).unwrap();
            // Negative inputs too, so that ReLU drops units.
            let x = Tensor::rand(&[5, 1, 4, 10], 9, dtype, device)
                .unwrap()
                .affine(2.0, -1.0)
                .unwrap();
            let y = Tensor::from_slice(&[3i64, 0, 9, 1, 1], &[5], device).unwrap();
            let fused = m.forward(&x).unwrap();
            let stack = m.children()[1].1.children();
            assert!(stack[1].1.is_relu() && !stack[0].1.is_relu());
            let got = step_values(&m, &fused, &y).unwrap();
            let want = unfused_step(&m, &x, &y).unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{device:?} {dtype:?}: value set {k} differs"
                );
            }
            assert!(got[0].iter().any(|v| *v != 0.0));
        }
    }
}

// ---- PyTorch training cases (tests/data/train.json, train-ref/1) --------------------

/// Replays a plain-SGD case: forward, loss and backward against torch's logits, losses
/// and gradients (accumulated over `every` batches), then `p -= lr * grad`.
fn replay_sgd(case: &Value) -> Result<()> {
    let id = case["id"].as_str().unwrap_or("?");
    let dtype = DType::parse(case["dtype"].as_str().unwrap()).unwrap();
    let (rtol, atol) = (
        case["tolerance"]["rtol"].as_f64().unwrap(),
        case["tolerance"]["atol"].as_f64().unwrap(),
    );
    let lr = case["hyperparams"]["lr"].as_f64().unwrap();
    let set_to_none = case["zero_grad"]["set_to_none"].as_bool().unwrap();
    // Asserts a tensor's values against a list of the case within its tolerance.
    let close = |what: &str, got: &Tensor, want: &Value| -> Result<()> {
        assert_close(what, &got.to_vec_f64()?, &floats(want), rtol, atol);
        Ok(())
    };
    let mut model = quickstart([20, 16, 16, 5], 0, dtype, Device::Cpu)?;
    let mut state = StateDict::new();
    for p in case["params"].as_array().unwrap() {
        let t = Tensor::from_f64s(
            &floats(&p["init"]),
            &usizes(&p["shape"]),
            dtype,
            Device::Cpu,
        )?;
        state.insert(p["name"].as_str().unwrap().to_string(), t);
    }
    model.load_state_dict(&state, true)?;
    let params = model.parameters();
    let loss_fn = CrossEntropyLoss::new();
    let batches = case["batches"].as_array().unwrap();
    for (s, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        for (j, b) in step["batches"].as_array().unwrap().iter().enumerate() {
            let b = &batches[b.as_u64().unwrap() as usize];
            let x = Tensor::from_f64s(
                &floats(&b["x"]["data"]),
                &usizes(&b["x"]["shape"]),
                dtype,
                Device::Cpu,
            )?;
            let y_idx: Vec<i64> = b["y"]["int_data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            let y = Tensor::from_slice(&y_idx, &[y_idx.len()], Device::Cpu)?;
            let logits = model.forward(&x)?;
            let loss = loss_fn.forward(&logits, &y)?;
            let what = format!("{id} step {s} batch {j}");
            close(&format!("{what} logits"), &logits, &step["logits"][j])?;
            assert_close(
                &format!("{what} loss"),
                &[loss.item()?],
                &[step["losses"][j].as_f64().unwrap()],
                rtol,
                atol,
            );
            if j == 0 {
                for p in &params {
                    match (set_to_none, p.grad()) {
                        (true, _) | (false, None) => p.set_grad(None)?,
                        (false, Some(g)) => g.zero_()?,
                    }
                }
            }
            loss.backward()?;
        }
        let _g = no_grad();
        for (k, p) in params.iter().enumerate() {
            let g = p.grad().expect("grad");
            close(&format!("{id} step {s} grads[{k}]"), &g, &step["grads"][k])?;
            p.add_(&g, -lr)?;
            close(&format!("{id} step {s} params[{k}]"), p, &step["params"][k])?;
        }
    }
    Ok(())
}

#[test]
fn pytorch_training_cases_with_plain_sgd() {
    let file = case_file("train.json", "train-ref/1");
    let mut n = 0;
    for case in file["cases"].as_array().unwrap() {
        if case["id"].as_str().unwrap().starts_with("sgd_quickstart/") {
            replay_sgd(case).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 8);
}

// ---- module utilities ---------------------------------------------------------------

#[test]
fn load_state_dict_copies_in_place_and_checks_names() {
    let mut m = quickstart([6, 4, 4, 2], 1, DType::F64, Device::Cpu).unwrap();
    let src = quickstart([6, 4, 4, 2], 2, DType::F64, Device::Cpu).unwrap();
    let before = m.parameters();
    m.load_state_dict(&src.state_dict(), true).unwrap();
    for ((p, q), b) in m.parameters().iter().zip(src.parameters()).zip(&before) {
        assert!(p.same_tensor(b), "parameters keep their identity");
        assert_eq!(p.to_vec_f64().unwrap(), q.to_vec_f64().unwrap());
    }
    let mut partial = src.state_dict();
    partial.remove("linear_relu_stack.4.bias");
    assert!(m.load_state_dict(&partial, true).is_err());
    m.load_state_dict(&partial, false).unwrap();
    let mut extra = src.state_dict();
    extra.insert(
        "nope".into(),
        Tensor::zeros(&[1], DType::F64, Device::Cpu).unwrap(),
    );
    assert!(m.load_state_dict(&extra, true).is_err());
    let mut wrong = src.state_dict();
    wrong.insert(
        "linear_relu_stack.0.bias".into(),
        Tensor::zeros(&[5], DType::F64, Device::Cpu).unwrap(),
    );
    assert!(m.load_state_dict(&wrong, false).is_err());
}

#[test]
fn train_and_eval_switch_dropout() {
    let mut m = Sequential::new()
        .add(Dropout::new(0.5, 3).unwrap())
        .add(GELU::new());
    let x = Tensor::ones(&[4, 50], DType::F32, Device::Cpu).unwrap();
    let y = m.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let zeros = y.iter().filter(|v| **v == 0.0).count();
    assert!(
        (50..150).contains(&zeros),
        "{zeros} of 200 dropped at p = 0.5"
    );
    let y2 = m.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(y, y2, "each call draws a new mask");
    m.eval();
    assert!(!m.is_training() && !m.children()[0].1.is_training());
    let e = m.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let g1 = 0.841_344_7f32; // gelu(1)
    assert!(e.iter().all(|v| (v - g1).abs() < 1e-6));
    m.train(true);
    assert!(m.children()[0].1.is_training());
}

#[test]
fn layer_norm_embedding_and_losses_as_modules() {
    let ln = LayerNorm::new(&[3], 1e-5, true, DType::F64, Device::Cpu).unwrap();
    let names: Vec<String> = ln.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0, -1.0, 0.0, 1.0], &[2, 3], Device::Cpu).unwrap();
    let y = ln.forward(&x).unwrap().to_vec::<f64>().unwrap();
    let r = (1.0f64 / (2.0 / 3.0 + 1e-5)).sqrt();
    assert_close("layer_norm", &y, &[-r, 0.0, r, -r, 0.0, r], 1e-12, 1e-12);

    let mut rng = Rng::new(5);
    let emb = Embedding::new(10, 4, &mut rng, DType::F32, Device::Cpu).unwrap();
    let idx = Tensor::from_slice(&[1i64, 9, 1], &[3], Device::Cpu).unwrap();
    let e = emb.forward(&idx).unwrap();
    assert_eq!(e.shape(), [3, 4]);
    e.sum_all().unwrap().backward().unwrap();
    let g = emb.weight.grad().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(&g[4..8], &[2.0; 4], "row 1 used twice");
    assert_eq!(&g[36..40], &[1.0; 4]);
    assert_eq!(g.iter().sum::<f32>(), 12.0);

    let a = Tensor::from_slice(&[1.0f64, 2.0], &[2], Device::Cpu).unwrap();
    let b = Tensor::from_slice(&[0.0f64, 4.0], &[2], Device::Cpu).unwrap();
    assert_eq!(MSELoss::new().forward(&a, &b).unwrap().item().unwrap(), 2.5);
    let l = Linear::from_tensors(
        Tensor::ones(&[2, 3], DType::F64, Device::Cpu).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(l.named_parameters().len(), 1);
    assert!(Linear::from_tensors(
        Tensor::ones(&[2, 3], DType::F64, Device::Cpu).unwrap(),
        Some(a.clone())
    )
    .is_ok());
    assert!(
        Linear::from_tensors(Tensor::ones(&[3], DType::F64, Device::Cpu).unwrap(), None).is_err()
    );
}

#[test]
fn to_device_moves_parameters_as_new_leaves() {
    let mut m = quickstart([6, 4, 4, 2], 1, DType::F32, Device::Cpu).unwrap();
    let before: Vec<Vec<f32>> = m.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    m.to_dtype(DType::F64).unwrap();
    assert!(m
        .parameters()
        .iter()
        .all(|p| p.dtype() == DType::F64 && p.is_leaf() && p.requires_grad()));
    m.to_dtype(DType::F32).unwrap();
    let after: Vec<Vec<f32>> = m.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    assert_eq!(before, after);
    if Tensor::zeros(&[1], DType::F32, Device::Emu(0)).is_ok() {
        m.to_device(Device::Emu(0)).unwrap();
        assert!(m
            .parameters()
            .iter()
            .all(|p| p.device() == Device::Emu(0) && p.requires_grad()));
    }
}
