//! Loss modules.

use crate::backend::{CrossEntropyOpts, Reduction};
use crate::base::Result;
use crate::tensor::Tensor;

/// `nn.CrossEntropyLoss` with class indices: `forward(logits [N, C], target [N] i64)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropyLoss {
    /// Reduction, label smoothing and ignore index (PyTorch's defaults: mean, 0, -100).
    pub opts: CrossEntropyOpts,
}

impl CrossEntropyLoss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> CrossEntropyLoss {
        CrossEntropyLoss::default()
    }

    /// The loss with the given options.
    pub fn with(opts: CrossEntropyOpts) -> CrossEntropyLoss {
        CrossEntropyLoss { opts }
    }

    /// The loss of `logits` against class indices `target`.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::ops::cross_entropy(logits, target, &self.opts)
    }
}

/// `nn.MSELoss`: mean squared error.
#[derive(Clone, Copy, Debug, Default)]
pub struct MSELoss {
    /// Reduction (default mean).
    pub reduction: Reduction,
}

impl MSELoss {
    /// The loss with the mean reduction.
    pub fn new() -> MSELoss {
        MSELoss::default()
    }

    /// The loss with the given reduction.
    pub fn with(reduction: Reduction) -> MSELoss {
        MSELoss { reduction }
    }

    /// The loss of `input` against `target` (same shape).
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::ops::mse_loss(input, target, self.reduction)
    }
}
