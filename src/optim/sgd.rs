//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use crate::base::Result;
use crate::optim::config::{Hyper, SgdConfig};
use crate::optim::{OptimCore, Optimizer};
use crate::tensor::Tensor;

/// PyTorch's `torch.optim.SGD`.
///
/// Per element: `g = -g` if maximize; `g += weight_decay * p`; with momentum the buffer
/// is `b = g` on the first step, then `b = momentum * b + (1 - dampening) * g`, and
/// `g = g + momentum * b` (Nesterov) or `g = b`; finally `p -= lr * g`.
#[derive(Debug)]
pub struct SGD {
    core: OptimCore,
}

impl SGD {
    /// SGD over `params` in one group.
    pub fn new(params: Vec<Tensor>, cfg: SgdConfig) -> Result<SGD> {
        Self::with_groups(vec![(params, cfg)])
    }

    /// SGD over several groups, each with its own hyperparameters.
    pub fn with_groups(groups: Vec<(Vec<Tensor>, SgdConfig)>) -> Result<SGD> {
        let core = OptimCore::new(
            groups
                .into_iter()
                .map(|(p, c)| (p, Hyper::Sgd(c)))
                .collect(),
        )?;
        Ok(SGD { core })
    }

    /// Adds a parameter group (PyTorch's `add_param_group`).
    pub fn add_param_group(&mut self, params: Vec<Tensor>, cfg: SgdConfig) -> Result<()> {
        self.core.add_param_group(params, Hyper::Sgd(cfg))
    }
}

impl Optimizer for SGD {
    fn core(&self) -> &OptimCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut OptimCore {
        &mut self.core
    }
}
