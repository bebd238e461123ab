//! Activation layers.

use crate::base::Result;
use crate::nn::module::Module;
use crate::ops::GeluApproximate;
use crate::tensor::Tensor;

/// `max(x, 0)` elementwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReLU;

impl ReLU {
    /// The layer.
    pub fn new() -> ReLU {
        ReLU
    }
}

impl Module for ReLU {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        input.relu()
    }

    fn is_relu(&self) -> bool {
        true
    }
}

/// GELU elementwise, exact or tanh-approximated.
#[derive(Clone, Copy, Debug, Default)]
pub struct GELU {
    /// Which GELU.
    pub approximate: GeluApproximate,
}

impl GELU {
    /// The exact GELU.
    pub fn new() -> GELU {
        GELU::default()
    }

    /// GELU with the given approximation.
    pub fn with(approximate: GeluApproximate) -> GELU {
        GELU { approximate }
    }
}

impl Module for GELU {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        input.gelu_with(self.approximate)
    }
}
