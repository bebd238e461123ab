//! Tests of gradstep's public API, as another crate uses it: autograd, ops and their
//! finite-difference gradients, nn layers, the optimizers against the PyTorch reference
//! cases, the raw API, the launch budgets of the GPU step on the emulator, data loading
//! and the quickstart end to end.

mod common;

mod autograd;
mod bad_input;
mod clip;
mod data_idx;
mod distributed;
mod fuzz;
mod gradcheck;
mod nn;
mod no_gpu;
mod optim_autograd;
mod optim_conformance;
mod optim_raw;
mod train;
mod train_distributed;
mod train_f16;
