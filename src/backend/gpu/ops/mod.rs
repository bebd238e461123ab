//! The GPU implementations of the primitive families: plan and launch `kernels/*.cu`.
//!
//! One file per family, each an `impl` of its trait for [`super::GpuDevice`]; `plan`
//! holds what they share (strided layouts as the kernels see them, row views, per-dtype
//! kernel choice, launch shapes). The same code runs on CUDA and on the host emulator.
//! Arguments were validated by `tensor::prim`; these check only what that leaves open
//! (sizes of statistics tensors, index ranges) and never panic.
//!
//! Host synchronisation happens only where a value must come back: the index checks of
//! cross-entropy and embedding (one 8-byte read each).

mod copy;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod plan;
mod random;
mod reduce;
mod softmax;
