//! Finite-difference gradient checks in f64 on the CPU for every differentiable op,
//! first order for all and second order (`create_graph`) for those whose backward is
//! itself differentiable.

use gradstep::autograd::{grad, no_grad};
use gradstep::ops::{self, CrossEntropyOpts, GeluApproximate, Reduction};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Result, Tensor};

use crate::common::assert_close;

/// One input of a checked function.
#[derive(Clone)]
enum Input {
    /// f64 values; the bool says whether its gradient is checked.
    Float(Vec<f64>, Vec<usize>, bool),
    /// i64 indices (never differentiated).
    Index(Vec<i64>, Vec<usize>),
}

fn rand_vals(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.uniform_range(lo, hi))
        .collect()
}

/// A float input uniform in [lo, hi) whose gradient is checked.
fn x(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Input {
    Input::Float(rand_vals(shape, lo, hi, seed), shape.to_vec(), true)
}

/// A standard input: uniform in [-2, 2).
fn u(shape: &[usize], seed: u64) -> Input {
    x(shape, -2.0, 2.0, seed)
}

fn idx(v: &[i64], shape: &[usize]) -> Input {
    Input::Index(v.to_vec(), shape.to_vec())
}

fn build(inputs: &[Input]) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .map(|i| match i {
            Input::Float(v, s, g) => Tensor::from_slice(v, s, Device::Cpu)?.requires_grad_(*g),
            Input::Index(v, s) => Tensor::from_slice(v, s, Device::Cpu),
        })
        .collect()
}

type Func<'a> = dyn Fn(&[Tensor]) -> Result<Tensor> + 'a;

/// `sum(f(xs) * w)` for fixed weights `w` (a scalar function of the inputs).
fn weighted(f: &Func<'_>, xs: &[Tensor], seed: u64) -> Result<Tensor> {
    let y = f(xs)?;
    let w = Tensor::from_slice(
        &rand_vals(y.shape(), -1.0, 1.0, seed),
        y.shape(),
        Device::Cpu,
    )?;
    y.mul(&w)?.sum_all()
}

fn float_positions(inputs: &[Input]) -> Vec<usize> {
    (0..inputs.len())
        .filter(|&i| matches!(inputs[i], Input::Float(_, _, true)))
        .collect()
}

/// Central differences of the scalar `h(inputs)` with respect to input `i`.
fn numeric(h: &dyn Fn(&[Input]) -> Result<f64>, inputs: &[Input], i: usize) -> Result<Vec<f64>> {
    let eps = 1e-6;
    let Input::Float(v, s, g) = &inputs[i] else {
        unreachable!()
    };
    let mut out = Vec::with_capacity(v.len());
    for j in 0..v.len() {
        let at = |d: f64| -> Result<f64> {
            let mut p = inputs.to_vec();
            let mut vv = v.clone();
            vv[j] += d;
            p[i] = Input::Float(vv, s.clone(), *g);
            h(&p)
        };
        out.push((at(eps)? - at(-eps)?) / (2.0 * eps));
    }
    Ok(out)
}

/// First-order check: backward of `sum(f * w)` against finite differences.
fn gradcheck(name: &str, inputs: Vec<Input>, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let xs = build(&inputs).unwrap();
    let loss = weighted(&f, &xs, 99).unwrap();
    loss.backward().unwrap();
    let h = |p: &[Input]| -> Result<f64> {
        let _g = no_grad();
        weighted(&f, &build(p)?, 99)?.item()
    };
    for i in float_positions(&inputs) {
        let want = numeric(&h, &inputs, i).unwrap();
        let got = match xs[i].grad() {
            Some(g) => {
                assert_eq!(g.shape(), xs[i].shape(), "{name}: grad shape of input {i}");
                g.to_vec_f64().unwrap()
            }
            None => vec![0.0; want.len()],
        };
        assert_close(
            &format!("{name}: d/d input {i}, analytic vs numeric"),
            &got,
            &want,
            1e-5,
            1e-6,
        );
    }
}

/// Sum of `w2 * dL/dx_i` over the checked inputs, where `L = sum(f * w)`: a scalar
/// built from first-order gradients (with history when `create_graph`).
fn grad_norm(f: &Func<'_>, xs: &[Tensor], pos: &[usize], create_graph: bool) -> Result<Tensor> {
    let loss = weighted(f, xs, 99)?;
    let targets: Vec<&Tensor> = pos.iter().map(|&i| &xs[i]).collect();
    let gs = grad(&loss, &targets, None, false, create_graph)?;
    let mut total = Tensor::zeros(&[], DType::F64, Device::Cpu)?;
    for (k, g) in gs.into_iter().enumerate() {
        if let Some(g) = g {
            total = total.add(&weighted(
                &|t: &[Tensor]| Ok(t[0].clone()),
                &[g],
                7 + k as u64,
            )?)?;
        }
    }
    Ok(total)
}

/// Second-order check: the gradient of a function of first-order gradients (built with
/// `create_graph`) against finite differences of the same function.
fn gradgradcheck(name: &str, inputs: Vec<Input>, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let pos = float_positions(&inputs);
    let xs = build(&inputs).unwrap();
    let h = grad_norm(&f, &xs, &pos, true).unwrap();
    let targets: Vec<&Tensor> = pos.iter().map(|&i| &xs[i]).collect();
    let analytic = if h.requires_grad() {
        grad(&h, &targets, None, false, false).unwrap()
    } else {
        vec![None; pos.len()]
    };
    let hf = |p: &[Input]| -> Result<f64> { grad_norm(&f, &build(p)?, &pos, false)?.item() };
    for (k, &i) in pos.iter().enumerate() {
        let want = numeric(&hf, &inputs, i).unwrap();
        let got = match &analytic[k] {
            Some(g) => g.to_vec_f64().unwrap(),
            None => vec![0.0; want.len()],
        };
        assert_close(
            &format!("{name}: d2/d input {i}, analytic vs numeric"),
            &got,
            &want,
            1e-4,
            1e-5,
        );
    }
}

/// Both checks.
fn check_both(name: &str, inputs: Vec<Input>, f: impl Fn(&[Tensor]) -> Result<Tensor> + Clone) {
    gradcheck(name, inputs.clone(), f.clone());
    gradgradcheck(name, inputs, f);
}

const BCAST: [(&[usize], &[usize]); 5] = [
    (&[3, 4], &[4]),
    (&[2, 1, 4], &[3, 1]),
    (&[3, 4], &[1]),
    (&[2, 3], &[2, 3]),
    (&[4, 1], &[1, 5]),
];

#[test]
fn binary_ops_with_broadcasting() {
    for (k, (sa, sb)) in BCAST.iter().enumerate() {
        let s = k as u64 * 10;
        check_both("add", vec![u(sa, s), u(sb, s + 1)], |t| t[0].add(&t[1]));
        check_both("sub", vec![u(sa, s), u(sb, s + 1)], |t| t[0].sub(&t[1]));
        check_both("mul", vec![u(sa, s), u(sb, s + 1)], |t| t[0].mul(&t[1]));
        check_both("div", vec![u(sa, s), x(sb, 0.5, 2.0, s + 1)], |t| {
            t[0].div(&t[1])
        });
    }
    // One side without gradient.
    gradcheck(
        "mul_const",
        vec![u(&[3, 4], 1), Input::Float(vec![2.0; 4], vec![4], false)],
        |t| t[0].mul(&t[1]),
    );
}

#[test]
fn unary_ops() {
    check_both("neg", vec![u(&[4, 5], 1)], |t| t[0].neg());
    check_both("exp", vec![u(&[4, 5], 2)], |t| t[0].exp());
    check_both("log", vec![x(&[4, 5], 0.2, 3.0, 3)], |t| t[0].log());
    check_both("sqrt", vec![x(&[4, 5], 0.2, 3.0, 4)], |t| t[0].sqrt());
    check_both("tanh", vec![u(&[4, 5], 5)], |t| t[0].tanh());
    check_both("sigmoid", vec![u(&[4, 5], 6)], |t| t[0].sigmoid());
    check_both("square", vec![u(&[4, 5], 7)], |t| t[0].square());
    check_both("affine", vec![u(&[4, 5], 8)], |t| t[0].affine(-1.5, 0.25));
    check_both("mul_scalar", vec![u(&[3], 8)], |t| t[0].mul_scalar(3.0));
    check_both("add_scalar", vec![u(&[3], 8)], |t| {
        t[0].add_scalar(3.0)?.square()
    });
    // Values kept away from relu's kink; the second-order check goes through a product.
    let away = Input::Float(vec![-1.5, -0.3, 0.2, 0.7, 1.9, -0.8], vec![2, 3], true);
    check_both("relu", vec![away.clone()], |t| t[0].relu()?.mul(&t[0]));
    gradcheck("relu_plain", vec![away.clone()], |t| t[0].relu());
    gradcheck("gelu", vec![u(&[4, 5], 9)], |t| t[0].gelu());
    gradcheck("gelu_tanh", vec![u(&[4, 5], 10)], |t| {
        ops::gelu(&t[0], GeluApproximate::Tanh)
    });
}

#[test]
fn relu_gradient_at_zero_is_zero() {
    let xt = Tensor::from_slice(&[0.0f64, -1.0, 2.0], &[3], Device::Cpu)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    xt.relu().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(
        xt.grad().unwrap().to_vec::<f64>().unwrap(),
        vec![0.0, 0.0, 1.0]
    );
}

#[test]
fn reductions() {
    let cases: Vec<(Option<Vec<isize>>, bool)> = vec![
        (None, false),
        (None, true),
        (Some(vec![1]), false),
        (Some(vec![-1]), true),
        (Some(vec![0, 2]), false),
        (Some(vec![-3, -2]), true),
    ];
    for (k, (dims, keep)) in cases.into_iter().enumerate() {
        let d1 = dims.clone();
        check_both("sum", vec![u(&[3, 4, 5], k as u64)], move |t| {
            t[0].sum(d1.as_deref(), keep)
        });
        let d2 = dims.clone();
        check_both("mean", vec![u(&[3, 4, 5], k as u64)], move |t| {
            t[0].mean(d2.as_deref(), keep)
        });
    }
    check_both("sum_0d", vec![u(&[], 1)], |t| t[0].sum_all()?.mul(&t[0]));
}

#[test]
fn matmul_and_linear() {
    check_both("matmul_2d", vec![u(&[3, 4], 1), u(&[4, 5], 2)], |t| {
        t[0].matmul(&t[1])
    });
    check_both(
        "matmul_batched",
        vec![u(&[2, 3, 4], 3), u(&[2, 4, 5], 4)],
        |t| t[0].matmul(&t[1]),
    );
    check_both(
        "matmul_shared_b",
        vec![u(&[2, 3, 4], 5), u(&[4, 2], 6)],
        |t| t[0].matmul(&t[1]),
    );
    check_both(
        "matmul_transposed_operand",
        vec![u(&[4, 3], 7), u(&[4, 5], 8)],
        |t| t[0].t()?.matmul(&t[1]),
    );
    check_both(
        "linear",
        vec![u(&[5, 4], 9), u(&[3, 4], 10), u(&[3], 11)],
        |t| ops::linear(&t[0], &t[1], Some(&t[2])),
    );
    gradcheck(
        "linear_nobias_3d",
        vec![u(&[2, 5, 4], 12), u(&[3, 4], 13)],
        |t| ops::linear(&t[0], &t[1], None),
    );
}

#[test]
fn shape_ops() {
    check_both("transpose", vec![u(&[2, 3, 4], 1)], |t| {
        t[0].transpose(0, -1)?.mul(&t[0].transpose(0, 2)?)
    });
    check_both("reshape", vec![u(&[2, 3, 4], 2)], |t| {
        t[0].reshape(&[6, -1])
    });
    check_both("reshape_of_transposed", vec![u(&[2, 3, 4], 3)], |t| {
        t[0].transpose(1, 2)?.reshape(&[-1])
    });
    check_both("flatten", vec![u(&[2, 3, 4], 4)], |t| t[0].flatten(1, -1));
    check_both("expand", vec![u(&[3, 1], 5)], |t| t[0].expand(&[2, 3, 4]));
    check_both("contiguous", vec![u(&[3, 4], 6)], |t| {
        t[0].t()?.contiguous()
    });
    check_both("deep_clone", vec![u(&[3, 4], 7)], |t| t[0].deep_clone());
    check_both("sum_to_shape", vec![u(&[2, 3, 4], 8)], |t| {
        t[0].sum_to_shape(&[3, 1])
    });
}

#[test]
fn softmax_family() {
    for (k, dim) in [-1isize, 0, 1].into_iter().enumerate() {
        check_both("softmax", vec![u(&[3, 5], k as u64)], move |t| {
            t[0].softmax(dim)
        });
        check_both("log_softmax", vec![u(&[3, 5], 10 + k as u64)], move |t| {
            t[0].log_softmax(dim)
        });
    }
    check_both("softmax_3d_mid", vec![u(&[2, 3, 4], 20)], |t| {
        ops::softmax(&t[0], 1)
    });
}

#[test]
fn losses() {
    let targets = [3i64, 0, 2, 2, 4, 1];
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (ls, ign) in [(0.0, -100), (0.1, -100), (0.0, 2), (0.1, 2)] {
            let opts = CrossEntropyOpts {
                ignore_index: ign,
                label_smoothing: ls,
                reduction,
            };
            gradcheck(
                "cross_entropy",
                vec![u(&[6, 5], 1), idx(&targets, &[6])],
                move |t| ops::cross_entropy(&t[0], &t[1], &opts),
            );
        }
        check_both("mse_loss", vec![u(&[4, 5], 2), u(&[4, 5], 3)], move |t| {
            ops::mse_loss(&t[0], &t[1], reduction)
        });
    }
}

#[test]
fn layer_norm_embedding_dropout() {
    gradcheck(
        "layer_norm",
        vec![u(&[4, 6], 1), u(&[6], 2), u(&[6], 3)],
        |t| ops::layer_norm(&t[0], &[6], Some(&t[1]), Some(&t[2]), 1e-5),
    );
    gradcheck(
        "layer_norm_2dims",
        vec![u(&[2, 3, 4], 4), u(&[3, 4], 5), u(&[3, 4], 6)],
        |t| ops::layer_norm(&t[0], &[3, 4], Some(&t[1]), Some(&t[2]), 1e-5),
    );
    gradcheck("layer_norm_plain", vec![u(&[4, 6], 7)], |t| {
        ops::layer_norm(&t[0], &[6], None, None, 1e-5)
    });
    gradcheck(
        "layer_norm_bias_only",
        vec![u(&[4, 6], 8), u(&[6], 9)],
        |t| ops::layer_norm(&t[0], &[6], None, Some(&t[1]), 1e-5),
    );
    gradcheck(
        "embedding",
        vec![idx(&[1, 3, 1, 0, 4, 3], &[2, 3]), u(&[5, 4], 10)],
        |t| ops::embedding(&t[0], &t[1]),
    );
    gradcheck("dropout", vec![u(&[6, 7], 11)], |t| {
        ops::dropout(&t[0], 0.4, true, 5)
    });
}

#[test]
fn cast_keeps_the_graph() {
    let a = Tensor::from_slice(&[1.0f64, -2.0, 3.0], &[3], Device::Cpu)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let y = a.cast(DType::F32).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    y.square().unwrap().sum_all().unwrap().backward().unwrap();
    let g = a.grad().unwrap();
    assert_eq!(g.dtype(), DType::F64);
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![2.0, -4.0, 6.0]);
}

// ---- PyTorch reference cases (tests/data/ops.json, format ops-ref/1) ---------------

mod oracle {
    use super::*;
    use crate::common::{assert_no_failures, case_file, floats, isizes, mismatch, usizes};
    use serde_json::Value;

    fn shape(v: &Value) -> Vec<usize> {
        usizes(&v["shape"])
    }

    fn input(v: &Value, dtype: DType) -> Result<Tensor> {
        let s = shape(v);
        if let Some(ints) = v["int_data"].as_array() {
            let ints: Vec<i64> = ints.iter().filter_map(Value::as_i64).collect();
            return Tensor::from_slice(&ints, &s, Device::Cpu);
        }
        let t = Tensor::from_f64s(&floats(&v["data"]), &s, dtype, Device::Cpu)?;
        t.requires_grad_(v["requires_grad"].as_bool().unwrap_or(false))
    }

    fn reduction(a: &Value) -> Reduction {
        match a["reduction"].as_str() {
            Some("sum") => Reduction::Sum,
            Some("none") => Reduction::None,
            _ => Reduction::Mean,
        }
    }

    /// Runs one op of the file through the public API.
    fn run(op: &str, a: &Value, x: &[Tensor]) -> Result<Tensor> {
        let dim = |k: &str| a[k].as_i64().unwrap_or(0) as isize;
        match op {
            "add" => x[0].add(&x[1]),
            "sub" => x[0].sub(&x[1]),
            "mul" => x[0].mul(&x[1]),
            "div" => x[0].div(&x[1]),
            "neg" => x[0].neg(),
            "exp" => x[0].exp(),
            "log" => x[0].log(),
            "sqrt" => x[0].sqrt(),
            "tanh" => x[0].tanh(),
            "sigmoid" => x[0].sigmoid(),
            "relu" => x[0].relu(),
            "gelu" => {
                let approx =
                    GeluApproximate::parse(a["approximate"].as_str().unwrap_or("none")).unwrap();
                x[0].gelu_with(approx)
            }
            "sum" | "mean" => {
                let dims = (!a["dims"].is_null()).then(|| isizes(&a["dims"]));
                let keep = a["keepdim"].as_bool().unwrap_or(false);
                if op == "sum" {
                    x[0].sum(dims.as_deref(), keep)
                } else {
                    x[0].mean(dims.as_deref(), keep)
                }
            }
            "matmul" => x[0].matmul(&x[1]),
            "linear" => ops::linear(&x[0], &x[1], x.get(2)),
            "transpose" => x[0].transpose(dim("dim0"), dim("dim1")),
            "reshape" => x[0].reshape(&isizes(&a["shape"])),
            "softmax" => x[0].softmax(dim("dim")),
            "log_softmax" => x[0].log_softmax(dim("dim")),
            "cross_entropy" => {
                let opts = CrossEntropyOpts {
                    ignore_index: a["ignore_index"].as_i64().unwrap_or(-100),
                    label_smoothing: a["label_smoothing"].as_f64().unwrap_or(0.0),
                    reduction: reduction(a),
                };
                ops::cross_entropy(&x[0], &x[1], &opts)
            }
            "mse_loss" => ops::mse_loss(&x[0], &x[1], reduction(a)),
            "layer_norm" => {
                let ns: Vec<usize> = isizes(&a["normalized_shape"])
                    .iter()
                    .map(|&d| d as usize)
                    .collect();
                ops::layer_norm(
                    &x[0],
                    &ns,
                    x.get(1),
                    x.get(2),
                    a["eps"].as_f64().unwrap_or(1e-5),
                )
            }
            "embedding" => ops::embedding(&x[0], &x[1]),
            _ => Err(gradstep::Error::invalid(
                "oracle",
                format!("unknown op {op}"),
            )),
        }
    }

    /// Compares a tensor with `{shape, data}`; returns a failure message.
    fn compare(what: &str, got: &Tensor, want: &Value, rtol: f64, atol: f64) -> Option<String> {
        if got.shape() != shape(want).as_slice() {
            return Some(format!(
                "{what}: shape {:?} vs {:?}",
                got.shape(),
                shape(want)
            ));
        }
        match got.to_vec_f64() {
            Ok(g) => mismatch(what, &g, &floats(&want["data"]), rtol, atol),
            Err(e) => Some(format!("{what}: {e}")),
        }
    }

    fn replay(case: &Value) -> Result<Option<String>> {
        let dtype = DType::parse(case["dtype"].as_str().unwrap_or("")).expect("dtype");
        let (rtol, atol) = (
            case["tolerance"]["rtol"].as_f64().unwrap(),
            case["tolerance"]["atol"].as_f64().unwrap(),
        );
        let xs = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| input(v, dtype))
            .collect::<Result<Vec<_>>>()?;
        let y = run(case["op"].as_str().unwrap(), &case["attrs"], &xs)?;
        if let Some(f) = compare("output", &y, &case["output"], rtol, atol) {
            return Ok(Some(f));
        }
        let go = &case["grad_output"];
        y.backward_with(
            Some(&Tensor::from_f64s(
                &floats(&go["data"]),
                &shape(go),
                dtype,
                Device::Cpu,
            )?),
            false,
            false,
        )?;
        for (i, (want, x)) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&xs)
            .enumerate()
        {
            match (want.is_null(), x.grad()) {
                (true, None) => {}
                (false, Some(g)) => {
                    if let Some(f) = compare(&format!("grads[{i}]"), &g, want, rtol, atol) {
                        return Ok(Some(f));
                    }
                }
                (w, g) => {
                    return Ok(Some(format!(
                        "grads[{i}]: expected null {w}, got {}",
                        g.is_some()
                    )))
                }
            }
        }
        Ok(None)
    }

    #[test]
    fn pytorch_op_cases_replay_on_cpu() {
        let file = case_file("ops.json", "ops-ref/1");
        let mut failures = Vec::new();
        let mut passed = 0;
        for case in file["cases"].as_array().unwrap() {
            let id = case["id"].as_str().unwrap_or("?");
            match replay(case) {
                Ok(None) => passed += 1,
                Ok(Some(f)) => failures.push(format!("{id}: {f}")),
                Err(e) => failures.push(format!("{id}: error {e}")),
            }
        }
        assert_no_failures(passed, &failures);
        assert_eq!(passed, 321, "every case of every dtype (float16 included)");
    }
}
