//! `train_loop` and `test_loop` of PyTorch's quickstart, printing the same lines.

use std::io::Write;
use std::time::Instant;

use crate::autograd::no_grad;
use crate::base::{Error, Result};
use crate::data::{Batch, DataLoader};
use crate::distributed::{DistributedDataParallel, ReduceOp};
use crate::graph::StepGraph;
use crate::nn::{CrossEntropyLoss, Module};
use crate::optim::{GradScaler, LrScheduler, Optimizer};
use crate::tensor::prim;
use crate::tensor::{DType, Tensor};
use crate::train::checkpoint::History;
use crate::train::pyfmt;

/// How the training loop runs and reports.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// `zero_grad` runs before the backward pass of every K-th batch and `step` after the
    /// last batch of every group of K (and after the last batch of the epoch), so the
    /// gradients of K batches add up (gradient accumulation). 1 is the plain loop.
    pub zero_grad_every: usize,
    /// `zero_grad(set_to_none)`.
    pub set_to_none: bool,
    /// Print (and record) the loss every this many batches (100 in the quickstart).
    pub log_every: usize,
    /// Clip the gradients to this total 2-norm before each step
    /// ([`crate::optim::clip_grad_norm_`]; with a GradScaler after `unscale_`, as
    /// PyTorch documents). `None`: no clipping.
    pub clip_grad_norm: Option<f64>,
}

impl LoopOptions {
    /// An error unless `zero_grad_every` and `log_every` are at least 1 and
    /// `clip_grad_norm` is finite and not negative.
    pub fn validate(&self) -> Result<()> {
        if self.zero_grad_every == 0 {
            return Err(Error::invalid(
                "train",
                "--zero-grad-every (zero_grad_every) must be at least 1",
            ));
        }
        if self.log_every == 0 {
            return Err(Error::invalid(
                "train",
                "--log-every (log_every) must be at least 1",
            ));
        }
        if let Some(c) = self
            .clip_grad_norm
            .filter(|c| !(*c >= 0.0 && c.is_finite()))
        {
            return Err(Error::invalid(
                "train",
                format!("--clip-grad-norm (clip_grad_norm) must be a finite number >= 0, got {c}"),
            ));
        }
        Ok(())
    }
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            zero_grad_every: 1,
            set_to_none: true,
            log_every: 100,
            clip_grad_norm: None,
        }
    }
}

/// Where the training loop reports progress.
pub enum Report<'a> {
    /// Print the quickstart's loss lines.
    Lines(&'a mut dyn Write),
    /// Advance a progress callback once per batch with the batch index and the loss of
    /// the logged batches (`None` between them).
    Callback(&'a mut dyn FnMut(usize, Option<f64>)),
}

/// What one epoch of training did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// Batches trained.
    pub batches: usize,
    /// `optimizer.step()` calls.
    pub steps: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("<output>", e)
}

/// The model's output for `inputs`, cast to the dtype of the model's parameters first
/// (f16 parameters take f16 inputs, as under autocast).
fn forward_in_param_dtype(model: &mut dyn Module, inputs: &Tensor) -> Result<Tensor> {
    let dtype = model.parameters().first().map(Tensor::dtype);
    match dtype {
        Some(d) if d.is_float() && d != inputs.dtype() => model.forward(&inputs.to_dtype(d)?),
        _ => model.forward(inputs),
    }
}

/// Logits ready for the loss: f16 and bf16 logits are cast to f32 (keeping the graph),
/// since autocast runs the cross-entropy in f32. This keeps the scaled loss and its
/// gradient within range; the gradient reaches the logits already divided by the batch
/// size.
fn loss_logits(pred: &Tensor) -> Result<Tensor> {
    if pred.dtype().is_half() {
        pred.cast(DType::F32)
    } else {
        Ok(pred.clone())
    }
}

/// Clips the optimizer's grads to a total 2-norm of `max_norm` (no synchronisation).
fn clip(opt: &mut dyn Optimizer, max_norm: f64) -> Result<()> {
    crate::optim::clip_grad_norm_(opt.core().params(), max_norm, 2.0, false, None).map(drop)
}

/// What an epoch of training updates: the model, its loss, the optimizer, and the
/// optional GradScaler, learning-rate schedule and captured step.
pub struct Trainee<'a> {
    /// The model.
    pub model: &'a mut dyn Module,
    /// The loss.
    pub loss_fn: &'a CrossEntropyLoss,
    /// The optimizer.
    pub optimizer: &'a mut dyn Optimizer,
    /// Mixed precision: the GradScaler of the f16 parameters.
    pub scaler: Option<&'a mut GradScaler>,
    /// A learning-rate schedule stepped after every optimizer step (per batch).
    pub scheduler: Option<&'a mut dyn LrScheduler>,
    /// Run the step as a captured graph (GPU devices): see [`GraphedStep`].
    pub graph: Option<&'a mut GraphedStep>,
    /// Data-parallel training: the gradients are averaged over the ranks during backward
    /// (the loader must be sharded for the same ranks, [`DataLoader::shard`]).
    pub ddp: Option<&'a DistributedDataParallel>,
}

impl Trainee<'_> {
    /// One batch: forward and loss, `zero_grad` when `zero`, backward of the loss times
    /// `weight` (scaled), and the (scaled) optimizer step when `stepping`. Returns the
    /// (unweighted) loss. Data-parallel: a batch that does not step accumulates without
    /// reducing (`no_sync`), and a rank whose shard is empty contributes its grads
    /// without a backward pass (its loss is 0).
    fn step(
        &mut self,
        b: &Batch,
        opts: &LoopOptions,
        zero: bool,
        stepping: bool,
        weight: f64,
    ) -> Result<Tensor> {
        let _local = self.ddp.filter(|_| !stepping).map(|d| d.no_sync());
        if zero {
            self.optimizer.zero_grad(opts.set_to_none)?;
        }
        let loss = match self.ddp.filter(|_| b.inputs.numel() == 0) {
            Some(ddp) => {
                if stepping {
                    ddp.reduce_without_backward()?;
                }
                Tensor::zeros(&[], DType::F32, b.inputs.device())?
            }
            None => {
                let pred = forward_in_param_dtype(self.model, &b.inputs)?;
                let loss = self.loss_fn.forward(&loss_logits(&pred)?, &b.targets)?;
                let weighted = if weight == 1.0 {
                    loss.clone()
                } else {
                    loss.mul_scalar(weight)?
                };
                match self.scaler.as_deref_mut() {
                    Some(s) => s.scale(&weighted)?.backward()?,
                    None => weighted.backward()?,
                }
                loss
            }
        };
        if stepping {
            self.apply_step(opts)?;
        }
        Ok(loss)
    }

    /// The (scaled, clipped) optimizer step, after the gradients' reduction.
    fn apply_step(&mut self, opts: &LoopOptions) -> Result<()> {
        if let Some(ddp) = self.ddp {
            ddp.finish_reduction()?;
        }
        match self.scaler.as_deref_mut() {
            Some(s) => {
                if let Some(max_norm) = opts.clip_grad_norm {
                    s.unscale_(self.optimizer)?;
                    clip(self.optimizer, max_norm)?;
                }
                s.step(self.optimizer)?;
                s.update()
            }
            None => {
                if let Some(max_norm) = opts.clip_grad_norm {
                    clip(self.optimizer, max_norm)?;
                }
                self.optimizer.step()
            }
        }
    }

    /// One whole step, through the captured graph in graph mode: the warm-up step (the
    /// first) runs eagerly, the next full batch captures the step and replays it, later
    /// ones of that shape replay it, and a batch of another shape (the last, partial
    /// one) runs eagerly.
    fn whole_step(&mut self, b: &Batch, opts: &LoopOptions, weight: f64) -> Result<Tensor> {
        let Some(g) = self.graph.as_deref_mut() else {
            return self.step(b, opts, true, true, weight);
        };
        if let Some((graph, loss)) = &g.captured {
            // The capture holds a weight of 1 (an even data-parallel shard).
            let fits = graph.inputs()[0].shape() == b.inputs.shape()
                && graph.inputs()[1].shape() == b.targets.shape()
                && weight == 1.0;
            if fits {
                graph.replay_with(&[&b.inputs, &b.targets])?;
                g.replays += 1;
                return Ok(loss.clone());
            }
        }
        if !g.warmed_up || g.captured.is_some() || weight != 1.0 {
            g.warmed_up = true;
            return self.step(b, opts, true, true, weight);
        }
        let device = b.inputs.device();
        let fixed = Batch {
            inputs: Tensor::zeros(b.inputs.shape(), b.inputs.dtype(), device)?,
            targets: Tensor::zeros(b.targets.shape(), b.targets.dtype(), device)?,
        };
        fixed.inputs.copy_(&b.inputs)?;
        fixed.targets.copy_(&b.targets)?;
        let (graph, loss) = StepGraph::capture(device, &[&fixed.inputs, &fixed.targets], || {
            self.step(&fixed, opts, true, true, weight)
        })?;
        // The capture ran nothing: the replay is this batch's step.
        graph.replay()?;
        if let Some(g) = self.graph.as_deref_mut() {
            g.captured = Some((graph, loss.clone()));
            g.replays += 1;
        }
        Ok(loss)
    }
}

/// The captured training step of [`train_loop`] in graph mode, kept across epochs: the
/// graph (with its static input and target buffers) and the loss tensor its replays
/// write.
#[derive(Debug, Default)]
pub struct GraphedStep {
    warmed_up: bool,
    captured: Option<(StepGraph, Tensor)>,
    replays: usize,
}

impl GraphedStep {
    /// Nothing captured yet: the first step of the loop warms up (eagerly), the second
    /// captures.
    pub fn new() -> Self {
        Self::default()
    }

    /// The captured graph, once there is one.
    pub fn graph(&self) -> Option<&StepGraph> {
        self.captured.as_ref().map(|(g, _)| g)
    }

    /// Steps run by replaying the graph (the others ran eagerly).
    pub fn replays(&self) -> usize {
        self.replays
    }
}

/// One epoch of the quickstart's `train_loop`:
///
/// ```text
/// for batch, (X, y) in enumerate(dataloader):
///     pred = model(X); loss = loss_fn(pred, y)
///     optimizer.zero_grad(); loss.backward(); optimizer.step()
///     if batch % 100 == 0: print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")
/// ```
///
/// `step_offset` numbers the batches of this epoch in `history.losses` (the number of
/// batches trained before it).
///
/// With a `scaler` (mixed precision, as PyTorch's AMP with a `GradScaler`): the inputs are
/// cast to the parameters' dtype, the f16 logits to f32 for the loss, the backward pass
/// runs on `loss * scale`, and each step is `scaler.step(optimizer)` (grads unscaled, the
/// step skipped on inf/NaN) followed by `scaler.update()`. The logged loss is unscaled.
/// A `scheduler` steps after every optimizer step.
///
/// With a `graph` (GPU devices): the first step runs eagerly (it makes the optimizer's
/// state), the second is captured and replayed, and every later batch of the same shape
/// is copied into the captured step's static buffers and replayed, one graph launch per
/// step. A batch of another shape (the last, partial batch of an epoch) runs eagerly;
/// set `drop_last` on the loader to skip it instead. The results are those of the eager
/// loop, bit for bit: the optimizer reads its learning rate, step counts and scale from
/// the device. Graph mode needs `zero_grad_every` 1 and a capturable optimizer.
pub fn train_loop(
    loader: &mut DataLoader,
    trainee: &mut Trainee<'_>,
    opts: &LoopOptions,
    step_offset: u64,
    history: &mut History,
    mut report: Report<'_>,
) -> Result<EpochStats> {
    opts.validate()?;
    if trainee.graph.is_some() && opts.zero_grad_every != 1 {
        return Err(Error::invalid(
            "train_loop",
            format!(
                "a captured step is one whole step: gradient accumulation \
                 (zero_grad_every {}) needs the eager loop",
                opts.zero_grad_every
            ),
        ));
    }
    let world = trainee.ddp.map_or(1, |d| d.process_group().world_size());
    let size = loader.dataset().len();
    let num_batches = loader.len();
    let start = Instant::now();
    trainee.model.train(true);
    let mut steps = 0;
    let mut batches = 0;
    for (batch, b) in loader.iter().enumerate() {
        let b = b?;
        let k = opts.zero_grad_every;
        // Gradient accumulation: zero_grad before the first batch of each group of K,
        // step after its last (or after the epoch's last batch).
        let stepping = (batch + 1) % k == 0 || batch + 1 == num_batches;
        // Data-parallel: this rank's share of the global batch's mean loss is
        // `n / global`, and the ranks' grads are averaged (divided by `world`), so its loss
        // is weighted by `n * world / global` (1 when the shards are even).
        let global = loader.global_batch_len(batch);
        let n = b.inputs.shape().first().copied().unwrap_or(0);
        let weight = if n * world == global {
            1.0
        } else {
            (n * world) as f64 / global as f64
        };
        let loss = if k == 1 {
            trainee.whole_step(&b, opts, weight)?
        } else {
            trainee.step(&b, opts, batch % k == 0, stepping, weight)?
        };
        // The loss of the whole global batch, for the log lines: the ranks' shares added.
        let loss = match trainee.ddp.filter(|_| batch % opts.log_every == 0) {
            Some(ddp) => {
                let _g = no_grad();
                let share = loss.detach().mul_scalar(n as f64 / global as f64)?;
                ddp.process_group().all_reduce(&share, ReduceOp::Sum)?;
                share
            }
            None => loss,
        };
        if stepping {
            steps += 1;
            if let Some(s) = trainee.scheduler.as_deref_mut() {
                s.step(trainee.optimizer)?;
            }
        }
        batches += 1;
        log(
            &mut report,
            history,
            opts,
            batch,
            step_offset,
            global,
            &loss,
            size,
        )?;
    }
    Ok(EpochStats {
        batches,
        steps,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads the loss back on a logged batch (the one host synchronisation between log
/// lines), records it and reports.
#[allow(clippy::too_many_arguments)]
fn log(
    report: &mut Report<'_>,
    history: &mut History,
    opts: &LoopOptions,
    batch: usize,
    step_offset: u64,
    batch_len: usize,
    loss: &Tensor,
    size: usize,
) -> Result<()> {
    let logged = if batch % opts.log_every == 0 {
        let value = loss.item()?;
        history.losses.push((step_offset + batch as u64, value));
        Some(value)
    } else {
        None
    };
    match report {
        Report::Lines(out) => {
            if let Some(value) = logged {
                let current = batch * batch_len;
                writeln!(out, "{}", pyfmt::loss_line(value, current, size)).map_err(write_err)?;
            }
        }
        Report::Callback(f) => f(batch, logged),
    }
    Ok(())
}

/// The quickstart's `test_loop` without printing: `(correct fraction, average loss)`,
/// where the average is over batches, as in the quickstart. Runs in eval mode under
/// `no_grad`.
pub fn evaluate(
    loader: &mut DataLoader,
    model: &mut dyn Module,
    loss_fn: &CrossEntropyLoss,
) -> Result<(f64, f64)> {
    model.eval();
    let _g = no_grad();
    let size = loader.dataset().len();
    let num_batches = loader.len();
    if size == 0 {
        return Err(Error::invalid("test_loop", "the test set is empty"));
    }
    let (mut test_loss, mut correct) = (0.0f64, 0.0f64);
    for b in loader.iter() {
        let b = b?;
        let pred = loss_logits(&forward_in_param_dtype(model, &b.inputs)?)?;
        test_loss += loss_fn.forward(&pred, &b.targets)?.item()?;
        let predicted = prim::argmax(&pred)?.to_vec::<i64>()?;
        let targets = b.targets.to_vec::<i64>()?;
        correct += predicted
            .iter()
            .zip(&targets)
            .filter(|(p, t)| p == t)
            .count() as f64;
    }
    Ok((correct / size as f64, test_loss / num_batches as f64))
}

/// The quickstart's `test_loop`: evaluates and prints
/// `Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n`.
pub fn test_loop(
    loader: &mut DataLoader,
    model: &mut dyn Module,
    loss_fn: &CrossEntropyLoss,
    out: &mut dyn Write,
) -> Result<(f64, f64)> {
    let (correct, test_loss) = evaluate(loader, model, loss_fn)?;
    writeln!(out, "{}", pyfmt::test_report(correct, test_loss)).map_err(write_err)?;
    Ok((correct, test_loss))
}
