//! # gradstep
//!
//! A CUDA-native training backend with PyTorch's semantics for the three steps of every
//! training loop: `zero_grad`, `backward` and `step`. Tensors live on the CPU, on a CUDA
//! GPU, or on the host emulation of the CUDA backend (`Device::Emu(0)`), which runs the
//! unchanged `kernels/*.cu` on the host so that every kernel is tested without a GPU.
//!
//! Layers, from the bottom (each imports only the ones below it):
//!
//! 1. `base`: [`DType`], [`Device`], [`Layout`](tensor::Layout), storage and [`Error`];
//! 2. [`backend`]: every primitive declared once and implemented by the CPU and by the
//!    GPU launch path shared by CUDA and the emulator; they take storage and layout;
//! 3. [`tensor`]: [`Tensor`], the checked primitives on tensors, and the backward graph
//!    that ops record;
//! 4. [`ops`]: differentiable operations; [`autograd`]: the backward engine;
//! 5. [`nn`], [`optim`] and [`distributed`] (data-parallel training);
//! 6. [`data`], [`io`] (safetensors files) and [`train`] (the quickstart, checkpoints);
//! 7. `cli`: the command line (feature `cli`).
//!
//! Cargo features: `cuda` (default; CUDA GPUs through cudarc, the committed PTX and
//! cuBLAS), `emu` (the host emulator: compiles the kernels with a C++ compiler; what the
//! project's own tests use), `nccl` (NCCL collectives for [`distributed`] on CUDA GPUs),
//! `cli` (the `gradstep` binary and its plots). With
//! `default-features = false` gradstep is a CPU-only library with no C++ and no CUDA.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod base;
#[cfg(test)]
mod tests;

pub mod autograd;
pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod distributed;
pub mod graph;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod tensor;
pub mod train;

pub use base::{DType, Device, Element, Error, Result};
pub use tensor::Tensor;

/// The error type and its result alias.
pub mod error {
    pub use crate::base::{Error, Result};
}
