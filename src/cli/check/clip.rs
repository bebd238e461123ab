//! `clip-ref/1` replay: give each param its grad (or none), call `clip_grad_norm_` or
//! `clip_grad_value_` with the case's arguments (`foreach` as the case says), and
//! compare the returned total norm (value and dtype) and every grad; when torch raised,
//! the call must fail and leave the grads as they were.

use super::compare::{compare_presence, compare_tensor, Expect, Replay, Stop};
use super::json::{case_dtype, ClipCase};
use super::ops::bad_case;
use crate::optim::{clip_grad_norm_, clip_grad_value_};
use crate::tensor::{Device, Tensor};

/// Replays one clipping case on `device`.
pub(super) fn replay(case: &ClipCase, device: Device) -> Replay {
    let h = &case.hyperparams;
    let mut params = Vec::with_capacity(case.grads.len());
    for g in &case.grads {
        let dtype = case_dtype(&g.dtype)?;
        let p = Tensor::zeros(&g.shape, dtype, device)?.requires_grad_(true)?;
        if let Some(data) = &g.data {
            p.set_grad(Some(Tensor::from_f64s(data, &g.shape, dtype, device)?))?;
        }
        params.push(p);
    }
    let foreach = Some(h.foreach);
    let arg = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| bad_case(format!("{} without {name}", case.op)))
    };
    let result = match case.op.as_str() {
        "clip_grad_norm_" => clip_grad_norm_(
            &params,
            arg(h.max_norm, "max_norm")?,
            arg(h.norm_type, "norm_type")?,
            h.error_if_nonfinite,
            foreach,
        )
        .map(Some),
        "clip_grad_value_" => {
            clip_grad_value_(&params, arg(h.clip_value, "clip_value")?, foreach).map(|()| None)
        }
        other => return Err(bad_case(format!("unknown op \"{other}\""))),
    };
    let e = &case.expected;
    match (&result, &e.error) {
        (Ok(_), Some(msg)) => {
            return Err(Stop::Fail(format!(
                "succeeded where torch raised \"{msg}\""
            )))
        }
        (Err(err), None) => return Err(Stop::Fail(format!("error: {err}"))),
        _ => {}
    }
    if let (Ok(Some(total)), Some(want)) = (&result, e.total_norm) {
        let dtype = case_dtype(
            e.total_norm_dtype
                .as_deref()
                .unwrap_or(&case.grads[0].dtype),
        )?;
        // No grads at all: torch's CPU float32 zero.
        let on = if case.grads.iter().all(|g| g.data.is_none()) {
            Device::Cpu
        } else {
            device
        };
        let expect = Expect {
            dtype,
            device: on,
            tol: case.tolerance,
        };
        compare_tensor("total_norm", total, &[], &[want], &expect)?;
    }
    if e.grads.len() != params.len() {
        return Err(bad_case(format!(
            "{} expected grads for {} params",
            e.grads.len(),
            params.len()
        )));
    }
    for ((p, spec), want) in params.iter().zip(&case.grads).zip(&e.grads) {
        let what = format!("grad \"{}\"", spec.name);
        let got = p.grad();
        compare_presence(&what, "a gradient", got.is_some(), want.is_some())?;
        if let (Some(got), Some(want)) = (got, want) {
            let expect = Expect {
                dtype: case_dtype(&spec.dtype)?,
                device,
                tol: case.tolerance,
            };
            compare_tensor(&what, &got, &spec.shape, want, &expect)?;
        }
    }
    Ok(())
}
