//! Replays the PyTorch optimizer cases (`tests/data/optim_standard.json`,
//! `tests/data/optim_stress.json`, format `optim-ref/1`) on the CPU and on the emulated
//! GPU, with each of the three step implementations, and checks every param, state
//! buffer, step count and unscaled grad against torch's values within the case tolerance.

use std::sync::OnceLock;

use gradstep::optim::{Adam, AdamConfig, AdamW, Impl, Optimizer, SgdConfig, SGD};
use gradstep::{DType, Device, Tensor};
use serde_json::Value;

const IMPLS: [Impl; 3] = [Impl::ForLoop, Impl::Foreach, Impl::Fused];

/// The parsed case file, read once per process.
fn load(name: &str) -> &'static Value {
    static STD: OnceLock<Value> = OnceLock::new();
    static STRESS: OnceLock<Value> = OnceLock::new();
    let cell = if name.contains("stress") {
        &STRESS
    } else {
        &STD
    };
    cell.get_or_init(|| crate::common::case_file(name, "optim-ref/1"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn b(v: &Value) -> bool {
    v.as_bool().expect("a bool")
}

/// A per-element list expanded to `numel` values (the `tile` rule).
fn expand(list: &Value, numel: usize, tile: Option<usize>) -> Vec<f64> {
    let vals = crate::common::floats(list);
    match tile {
        Some(p) => (0..numel).map(|i| vals[i % p]).collect(),
        None => {
            assert_eq!(vals.len(), numel, "list length");
            vals
        }
    }
}

fn optimizer(case: &Value, params: Vec<Tensor>) -> gradstep::Result<Box<dyn Optimizer>> {
    let h = &case["hyperparams"];
    Ok(match case["optimizer"].as_str().expect("optimizer") {
        "SGD" => Box::new(SGD::new(
            params,
            SgdConfig::new(f(&h["lr"]))
                .momentum(f(&h["momentum"]))
                .dampening(f(&h["dampening"]))
                .weight_decay(f(&h["weight_decay"]))
                .nesterov(b(&h["nesterov"]))
                .maximize(b(&h["maximize"])),
        )?),
        name => {
            let cfg = AdamConfig::new(f(&h["lr"]))
                .betas(f(&h["betas"][0]), f(&h["betas"][1]))
                .eps(f(&h["eps"]))
                .weight_decay(f(&h["weight_decay"]))
                .amsgrad(b(&h["amsgrad"]))
                .maximize(b(&h["maximize"]));
            if name == "AdamW" {
                Box::new(AdamW::new(params, cfg)?)
            } else {
                Box::new(Adam::new(params, cfg)?)
            }
        }
    })
}

/// The first element of `got` outside the tolerance of `want`, as an error message.
fn compare(what: &str, got: &Tensor, want: &[f64], tol: (f64, f64)) -> Result<(), String> {
    let got = got.to_vec_f64().map_err(|e| format!("{what}: {e}"))?;
    match crate::common::mismatch(what, &got, want, tol.0, tol.1) {
        Some(m) => Err(m),
        None => Ok(()),
    }
}

fn scalar(v: &Value, device: Device) -> Option<Tensor> {
    v.as_f64()
        .map(|x| Tensor::from_f64s(&[x], &[], DType::F32, device).expect("scalar"))
}

fn replay(case: &Value, device: Device, imp: Impl) -> Result<(), String> {
    let dtype = DType::parse(case["dtype"].as_str().expect("dtype")).expect("known dtype");
    let tol = (f(&case["tolerance"]["rtol"]), f(&case["tolerance"]["atol"]));
    let e = |x: gradstep::Error| x.to_string();
    let mut params = Vec::new();
    let mut layout = Vec::new();
    for p in case["params"].as_array().expect("params") {
        let shape = crate::common::usizes(&p["shape"]);
        let numel = shape.iter().product();
        let tile = p.get("tile").and_then(|t| t.as_u64()).map(|t| t as usize);
        let t = Tensor::from_f64s(&expand(&p["init"], numel, tile), &shape, dtype, device)
            .map_err(e)?;
        t.requires_grad_(true).map_err(e)?;
        params.push(t);
        layout.push((shape, numel, tile));
    }
    let mut opt = optimizer(case, params.clone()).map_err(e)?;
    opt.set_impl(imp);
    for (s, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        for (j, g) in step["grads"].as_array().expect("grads").iter().enumerate() {
            let (shape, numel, tile) = &layout[j];
            let grad = if g.is_null() {
                None
            } else {
                Some(
                    Tensor::from_f64s(&expand(g, *numel, *tile), shape, dtype, device)
                        .map_err(e)?,
                )
            };
            params[j].set_grad(grad).map_err(e)?;
        }
        let scale = scalar(&step["grad_scale"], device);
        let found_inf = scalar(&step["found_inf"], device);
        if scale.is_some() || found_inf.is_some() {
            opt.step_scaled(scale.as_ref(), found_inf.as_ref())
                .map_err(e)?;
        } else {
            opt.step().map_err(e)?;
        }
        for (j, want) in step["params"]
            .as_array()
            .expect("params")
            .iter()
            .enumerate()
        {
            let (_, numel, tile) = &layout[j];
            compare(
                &format!("step {s} params[{j}]"),
                &params[j],
                &expand(want, *numel, *tile),
                tol,
            )?;
        }
        if let Some(after) = step["grads_after"].as_array() {
            for (j, want) in after.iter().enumerate() {
                let (_, numel, tile) = &layout[j];
                match (params[j].grad(), want.is_null()) {
                    (None, true) => {}
                    (Some(g), false) => compare(
                        &format!("step {s} grads_after[{j}]"),
                        &g,
                        &expand(want, *numel, *tile),
                        tol,
                    )?,
                    _ => return Err(format!("step {s} grads_after[{j}]: presence differs")),
                }
            }
        }
        for (j, want) in step["state"].as_array().expect("state").iter().enumerate() {
            let (_, numel, tile) = &layout[j];
            let got = opt.param_state(j).map_err(e)?;
            let (got, want) = match (got, want.as_object()) {
                (None, None) => continue,
                (Some(g), Some(w)) => (g, w),
                (g, _) => {
                    return Err(format!(
                        "step {s} state[{j}]: got {:?} want {want}",
                        g.map(|g| g.step)
                    ))
                }
            };
            for (k, v) in want {
                if k == "step" {
                    if got.step != Some(f(v)) {
                        return Err(format!(
                            "step {s} state[{j}].step: got {:?} want {}",
                            got.step,
                            f(v)
                        ));
                    }
                    continue;
                }
                let t = got
                    .buffer(k)
                    .ok_or_else(|| format!("step {s} state[{j}]: no buffer {k}"))?;
                compare(
                    &format!("step {s} state[{j}].{k}"),
                    t,
                    &expand(v, *numel, *tile),
                    tol,
                )?;
            }
            if got.buffers.len() != want.keys().filter(|k| *k != "step").count() {
                return Err(format!(
                    "step {s} state[{j}]: buffers {:?}",
                    got.buffers.iter().map(|b| &b.0).collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok(())
}

fn run_file(name: &str, device: Device) {
    let file = load(name);
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in file["cases"].as_array().expect("cases") {
        let id = case["id"].as_str().expect("id");
        // The GPU backends hold no f64 tensors.
        if device != Device::Cpu && case["dtype"] == "float64" {
            continue;
        }
        for imp in IMPLS {
            match replay(case, device, imp) {
                Ok(()) => passed += 1,
                Err(m) => failures.push(format!("FAIL {name} {id} [{device} {imp:?}]: {m}")),
            }
        }
    }
    crate::common::assert_no_failures(passed, &failures);
    assert!(passed > 0);
}

crate::common::case_file_tests! {run_file:
    standard_cases_on_cpu => "optim_standard.json" on Cpu,
    stress_cases_on_cpu => "optim_stress.json" on Cpu,
    standard_cases_on_emu => "optim_standard.json" on Emu(0),
    stress_cases_on_emu => "optim_stress.json" on Emu(0),
}
