//! `train-ref/1` replay: build the MLP from the case's layers and initial params, then
//! run exactly the README's loop (zero_grad at the first batch of each step, backward on
//! every batch, step), comparing losses, logits and grads before each step and params
//! after it.

use super::compare::{compare_tensor, within, Expect, Replay, Stop};
use super::json::{case_dtype, Batch, LayerSpec, TrainCase, TrainStep};
use super::ops::{bad_case, parse_reduction};
use super::optim::build_optimizer;
use super::Impl;
use crate::nn::{CrossEntropyLoss, Flatten, Linear, Module, ReLU, Sequential};
use crate::ops::CrossEntropyOpts;
use crate::optim::Optimizer;
use crate::tensor::{Device, Tensor};

/// Replays one training case on `device` with optimizer implementation `imp`.
pub(super) fn replay(case: &TrainCase, device: Device, imp: Impl) -> Replay {
    let dtype = case_dtype(&case.dtype)?;
    let params = case
        .params
        .iter()
        .map(|p| Ok(Tensor::from_f64s(&p.init, &p.shape, dtype, device)?.requires_grad_(true)?))
        .collect::<Result<Vec<_>, Stop>>()?;
    let model = build_model(case, &params)?;
    if case.loss.kind != "CrossEntropyLoss" {
        return Err(Stop::Skip(format!(
            "loss \"{}\" is not supported",
            case.loss.kind
        )));
    }
    let loss_fn = CrossEntropyLoss::with(CrossEntropyOpts {
        ignore_index: case.loss.ignore_index,
        label_smoothing: case.loss.label_smoothing,
        reduction: parse_reduction(&case.loss.reduction)?,
    });
    let mut opt = build_optimizer(&case.optimizer, &case.hyperparams, params.clone())?;
    opt.set_impl(imp);
    let run = Run {
        case,
        params: &params,
        model: &model,
        loss_fn: &loss_fn,
        expect: Expect {
            dtype,
            device,
            tol: case.tolerance,
        },
    };
    let mut next_batch = 0;
    for (s, step) in case.steps.iter().enumerate() {
        let place = format!("step {}", s + 1);
        within(&place, run.step(opt.as_mut(), step, &mut next_batch))?;
        within(&place, run.compare_params(step))?;
    }
    Ok(())
}

/// The model of the case, its Linear layers over `params` (the case's param order).
fn build_model(case: &TrainCase, params: &[Tensor]) -> Result<Sequential, Stop> {
    let param = |name: &str| -> Result<Tensor, Stop> {
        let j = case
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| bad_case(format!("layer param \"{name}\" is not in params")))?;
        Ok(params[j].clone())
    };
    let mut model = Sequential::new();
    for l in &case.layers {
        let layer: Box<dyn Module> = match l.kind.as_str() {
            "Flatten" => Box::new(Flatten::with_dims(
                l.start_dim.unwrap_or(1) as isize,
                l.end_dim.unwrap_or(-1) as isize,
            )),
            "ReLU" => Box::new(ReLU::new()),
            "Linear" => Box::new(linear(l, &param)?),
            other => return Err(Stop::Skip(format!("layer \"{other}\" is not supported"))),
        };
        model.push(layer);
    }
    Ok(model)
}

/// A Linear layer over the named weight (and bias) params.
fn linear(l: &LayerSpec, param: &dyn Fn(&str) -> Result<Tensor, Stop>) -> Result<Linear, Stop> {
    let has_bias = l.bias.unwrap_or(true);
    let (w, b) = match (l.params.as_slice(), has_bias) {
        ([w], false) => (param(w)?, None),
        ([w, b], true) => (param(w)?, Some(param(b)?)),
        _ => {
            return Err(bad_case(format!(
                "Linear layer lists params {:?}",
                l.params
            )))
        }
    };
    if let (Some(i), Some(o)) = (l.in_features, l.out_features) {
        if w.shape() != [o, i] {
            return Err(bad_case(format!(
                "Linear({i}, {o}) has a weight of shape {:?}",
                w.shape()
            )));
        }
    }
    Ok(Linear::from_tensors(w, b)?)
}

/// What every step of a replay shares.
struct Run<'a> {
    case: &'a TrainCase,
    params: &'a [Tensor],
    model: &'a Sequential,
    loss_fn: &'a CrossEntropyLoss,
    expect: Expect,
}

impl Run<'_> {
    /// `every` forward/backward passes (zero_grad before the first), comparisons of the
    /// losses, logits and grads, then the optimizer step.
    fn step(&self, opt: &mut dyn Optimizer, step: &TrainStep, next_batch: &mut usize) -> Replay {
        let every = self.case.zero_grad.every;
        if step.batches.len() != every || step.losses.len() != every || step.logits.len() != every {
            return Err(bad_case(format!(
                "a step lists other than {every} batches, losses or logits"
            )));
        }
        for j in 0..every {
            let b = *next_batch;
            if step.batches[j] != b {
                return Err(bad_case(format!(
                    "step uses batch {}, the loop is at batch {b}",
                    step.batches[j]
                )));
            }
            let batch = self
                .case
                .batches
                .get(b)
                .ok_or_else(|| bad_case(format!("no batch {b}")))?;
            let (x, y) = self.batch(batch)?;
            let logits = self.model.forward(&x)?;
            let loss = self.loss_fn.forward(&logits, &y)?;
            if j == 0 {
                opt.zero_grad(self.case.zero_grad.set_to_none)?;
            }
            loss.backward()?;
            *next_batch += 1;
            compare_tensor(
                &format!("losses[{j}]"),
                &loss,
                &[],
                &[step.losses[j]],
                &self.expect,
            )?;
            let want = &step.logits[j];
            let rows = batch.y.int_data.len();
            let want_shape = [rows, want.len().checked_div(rows).unwrap_or(0)];
            if want_shape[0] * want_shape[1] != want.len() {
                return Err(bad_case(format!("{} logits for {rows} rows", want.len())));
            }
            compare_tensor(
                &format!("logits[{j}]"),
                &logits,
                &want_shape,
                want,
                &self.expect,
            )?;
        }
        if step.grads.len() != self.params.len() {
            return Err(bad_case(format!(
                "{} grads for {} params",
                step.grads.len(),
                self.params.len()
            )));
        }
        for (k, (p, want)) in self.params.iter().zip(&step.grads).enumerate() {
            let what = format!("grads[{k}] \"{}\"", self.case.params[k].name);
            let g = p.grad().ok_or_else(|| {
                Stop::Fail(format!("{what}: got null (no gradient), want a gradient"))
            })?;
            compare_tensor(&what, &g, p.shape(), want, &self.expect)?;
        }
        opt.step()?;
        Ok(())
    }

    /// Compares every param after the step.
    fn compare_params(&self, step: &TrainStep) -> Replay {
        if step.params.len() != self.params.len() {
            return Err(bad_case(format!(
                "{} params listed, the model has {}",
                step.params.len(),
                self.params.len()
            )));
        }
        for (k, (p, want)) in self.params.iter().zip(&step.params).enumerate() {
            let what = format!("params[{k}] \"{}\"", self.case.params[k].name);
            compare_tensor(&what, p, p.shape(), want, &self.expect)?;
        }
        Ok(())
    }

    /// The inputs (in the case's dtype) and class indices of a batch.
    fn batch(&self, b: &Batch) -> Result<(Tensor, Tensor), Stop> {
        let x = Tensor::from_f64s(&b.x.data, &b.x.shape, self.expect.dtype, self.expect.device)?;
        let y = Tensor::from_slice(&b.y.int_data, &b.y.shape, self.expect.device)?;
        Ok((x, y))
    }
}
