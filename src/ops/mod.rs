//! Differentiable operations: `impl Tensor` blocks built on the dispatch primitives.
