//! Per-tensor autograd metadata.

use std::sync::Arc;

use crate::tensor::Tensor;

/// A node of the backward graph (the `grad_fn` of a non-leaf tensor).
pub struct Node {
    /// The op's name, e.g. `MulBackward`.
    pub name: &'static str,
}

/// What autograd knows about one tensor.
#[derive(Default)]
pub struct AutogradMeta {
    /// Whether gradients flow to this tensor.
    pub requires_grad: bool,
    /// The accumulated gradient (`.grad`).
    pub grad: Option<Tensor>,
    /// The node that produced this tensor, for non-leaves.
    pub grad_fn: Option<Arc<Node>>,
    /// Whether a non-leaf keeps its gradient (`retain_grad`).
    pub retains_grad: bool,
}

impl Tensor {
    /// Whether gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.meta().requires_grad
    }
}
