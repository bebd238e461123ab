//! The optimizer step inside backward: each parameter is updated as soon as its gradient
//! is final during `backward()`, and the gradient is dropped at once, so the grads of
//! the whole model never exist together (PyTorch's tutorial does this with
//! `register_post_accumulate_grad_hook` and one optimizer per parameter).
//!
//! [`StepInBackward`] registers one post-accumulate-grad hook on every parameter of an
//! optimizer. The backward engine hands the hook the parameters whose grads became final
//! together (those delivered when one node of the graph has run: a linear layer's weight,
//! a bias), and they are stepped in one call of the optimizer: one fused launch per
//! (device, dtype) on a GPU, with the same arithmetic as the ordinary `step`, so the
//! parameters end the same. Nothing is left for `zero_grad` or `step` to do.
//!
//! It cannot be combined with gradient accumulation (the grads are gone after each
//! backward), global clipping (`clip_grad_norm_` needs every grad at once; it refuses
//! parameters that step in backward) or a GradScaler (its inf check needs every grad
//! before any step); use bf16 rather than f16 mixed precision with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::autograd::PostAccumulateGradHook;
use crate::base::{Error, Result};
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// An optimizer whose step runs inside backward: each group of params whose grads one
/// node of the graph delivers is stepped at once (one fused launch per (device, dtype)
/// on a GPU, the same values as `step`) and their grads are dropped, so only about one
/// layer's grads exist at a time. Refuses a param that already has a grad or another
/// post-accumulate-grad hook; `clip_grad_norm_` refuses its params (it needs every grad
/// at once), and a GradScaler cannot drive it (its inf check needs every grad first).
///
/// ```
/// # fn main() -> gradstep::Result<()> {
/// use gradstep::optim::{SgdConfig, StepInBackward, SGD};
/// use gradstep::{DType, Device, Tensor};
/// let w = Tensor::ones(&[3], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// let opt = StepInBackward::new(Box::new(SGD::new(vec![w.clone()], SgdConfig::new(0.5))?))?;
/// w.mul(&w)?.sum_all()?.backward()?; // grad 2w = 2, stepped at once: w = 1 - 0.5 * 2
/// assert_eq!(w.to_vec_f64()?, vec![0.0; 3]);
/// assert!(w.grad().is_none());
/// assert_eq!(opt.peak_grad_bytes(), 12);
/// # Ok(())
/// # }
/// ```
pub struct StepInBackward {
    shared: Arc<Shared>,
    hook: Arc<dyn PostAccumulateGradHook>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    opt: Box<dyn Optimizer + Send>,
    /// Param index by tensor id.
    index: HashMap<usize, usize>,
    /// The most gradient bytes held at once by the params, seen when a hook ran.
    peak_grad_bytes: usize,
    /// Hook calls (groups of params stepped together) since the optimizer was wrapped.
    groups_stepped: usize,
}

/// The hook on each param; weak, so that the params (held by the optimizer) do not keep
/// their optimizer alive through their own metadata.
struct Hook(Weak<Shared>);

impl PostAccumulateGradHook for Hook {
    fn call(&self, leaves: &[Tensor]) -> Result<()> {
        match self.0.upgrade() {
            Some(shared) => shared.step(leaves),
            None => Ok(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Steps `leaves` (params of the optimizer) and drops their grads.
    fn step(&self, leaves: &[Tensor]) -> Result<()> {
        let mut st = self.lock();
        let held: usize = st
            .opt
            .core()
            .params()
            .iter()
            .filter_map(|p| p.grad())
            .map(|g| g.numel() * g.dtype().size_in_bytes())
            .sum();
        st.peak_grad_bytes = st.peak_grad_bytes.max(held);
        let only: Vec<usize> = leaves
            .iter()
            .filter_map(|l| st.index.get(&l.id()).copied())
            .collect();
        st.opt.core_mut().step_only(None, Some(&only))?;
        st.groups_stepped += 1;
        leaves.iter().try_for_each(|l| l.set_grad(None))
    }
}

impl StepInBackward {
    /// Wraps `opt` (any optimizer and implementation) so that its params are stepped
    /// during backward. Errors: a param that already has a grad (it would be stepped
    /// with a gradient accumulated over two passes), or one that another
    /// `StepInBackward` (or any post-accumulate hook) already watches.
    pub fn new(opt: Box<dyn Optimizer + Send>) -> Result<StepInBackward> {
        let params = opt.core().params().to_vec();
        for (i, p) in params.iter().enumerate() {
            if p.grad().is_some() {
                return Err(Error::Optim(format!(
                    "StepInBackward: param {i} already has a grad; clear it first \
                     (zero_grad(true)): gradients cannot accumulate across passes here"
                )));
            }
            if p.has_post_accumulate_grad_hooks() {
                return Err(Error::Optim(format!(
                    "StepInBackward: param {i} already has a post-accumulate-grad hook \
                     (is it stepped in backward by another optimizer?)"
                )));
            }
        }
        let index = params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id(), i))
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                opt,
                index,
                peak_grad_bytes: 0,
                groups_stepped: 0,
            }),
        });
        let hook: Arc<dyn PostAccumulateGradHook> = Arc::new(Hook(Arc::downgrade(&shared)));
        let sib = StepInBackward { shared, hook };
        for p in &params {
            p.register_post_accumulate_grad_hook(sib.hook.clone())?;
            p.meta().stepped_in_backward = true;
        }
        Ok(sib)
    }

    /// Runs `f` on the wrapped optimizer (to set the learning rate, read or load its
    /// state). Not from inside a backward pass of its params.
    pub fn with_optimizer<R>(&self, f: impl FnOnce(&mut dyn Optimizer) -> R) -> R {
        f(self.shared.lock().opt.as_mut())
    }

    /// The most gradient bytes the params held at once (the grads of the params
    /// stepped together, the largest such group), since creation or the last reset.
    pub fn peak_grad_bytes(&self) -> usize {
        self.shared.lock().peak_grad_bytes
    }

    /// Restarts [`Self::peak_grad_bytes`].
    pub fn reset_peak_grad_bytes(&self) {
        self.shared.lock().peak_grad_bytes = 0;
    }

    /// Groups of params stepped so far (one per hook call).
    pub fn groups_stepped(&self) -> usize {
        self.shared.lock().groups_stepped
    }

    /// Stops stepping in backward and gives the optimizer back.
    pub fn into_optimizer(self) -> Result<Box<dyn Optimizer + Send>> {
        let shared = self.shared.clone();
        drop(self); // unhooks: the only other references were the hooks' weak ones
        Arc::try_unwrap(shared)
            .map(|s| s.state.into_inner().unwrap_or_else(|e| e.into_inner()).opt)
            .map_err(|_| Error::Optim("StepInBackward: the optimizer is still in use".into()))
    }

    fn unhook(&self) {
        let params = self.shared.lock().opt.core().params().to_vec();
        for p in &params {
            p.remove_post_accumulate_grad_hook(&self.hook);
            p.meta().stepped_in_backward = false;
        }
    }
}

impl Drop for StepInBackward {
    fn drop(&mut self) {
        self.unhook();
    }
}

impl std::fmt::Debug for StepInBackward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("StepInBackward")
            .field("params", &st.index.len())
            .field("peak_grad_bytes", &st.peak_grad_bytes)
            .field("groups_stepped", &st.groups_stepped)
            .finish()
    }
}
