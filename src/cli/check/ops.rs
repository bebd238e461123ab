//! `ops-ref/1` replay: make the inputs, run the op, compare the output, run backward with
//! the case's `grad_output`, compare every input's gradient (or its absence).

use super::compare::{compare_presence, compare_tensor, within, Expect, Replay, Stop};
use super::json::{case_dtype, OpAttrs, OpCase, OpInput};
use crate::ops::{self, CrossEntropyOpts, GeluApproximate, Reduction};
use crate::tensor::{DType, Device, Tensor};

/// Replays one op case on `device`.
pub(super) fn replay(case: &OpCase, device: Device) -> Replay {
    let dtype = case_dtype(&case.dtype)?;
    let expect = Expect {
        dtype,
        device,
        tol: case.tolerance,
    };
    if case.grads.len() != case.inputs.len() {
        return Err(bad_case(format!(
            "{} grads for {} inputs",
            case.grads.len(),
            case.inputs.len()
        )));
    }
    let inputs = case
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| within(&format!("inputs[{i}]"), make_input(inp, dtype, device)))
        .collect::<Result<Vec<_>, Stop>>()?;
    let y = within("forward", run_op(&case.op, &inputs, &case.attrs))?;
    compare_tensor("output", &y, &case.output.shape, &case.output.data, &expect)?;

    if inputs.iter().any(Tensor::requires_grad) {
        let go = &case.grad_output;
        let go = Tensor::from_f64s(&go.data, &go.shape, dtype, device)?;
        within(
            "backward",
            y.backward_with(Some(&go), false, false).map_err(Stop::from),
        )?;
    }
    for (i, (x, want)) in inputs.iter().zip(&case.grads).enumerate() {
        let what = format!("grads[{i}]");
        let got = x.grad();
        compare_presence(&what, "a gradient", got.is_some(), want.is_some())?;
        if let (Some(g), Some(w)) = (got, want) {
            compare_tensor(&what, &g, &w.shape, &w.data, &expect)?;
        }
    }
    Ok(())
}

/// A float input in `dtype` (requiring grad as the case says) or an i64 input.
fn make_input(inp: &OpInput, dtype: DType, device: Device) -> Result<Tensor, Stop> {
    match (&inp.data, &inp.int_data) {
        (Some(data), None) => Ok(Tensor::from_f64s(data, &inp.shape, dtype, device)?
            .requires_grad_(inp.requires_grad)?),
        (None, Some(ints)) => Ok(Tensor::from_slice(ints, &inp.shape, device)?),
        _ => Err(bad_case(
            "an input needs exactly one of data and int_data".into(),
        )),
    }
}

/// Runs `op` (PyTorch's name) on the inputs with the case's attributes.
fn run_op(op: &str, x: &[Tensor], a: &OpAttrs) -> Result<Tensor, Stop> {
    let arity = match op {
        "add" | "sub" | "mul" | "div" | "matmul" | "cross_entropy" | "mse_loss" | "embedding" => 2,
        "linear" | "layer_norm" => 3,
        _ => 1,
    };
    if x.len() != arity {
        return Err(bad_case(format!(
            "{op} takes {arity} inputs, the case has {}",
            x.len()
        )));
    }
    let y = match op {
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
            let name = a.approximate.as_deref().unwrap_or("none");
            let approx = GeluApproximate::parse(name)
                .ok_or_else(|| bad_case(format!("gelu approximate \"{name}\"")))?;
            x[0].gelu_with(approx)
        }
        "sum" | "mean" => {
            let dims: Option<Vec<isize>> = a
                .dims
                .as_ref()
                .map(|d| d.iter().map(|&v| v as isize).collect());
            let keepdim = a.keepdim.unwrap_or(false);
            if op == "sum" {
                x[0].sum(dims.as_deref(), keepdim)
            } else {
                x[0].mean(dims.as_deref(), keepdim)
            }
        }
        "matmul" => x[0].matmul(&x[1]),
        "linear" => ops::linear(&x[0], &x[1], Some(&x[2])),
        "transpose" => x[0].transpose(
            need(a.dim0, "dim0")? as isize,
            need(a.dim1, "dim1")? as isize,
        ),
        "reshape" => {
            let shape: Vec<isize> = need(a.shape.as_ref(), "shape")?
                .iter()
                .map(|&v| v as isize)
                .collect();
            x[0].reshape(&shape)
        }
        "softmax" => x[0].softmax(need(a.dim, "dim")? as isize),
        "log_softmax" => x[0].log_softmax(need(a.dim, "dim")? as isize),
        "cross_entropy" => {
            let opts = CrossEntropyOpts {
                ignore_index: a.ignore_index.unwrap_or(-100),
                label_smoothing: a.label_smoothing.unwrap_or(0.0),
                reduction: reduction(a)?,
            };
            ops::cross_entropy(&x[0], &x[1], &opts)
        }
        "mse_loss" => ops::mse_loss(&x[0], &x[1], reduction(a)?),
        "layer_norm" => {
            let ns = need(a.normalized_shape.as_ref(), "normalized_shape")?;
            ops::layer_norm(&x[0], ns, Some(&x[1]), Some(&x[2]), need(a.eps, "eps")?)
        }
        "embedding" => ops::embedding(&x[0], &x[1]),
        other => return Err(Stop::Skip(format!("op \"{other}\" is not supported"))),
    };
    Ok(y?)
}

/// The `reduction` attribute (default `mean`).
fn reduction(a: &OpAttrs) -> Result<Reduction, Stop> {
    parse_reduction(a.reduction.as_deref().unwrap_or("mean"))
}

/// PyTorch's reduction names: `mean`, `sum`, `none`.
pub(super) fn parse_reduction(s: &str) -> Result<Reduction, Stop> {
    match s {
        "mean" => Ok(Reduction::Mean),
        "sum" => Ok(Reduction::Sum),
        "none" => Ok(Reduction::None),
        other => Err(bad_case(format!("reduction \"{other}\""))),
    }
}

/// An attribute the op needs.
fn need<T>(v: Option<T>, name: &str) -> Result<T, Stop> {
    v.ok_or_else(|| bad_case(format!("attrs has no \"{name}\"")))
}

/// A case that does not have the documented shape fails.
pub(super) fn bad_case(msg: String) -> Stop {
    Stop::Fail(format!("bad case: {msg}"))
}
