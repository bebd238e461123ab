//! The quickstart model and optimizer choices.

use crate::base::{Error, Result};
use crate::nn::{Flatten, Linear, ReLU, Sequential};
use crate::optim::{Adam, AdamConfig, AdamW, Impl, Optimizer, SgdConfig, SGD};
use crate::tensor::{DType, Device, Rng, Tensor};

/// Inputs of the quickstart model: one 28x28 grey-scale image.
pub const QUICKSTART_INPUTS: usize = 28 * 28;
/// Outputs of the quickstart model: ten classes.
pub const QUICKSTART_CLASSES: usize = 10;
/// Width of the quickstart model's two hidden layers.
pub const QUICKSTART_HIDDEN: usize = 512;

/// PyTorch quickstart's `NeuralNetwork`: `flatten`, then `linear_relu_stack` =
/// Linear(784, 512), ReLU, Linear(512, 512), ReLU, Linear(512, 10). The parameters have
/// PyTorch's names (`linear_relu_stack.0.weight`, `linear_relu_stack.0.bias`, ...,
/// `linear_relu_stack.4.bias`) and layouts, initialised as `nn.Linear` does from `rng`.
pub fn quickstart_model(rng: &mut Rng, dtype: DType, device: Device) -> Result<Sequential> {
    let mut linear = |i, o| Linear::new(i, o, true, rng, dtype, device);
    let stack = Sequential::new()
        .add(linear(QUICKSTART_INPUTS, QUICKSTART_HIDDEN)?)
        .add(ReLU::new())
        .add(linear(QUICKSTART_HIDDEN, QUICKSTART_HIDDEN)?)
        .add(ReLU::new())
        .add(linear(QUICKSTART_HIDDEN, QUICKSTART_CLASSES)?);
    Ok(Sequential::new()
        .add_named("flatten", Flatten::new())
        .add_named("linear_relu_stack", stack))
}

/// Which optimizer trains the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD(params, lr)`.
    Sgd,
    /// `torch.optim.Adam(params, lr)`.
    Adam,
    /// `torch.optim.AdamW(params, lr)` (weight decay 0.01).
    AdamW,
}

impl OptimizerKind {
    /// Parses `sgd`, `adam` or `adamw`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW),
            _ => Err(Error::invalid(
                "optimizer",
                format!("unknown optimizer '{s}' (expected sgd, adam or adamw)"),
            )),
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// Builds the optimizer over `params` with PyTorch's defaults, learning rate `lr` and,
    /// for SGD, `momentum` (an error for Adam and AdamW, whose momentum is their betas).
    pub fn build(
        self,
        params: Vec<Tensor>,
        lr: f64,
        momentum: f64,
        imp: Impl,
    ) -> Result<Box<dyn Optimizer>> {
        if momentum != 0.0 && self != OptimizerKind::Sgd {
            return Err(Error::invalid(
                "optimizer",
                format!(
                    "momentum {momentum} is an SGD option; {} takes betas (its defaults)",
                    self.name()
                ),
            ));
        }
        let mut opt: Box<dyn Optimizer> = match self {
            OptimizerKind::Sgd => {
                Box::new(SGD::new(params, SgdConfig::new(lr).momentum(momentum))?)
            }
            OptimizerKind::Adam => Box::new(Adam::new(params, AdamConfig::new(lr))?),
            OptimizerKind::AdamW => Box::new(AdamW::new(params, AdamConfig::adamw(lr))?),
        };
        opt.set_impl(imp);
        Ok(opt)
    }
}

/// Parses `forloop`, `foreach` or `fused`.
pub fn parse_impl(s: &str) -> Result<Impl> {
    match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
        "forloop" => Ok(Impl::ForLoop),
        "foreach" => Ok(Impl::Foreach),
        "fused" => Ok(Impl::Fused),
        _ => Err(Error::invalid(
            "impl",
            format!("unknown implementation '{s}' (expected forloop, foreach or fused)"),
        )),
    }
}
