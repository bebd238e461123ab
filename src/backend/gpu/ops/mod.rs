//! The GPU implementations of the primitive families: plan and launch `kernels/*.cu`.
//!
//! One file per family, each an `impl` of its trait for [`super::GpuDevice`]; `plan`
//! holds what they share (strided layouts as the kernels see them, row views, per-dtype
//! kernel choice, launch shapes). The same code runs on CUDA and on the host emulator.
//! Arguments were validated by `tensor::prim`; these check only what that leaves open
//! (sizes of statistics tensors, index ranges) and never panic.
//!
//! No primitive synchronises with the host: the index checks of cross-entropy and
//! embedding report into the device's sticky error record (`gpu::Status`), read at the
//! next download or `Device::synchronize`.

mod copy;
mod elementwise;
mod index;
mod matmul;
mod norm;
mod plan;
mod random;
mod reduce;
mod softmax;
