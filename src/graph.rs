//! Whole-step capture: record every launch of a training step once, then replay it per
//! batch with one graph launch and no host work (CUDA graphs; the emulator's twin in
//! every test).
//!
//! ```
//! use gradstep::graph::StepGraph;
//! use gradstep::nn::{CrossEntropyLoss, Linear, Module};
//! use gradstep::optim::{Optimizer, SgdConfig, SGD};
//! use gradstep::{tensor::Rng, DType, Device, Tensor};
//! # fn main() -> gradstep::Result<()> {
//! let device = Device::Emu(0); // or Device::Cuda(0)
//! let model = Linear::new(4, 3, true, &mut Rng::new(0), DType::F32, device)?;
//! let mut opt = SGD::new(model.parameters(), SgdConfig::new(0.1).momentum(0.9))?;
//! let loss_fn = CrossEntropyLoss::new();
//! // The static inputs: each replay reads its batch from them.
//! let x = Tensor::zeros(&[2, 4], DType::F32, device)?;
//! let y = Tensor::from_vec(vec![0i64, 2], &[2], device)?;
//! let mut step = |opt: &mut SGD| -> gradstep::Result<Tensor> {
//!     opt.zero_grad(true)?;
//!     let loss = loss_fn.forward(&model.forward(&x)?, &y)?;
//!     loss.backward()?;
//!     opt.step()?;
//!     Ok(loss)
//! };
//! step(&mut opt)?; // warm-up: optimizer state and launch tables are made eagerly
//! let (graph, loss) = StepGraph::capture(device, &[&x, &y], || step(&mut opt))?;
//! for batch in 0..3 {
//!     let xb = Tensor::full(&[2, 4], batch as f64, DType::F32, Device::Cpu)?;
//!     let yb = Tensor::from_vec(vec![1i64, 0], &[2], Device::Cpu)?;
//!     graph.replay_with(&[&xb, &yb])?; // copies the batch in, then one graph launch
//! }
//! println!("last loss {}", loss.item()?); // the captured loss tensor, updated by replays
//! # Ok(()) }
//! ```
//!
//! What a replay runs is exactly what the capture issued, with the arguments it had then:
//! a step must read everything that changes from one batch to the next from device
//! memory. gradstep's optimizers read their learning rate, step counts and the
//! GradScaler's scale from the device (so LR schedulers work across replays), and its
//! index checks report into a device-side error record read at the next synchronisation.
//! What cannot be captured is refused, at capture time or at replay time, with an error
//! that names it: a host synchronisation (`item`, a download, `Device::synchronize`), an
//! upload (make the optimizer's state and tables with an eager warm-up step first),
//! dropout (its seed is a host value), a host value frozen into a launch that has changed
//! since (an optimizer with `set_capturable(false)` whose learning rate a scheduler
//! changed), a batch of another shape. Every allocation of the captured step comes from a
//! pool the graph owns, held until the graph is dropped.

use crate::base::{Device, Error, Result};
use crate::tensor::Tensor;

/// A captured training step (or any work on one GPU device), replayed per batch.
pub struct StepGraph {
    device: Device,
    inputs: Vec<Tensor>,
    #[cfg(gpu)]
    graph: crate::backend::gpu::CapturedGraph,
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StepGraph({}, {} inputs)",
            self.device,
            self.inputs.len()
        )
    }
}

impl StepGraph {
    /// Captures the work `step` issues on `device` (a GPU device): it is recorded, not
    /// run, and returned with `step`'s result (tensors it made, such as the loss, hold
    /// their values after each replay). `inputs` are the static tensors the step reads
    /// its batch from; [`Self::replay_with`] copies each batch into them.
    pub fn capture<T>(
        device: Device,
        inputs: &[&Tensor],
        step: impl FnOnce() -> Result<T>,
    ) -> Result<(StepGraph, T)> {
        if let Some(t) = inputs.iter().find(|t| t.device() != device) {
            return Err(Error::DeviceMismatch {
                op: "StepGraph::capture",
                lhs: device,
                rhs: t.device(),
            });
        }
        if let Some(t) = inputs.iter().find(|t| !t.is_contiguous()) {
            return Err(Error::invalid(
                "StepGraph::capture",
                format!(
                    "a static input must be contiguous, not a view of shape {:?}",
                    t.shape()
                ),
            ));
        }
        let inputs: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        #[cfg(gpu)]
        {
            if !device.is_gpu() {
                return Err(Error::invalid(
                    "StepGraph::capture",
                    format!("{device} has no graphs: capture a step of a GPU device (cuda or emu)"),
                ));
            }
            let dev = crate::backend::gpu::get(device)?;
            dev.synchronize()?;
            dev.begin_capture()?;
            let out = match step() {
                Ok(out) => out,
                Err(e) => {
                    dev.abort_capture();
                    return Err(e);
                }
            };
            let graph = dev.end_capture()?;
            Ok((
                StepGraph {
                    device,
                    inputs,
                    graph,
                },
                out,
            ))
        }
        #[cfg(not(gpu))]
        {
            let _ = (inputs, step);
            Err(crate::backend::not_built(device))
        }
    }

    /// Runs the captured step once more (the caller has written the batch into the
    /// static inputs). One graph launch; no kernel launch, synchronisation or allocation.
    pub fn replay(&self) -> Result<()> {
        #[cfg(gpu)]
        return crate::backend::gpu::get(self.device)?.replay(&self.graph);
        #[cfg(not(gpu))]
        Err(crate::backend::not_built(self.device))
    }

    /// Copies `batch` into the static inputs (each of the same shape and dtype as its
    /// input, on any device: a host batch is one upload each), then replays.
    pub fn replay_with(&self, batch: &[&Tensor]) -> Result<()> {
        if batch.len() != self.inputs.len() {
            return Err(Error::invalid(
                "StepGraph::replay_with",
                format!(
                    "{} tensors given for the {} static inputs of the graph",
                    batch.len(),
                    self.inputs.len()
                ),
            ));
        }
        for (i, (b, s)) in batch.iter().zip(&self.inputs).enumerate() {
            if b.shape() != s.shape() || b.dtype() != s.dtype() {
                return Err(Error::invalid(
                    "StepGraph::replay_with",
                    format!(
                        "input {i} was captured as {:?} of {}, the batch has {:?} of {} \
                         (a batch of another shape needs its own graph, or an eager step)",
                        s.shape(),
                        s.dtype(),
                        b.shape(),
                        b.dtype()
                    ),
                ));
            }
            s.copy_(b)?;
        }
        self.replay()
    }

    /// The static inputs, in the order given to [`Self::capture`].
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }

    /// The device the graph runs on.
    pub fn device(&self) -> Device {
        self.device
    }
}
