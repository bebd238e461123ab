//! Neural-network layers and losses in the shape of `torch.nn`: the [`Module`] trait,
//! [`Linear`], [`ReLU`], [`GELU`], [`Dropout`], [`Flatten`], [`LayerNorm`],
//! [`Embedding`], [`Sequential`], and the losses [`CrossEntropyLoss`] and [`MSELoss`].
//!
//! Parameters are leaf tensors that require grad; their names follow PyTorch's
//! `state_dict` keys (`0.weight`, `linear_relu_stack.2.bias`).

mod activation;
mod embedding;
mod layers;
mod linear;
mod loss;
mod module;
mod norm;
mod sequential;

pub use activation::{ReLU, GELU};
pub use embedding::Embedding;
pub use layers::{Dropout, Flatten};
pub use linear::Linear;
pub use loss::{CrossEntropyLoss, MSELoss};
pub use module::{Module, StateDict};
pub use norm::LayerNorm;
pub use sequential::Sequential;
