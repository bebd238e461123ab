//! Reverse-mode automatic differentiation: the backward engine, with PyTorch's gradient
//! accumulation rules, over the define-by-run graph that ops record
//! ([`Node`]s, kept by the tensor layer), and the thread-local grad mode ([`no_grad`]).
//!
//! The methods on [`crate::Tensor`] live here too: `requires_grad_`, `grad`, `set_grad`,
//! `backward`, `backward_with`, `retain_grad`, `detach`, `detach_`, `grad_fn`, `is_leaf`.

mod engine;
mod meta;

pub use crate::tensor::grad_mode::{
    enable_grad, is_grad_enabled, no_grad, set_grad_enabled, GradModeGuard,
};
pub use crate::tensor::graph::{
    needs_grad, non_differentiable, record, AutogradMeta, BackwardCtx, Node,
    PostAccumulateGradHook, SavedTensor,
};
pub use engine::grad;
