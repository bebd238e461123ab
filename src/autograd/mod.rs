//! Reverse-mode automatic differentiation: a define-by-run graph of [`Node`]s recorded
//! by the ops in [`crate::ops`], a backward engine with PyTorch's gradient
//! accumulation rules, and the thread-local grad mode ([`no_grad`]).
//!
//! The methods on [`crate::Tensor`] live here too: `requires_grad_`, `grad`, `set_grad`,
//! `backward`, `backward_with`, `retain_grad`, `detach`, `detach_`, `grad_fn`, `is_leaf`.

mod engine;
mod grad_mode;
mod meta;
mod node;

pub use engine::grad;
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad, set_grad_enabled, GradModeGuard};
pub use meta::AutogradMeta;
pub use node::{needs_grad, non_differentiable, record, BackwardCtx, Node, SavedTensor};
