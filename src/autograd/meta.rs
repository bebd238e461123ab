//! The autograd methods of [`Tensor`]: `requires_grad_`, `grad`, `set_grad`, `backward`,
//! `retain_grad`, `detach`, ...

use std::sync::Arc;

use crate::autograd::engine;
use crate::base::{Error, Result};
use crate::tensor::graph::PostAccumulateGradHook;
use crate::tensor::{Node, Tensor};

impl Tensor {
    /// Whether gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.meta().requires_grad
    }

    /// Sets `requires_grad` (PyTorch's `requires_grad_`); returns the same tensor.
    /// Only leaves can stop requiring grad; only float tensors can require it.
    pub fn requires_grad_(&self, requires: bool) -> Result<Tensor> {
        let mut m = self.meta();
        if requires && !self.dtype().is_float() {
            return Err(Error::Autograd(format!(
                "only float tensors can require grad, not {}",
                self.dtype()
            )));
        }
        if !requires && m.grad_fn.is_some() {
            return Err(Error::Autograd(
                "requires_grad can only be cleared on a leaf; use detach() for a non-leaf".into(),
            ));
        }
        m.requires_grad = requires;
        drop(m);
        Ok(self.clone())
    }

    /// The accumulated gradient (`.grad`), if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.meta().grad.clone()
    }

    /// Replaces `.grad` (None clears it). The gradient must match shape, dtype and device.
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        if let Some(g) = &grad {
            if g.shape() != self.shape() {
                return Err(Error::ShapeMismatch {
                    op: "set_grad",
                    lhs: self.shape().to_vec(),
                    rhs: g.shape().to_vec(),
                });
            }
            if g.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch {
                    op: "set_grad",
                    lhs: self.dtype(),
                    rhs: g.dtype(),
                });
            }
            if g.device() != self.device() {
                return Err(Error::DeviceMismatch {
                    op: "set_grad",
                    lhs: self.device(),
                    rhs: g.device(),
                });
            }
        }
        self.meta().grad = grad;
        Ok(())
    }

    /// The node that produced this tensor (None for leaves).
    pub fn grad_fn(&self) -> Option<Arc<Node>> {
        self.meta().grad_fn.clone()
    }

    /// Whether the tensor is a leaf of the graph (created by the user, not by an op
    /// that tracks gradients).
    pub fn is_leaf(&self) -> bool {
        self.meta().grad_fn.is_none()
    }

    /// Cuts this tensor off the graph in place: no grad_fn, no requires_grad.
    pub fn detach_(&self) {
        let mut m = self.meta();
        m.grad_fn = None;
        m.requires_grad = false;
    }

    /// A new tensor sharing this one's data, with no history and no requires_grad.
    pub fn detach(&self) -> Tensor {
        self.alias()
    }

    /// Backward from a one-element tensor: fills `.grad` of every leaf it depends on
    /// (PyTorch's `loss.backward()`); frees the graph's saved tensors.
    pub fn backward(&self) -> Result<()> {
        engine::backward(self, None, false, false)
    }

    /// Backward with an explicit output gradient (required unless the tensor has one
    /// element), optionally keeping the graph (`retain_graph`) and recording the backward
    /// itself so the gradients can be differentiated again (`create_graph`, which also
    /// keeps the graph).
    pub fn backward_with(
        &self,
        gradient: Option<&Tensor>,
        retain_graph: bool,
        create_graph: bool,
    ) -> Result<()> {
        engine::backward(self, gradient, retain_graph, create_graph)
    }

    /// Makes a non-leaf keep its gradient in `.grad` at the next backward (leaves always
    /// do). An error on a tensor that does not require grad.
    pub fn retain_grad(&self) -> Result<()> {
        let mut m = self.meta();
        if !m.requires_grad {
            return Err(Error::Autograd(
                "retain_grad on a tensor that does not require grad".into(),
            ));
        }
        let Some(node) = m.grad_fn.clone() else {
            return Ok(());
        };
        if !m.retains_grad {
            m.retains_grad = true;
            node.retained
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::downgrade(&self.0));
        }
        Ok(())
    }

    /// Runs `hook` after each backward pass has accumulated into this leaf's `.grad`
    /// (PyTorch's `register_post_accumulate_grad_hook`; see [`PostAccumulateGradHook`]
    /// for how leaves that finish together are batched). An error on a non-leaf or a
    /// tensor that does not require grad.
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: Arc<dyn PostAccumulateGradHook>,
    ) -> Result<()> {
        let mut m = self.meta();
        if !m.requires_grad || m.grad_fn.is_some() {
            return Err(Error::Autograd(
                "post-accumulate-grad hooks are for leaves that require grad".into(),
            ));
        }
        m.post_accumulate.push(hook);
        Ok(())
    }

    /// Removes every post-accumulate-grad hook that is `hook` (the same allocation).
    pub fn remove_post_accumulate_grad_hook(&self, hook: &Arc<dyn PostAccumulateGradHook>) {
        self.meta()
            .post_accumulate
            .retain(|h| !std::ptr::addr_eq(Arc::as_ptr(h), Arc::as_ptr(hook)));
    }

    /// Whether the leaf has post-accumulate-grad hooks.
    pub fn has_post_accumulate_grad_hooks(&self) -> bool {
        !self.meta().post_accumulate.is_empty()
    }

    /// Whether `.grad` is populated for this tensor by backward: leaves requiring grad,
    /// and non-leaves after [`Self::retain_grad`].
    pub fn retains_grad(&self) -> bool {
        let m = self.meta();
        m.retains_grad || (m.requires_grad && m.grad_fn.is_none())
    }
}
