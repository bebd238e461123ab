//! GPU implementations of the dispatch primitives: plan and launch `kernels/*.cu`.
//!
//! One file per kernel family; `plan` holds what they share (strided layouts as the
//! kernels see them, row views, per-dtype kernel choice, launch shapes). The same code
//! runs on CUDA and on the host emulator. Arguments were validated by
//! [`crate::backend::dispatch`]; these functions check only what dispatch leaves open
//! (sizes of statistics tensors, index ranges) and never panic.
//!
//! Host synchronisation happens only where a value must come back: the index checks of
//! [`cross_entropy`] and [`embedding`] (one 8-byte read each).

mod copy;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod plan;
mod random;
mod reduce;
mod softmax;

pub use copy::{cast, contiguous, copy_, fill_, zero_};
pub use elementwise::{add_, affine, binary, unary};
pub use index::{argmax, embedding, embedding_backward};
pub use matmul::matmul;
pub use norm::{layer_norm, layer_norm_backward};
pub use random::dropout_mask;
pub use reduce::sum_dims;
pub use softmax::{cross_entropy, cross_entropy_backward, softmax, softmax_backward};
