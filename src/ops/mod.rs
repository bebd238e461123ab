//! Differentiable operations: `impl Tensor` blocks built on the primitives of
//! the checked primitives (`tensor::prim`), each recording its backward with
//! [`crate::tensor::graph::record`], plus functional forms in the style of
//! `torch.nn.functional` for the layer-like ops.
//!
//! Every op runs on any device whose backend implements the primitives (CPU, CUDA, the
//! emulator). Backward formulas of the elementwise ops, the reductions, matmul and the
//! shape ops are written with differentiable ops, so `create_graph` gives correct
//! higher-order gradients through them; the fused backwards (cross-entropy, layer norm,
//! embedding, GELU) refuse double backward with an error.

mod binary;
mod inplace;
mod loss;
mod matmul;
mod nn_ops;
mod reduce;
mod shape;
mod softmax;
mod unary;

pub use crate::backend::{CrossEntropyOpts, Reduction};
pub use loss::{cross_entropy, mse_loss};
pub use matmul::{linear, linear_relu, matmul};
pub use nn_ops::{dropout, embedding, layer_norm};
pub use softmax::{log_softmax, softmax};
pub use unary::{gelu, relu, GeluApproximate};

/// Resolves a possibly negative dim against a rank (`op` names the caller in errors).
pub(crate) fn dim(op: &'static str, d: isize, rank: usize) -> crate::Result<usize> {
    crate::tensor::normalize_dim(op, d, rank)
}
