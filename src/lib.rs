//! # gradstep
//!
//! A CUDA-native training backend with PyTorch's semantics for the three steps of every
//! training loop: `zero_grad`, `backward` and `step`. Tensors live on the CPU, on a CUDA
//! GPU, or on the host emulation of the CUDA backend (`Device::Emu`), which runs the
//! unchanged `kernels/*.cu` on the host so that every kernel is tested without a GPU.
//!
//! Layers, from the bottom: [`tensor`] (storage, layout, dtype, device), [`backend`]
//! (CPU, CUDA, emulation, and the dispatch between them), [`ops`] and [`autograd`]
//! (differentiable operations and the backward engine), [`nn`] and [`optim`], and
//! [`data`].

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod check;
pub mod data;
pub mod error;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod selftest;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tensor::{DType, Device, Tensor};
