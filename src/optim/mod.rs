//! Optimizers with PyTorch's semantics: `zero_grad`, `step`, parameter groups and state.
//!
//! ```
//! use gradstep::optim::{Optimizer, SgdConfig, SGD};
//! use gradstep::{DType, Device, Tensor};
//! # fn main() -> gradstep::Result<()> {
//! let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu)?;
//! w.requires_grad_(true)?;
//! let mut opt = SGD::new(vec![w.clone()], SgdConfig::new(0.1))?;
//! w.set_grad(Some(Tensor::from_vec(vec![1.0f32, -1.0], &[2], Device::Cpu)?))?;
//! opt.step()?;
//! assert_eq!(w.to_vec::<f32>()?, vec![0.9, 2.1]);
//! opt.zero_grad(true)?;
//! assert!(w.grad().is_none());
//! # Ok(()) }
//! ```
//!
//! Three implementations of `step` give the same values within rounding ([`Impl`]): a
//! for-loop (one pass or launch per tensor), foreach (one multi-tensor pass or launch per
//! elementary op) and fused (one pass per tensor on the CPU, one launch per
//! (device, dtype) group on a GPU).

mod adam;
mod arena;
pub mod clip;
mod clip_cpu;
mod config;
mod core;
mod in_backward;
#[cfg(gpu)]
mod launch;
mod loops;
pub mod lr_scheduler;
#[cfg(gpu)]
pub(crate) mod multi_tensor;
pub mod raw;
mod scaler;
mod sgd;
mod state;
mod zero;

pub use self::core::{OptimCore, ParamGroup};
pub use adam::{Adam, AdamW};
pub(crate) use arena::grad_views;
pub use arena::GradArena;
pub use clip::{clip_grad_norm_, clip_grad_value_};
pub use config::{AdamConfig, Hyper, SgdConfig};
pub use in_backward::StepInBackward;
pub use lr_scheduler::{CosineAnnealingLR, LinearLR, LrScheduler, StepLR};
pub use scaler::{GradScaler, ScalerState};
pub use sgd::SGD;
pub use state::{
    master_key, tensor_key, GroupDict, ParamStateDict, StateDict, StateDictMeta, StateView,
};
pub use zero::zero_grad_params;

use crate::base::Result;
use crate::tensor::Tensor;

/// How `step` is computed. All three give the same values within rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Impl {
    /// One pass (CPU) or one launch (GPU) per tensor.
    ForLoop,
    /// One multi-tensor pass or launch per elementary op, like torch's `_foreach_*`.
    Foreach,
    /// The whole update in one pass per tensor (CPU) or one launch per (device, dtype)
    /// group (GPU).
    #[default]
    Fused,
}

/// How `zero_grad(false)` zeroes the gradients on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ZeroMode {
    /// One multi-tensor launch per (device, dtype) group (`_foreach_zero_`), or one
    /// memset per group when the grads live in a [`GradArena`].
    #[default]
    MultiTensor,
    /// One memset per tensor (for benchmarking).
    PerTensor,
}

/// An optimizer: parameter groups, per-parameter state, `zero_grad` and `step`.
///
/// Every method has a default that works on the shared [`OptimCore`]; optimizers
/// implement [`Optimizer::core`] and [`Optimizer::core_mut`].
pub trait Optimizer {
    /// The shared engine.
    fn core(&self) -> &OptimCore;
    /// The shared engine, mutable.
    fn core_mut(&mut self) -> &mut OptimCore;

    /// Clears the gradients of every parameter (PyTorch's documented `zero_grad`): with
    /// `set_to_none` each `.grad` becomes None; otherwise each grad is detached (if it has
    /// a grad_fn) or loses requires_grad, then is zeroed, grouped per (device, dtype).
    fn zero_grad(&mut self, set_to_none: bool) -> Result<()> {
        self.core_mut().zero_grad(set_to_none)
    }

    /// One update of every parameter that has a gradient (params whose grad is None are
    /// skipped: no state, no step count).
    fn step(&mut self) -> Result<()> {
        self.core_mut().step(None)
    }

    /// One update under a gradient scaler: each grad is divided by `grad_scale` (a
    /// one-element f32 tensor on the params' device) and written back into `.grad`; when
    /// `found_inf` (likewise) is nonzero, nothing changes at all (params, grads, state,
    /// step counts). No host synchronisation on a GPU.
    fn step_scaled(
        &mut self,
        grad_scale: Option<&Tensor>,
        found_inf: Option<&Tensor>,
    ) -> Result<()> {
        self.core_mut().step(Some((grad_scale, found_inf)))
    }

    /// The parameter groups.
    fn param_groups(&self) -> &[ParamGroup] {
        self.core().groups()
    }

    /// The learning rate of group `group`.
    fn lr(&self, group: usize) -> Result<f64> {
        self.core().lr(group)
    }

    /// Sets the learning rate of group `group` (no recompilation, no device work).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.core_mut().set_lr(group, lr)
    }

    /// The optimizer's state in PyTorch's layout.
    fn state_dict(&self) -> Result<StateDict> {
        self.core().state_dict()
    }

    /// Replaces the state and hyperparameters; on any mismatch returns an error and
    /// leaves the optimizer unchanged.
    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        self.core_mut().load_state_dict(sd)
    }

    /// The state of parameter `index` (in the order of the groups): its step count and
    /// named buffers, or None when it has none yet.
    fn param_state(&self, index: usize) -> Result<Option<StateView>> {
        self.core().param_state(index)
    }

    /// Chooses the implementation of `step`.
    fn set_impl(&mut self, imp: Impl) {
        self.core_mut().set_impl(imp)
    }

    /// Chooses how `zero_grad(false)` zeroes on a GPU.
    fn set_zero_mode(&mut self, mode: ZeroMode) {
        self.core_mut().set_zero_mode(mode)
    }

    /// Whether GPU steps read the learning rate from the device (the default); see
    /// [`OptimCore::set_capturable`].
    fn set_capturable(&mut self, capturable: bool) {
        self.core_mut().set_capturable(capturable)
    }
}
