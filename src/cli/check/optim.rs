//! `optim-ref/1` replay: create the params, build the optimizer from the case's
//! hyperparameters, then per step set every grad (or none), step (under the scaler when
//! the step has one), and compare params, state and `grads_after` (without a scaler:
//! the grads set before the step, which the step must leave alone).

use super::compare::{
    compare_exact, compare_presence, compare_tensor, within, Expect, Replay, Stop,
};
use super::json::{case_dtype, Hyperparams, OptimCase, OptimStep, ParamSpec, StateSpec};
use super::ops::bad_case;
use super::Impl;
use crate::optim::{Adam, AdamConfig, AdamW, Optimizer, SgdConfig, SGD};
use crate::tensor::{DType, Device, Tensor};

/// Replays one optimizer case on `device` with implementation `imp`.
pub(super) fn replay(case: &OptimCase, device: Device, imp: Impl) -> Replay {
    let dtype = case_dtype(&case.dtype)?;
    let params = case
        .params
        .iter()
        .map(|p| {
            Ok(
                Tensor::from_f64s(&p.expand(&p.init)?, &p.shape, dtype, device)?
                    .requires_grad_(true)?,
            )
        })
        .collect::<Result<Vec<_>, Stop>>()?;
    let mut opt = build_optimizer(&case.optimizer, &case.hyperparams, params.clone())?;
    opt.set_impl(imp);
    for (s, step) in case.steps.iter().enumerate() {
        let place = format!("step {}", s + 1);
        within(
            &place,
            run_step(opt.as_mut(), &params, &case.params, step, dtype, device),
        )?;
        let cmp = Compare {
            params: &case.params,
            expect: Expect {
                dtype,
                device,
                tol: case.tolerance,
            },
            place: &place,
        };
        cmp.step(opt.as_ref(), &params, step)?;
    }
    Ok(())
}

/// The optimizer a case names (`SGD`, `Adam`, `AdamW`) over `params`.
pub(super) fn build_optimizer(
    name: &str,
    h: &Hyperparams,
    params: Vec<Tensor>,
) -> Result<Box<dyn Optimizer>, Stop> {
    let adam = || -> Result<AdamConfig, Stop> {
        let [b1, b2] = h
            .betas
            .ok_or_else(|| bad_case("Adam hyperparams have no betas".into()))?;
        let eps = h
            .eps
            .ok_or_else(|| bad_case("Adam hyperparams have no eps".into()))?;
        Ok(AdamConfig::new(h.lr)
            .betas(b1, b2)
            .eps(eps)
            .weight_decay(h.weight_decay)
            .amsgrad(h.amsgrad)
            .maximize(h.maximize))
    };
    Ok(match name {
        "SGD" => {
            let cfg = SgdConfig::new(h.lr)
                .momentum(h.momentum)
                .dampening(h.dampening)
                .weight_decay(h.weight_decay)
                .nesterov(h.nesterov)
                .maximize(h.maximize);
            Box::new(SGD::new(params, cfg)?)
        }
        "Adam" if !h.decoupled_weight_decay => Box::new(Adam::new(params, adam()?)?),
        "Adam" | "AdamW" => Box::new(AdamW::new(params, adam()?)?),
        other => {
            return Err(Stop::Skip(format!(
                "optimizer \"{other}\" is not supported"
            )))
        }
    })
}

/// Sets every grad (or none) and steps, under the scaler when the step has one.
fn run_step(
    opt: &mut dyn Optimizer,
    params: &[Tensor],
    specs: &[ParamSpec],
    step: &OptimStep,
    dtype: DType,
    device: Device,
) -> Replay {
    if step.grads.len() != params.len() {
        return Err(bad_case(format!(
            "{} grads for {} params",
            step.grads.len(),
            params.len()
        )));
    }
    for ((p, spec), g) in params.iter().zip(specs).zip(&step.grads) {
        let grad = match g {
            Some(g) => Some(Tensor::from_f64s(
                &spec.expand(g)?,
                &spec.shape,
                dtype,
                device,
            )?),
            None => None,
        };
        p.set_grad(grad)?;
    }
    if step.grad_scale.is_none() && step.found_inf.is_none() {
        opt.step()?;
    } else {
        let scalar = |v: Option<f64>| {
            v.map(|v| Tensor::from_f64s(&[v], &[], DType::F32, device))
                .transpose()
        };
        let (scale, found_inf) = (scalar(step.grad_scale)?, scalar(step.found_inf)?);
        opt.step_scaled(scale.as_ref(), found_inf.as_ref())?;
    }
    Ok(())
}

/// Compares what a step left with what the case expects.
struct Compare<'a> {
    params: &'a [ParamSpec],
    expect: Expect,
    place: &'a str,
}

impl Compare<'_> {
    fn step(&self, opt: &dyn Optimizer, params: &[Tensor], step: &OptimStep) -> Replay {
        let n = params.len();
        if step.params.len() != n || step.state.len() != n {
            return Err(bad_case(format!(
                "{}: params or state do not list {n} params",
                self.place
            )));
        }
        for (j, p) in params.iter().enumerate() {
            self.values(j, "params", p, &step.params[j])?;
        }
        for (j, want) in step.state.iter().enumerate() {
            self.state(opt, j, want.as_ref())?;
        }
        // Without a scaler the step leaves `.grad` alone: it must still hold the grads set.
        let after = step.grads_after.as_ref().unwrap_or(&step.grads);
        if after.len() != n {
            return Err(bad_case(format!(
                "{}: grads_after does not list {n} params",
                self.place
            )));
        }
        for (j, (p, want)) in params.iter().zip(after).enumerate() {
            let got = p.grad();
            let what = self.name(j, "grads_after");
            compare_presence(&what, "a gradient", got.is_some(), want.is_some())?;
            if let (Some(g), Some(w)) = (got, want) {
                self.values(j, "grads_after", &g, w)?;
            }
        }
        Ok(())
    }

    fn state(&self, opt: &dyn Optimizer, j: usize, want: Option<&StateSpec>) -> Replay {
        let got = opt.param_state(j)?;
        let what = self.name(j, "state");
        compare_presence(&what, "optimizer state", got.is_some(), want.is_some())?;
        let (Some(got), Some(want)) = (got, want) else {
            return Ok(());
        };
        compare_presence(
            &format!("{what} step"),
            "a step count",
            got.step.is_some(),
            want.step.is_some(),
        )?;
        if let (Some(g), Some(w)) = (got.step, want.step) {
            compare_exact(&format!("{what} step"), g, w)?;
        }
        let wanted = [
            ("momentum_buffer", &want.momentum_buffer),
            ("exp_avg", &want.exp_avg),
            ("exp_avg_sq", &want.exp_avg_sq),
            ("max_exp_avg_sq", &want.max_exp_avg_sq),
        ];
        for (name, _) in &got.buffers {
            if !wanted.iter().any(|(n, w)| n == name && w.is_some()) {
                return Err(Stop::Fail(format!(
                    "{what} {name}: got a buffer, want none"
                )));
            }
        }
        for (name, w) in wanted {
            let Some(w) = w else { continue };
            let g = got
                .buffer(name)
                .ok_or_else(|| Stop::Fail(format!("{what} {name}: got no buffer, want one")))?;
            self.values(j, &format!("state {name}"), g, w)?;
        }
        Ok(())
    }

    /// Compares one per-element list of param `j` (expanded from its tile).
    fn values(&self, j: usize, field: &str, got: &Tensor, want: &[f64]) -> Replay {
        let spec = &self.params[j];
        let want = spec.expand(want)?;
        compare_tensor(&self.name(j, field), got, &spec.shape, &want, &self.expect)
    }

    /// `step 2 params[1] "b0"`.
    fn name(&self, j: usize, field: &str) -> String {
        let (field, rest) = field.split_once(' ').map_or((field, ""), |(f, r)| (f, r));
        let sep = if rest.is_empty() { "" } else { " " };
        format!(
            "{} {field}[{j}] \"{}\"{sep}{rest}",
            self.place, self.params[j].name
        )
    }
}
