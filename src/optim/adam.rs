//! Adam and AdamW.

use crate::base::Result;
use crate::optim::config::{AdamConfig, Hyper};
use crate::optim::{OptimCore, Optimizer};
use crate::tensor::Tensor;

/// PyTorch's `torch.optim.Adam`: L2 weight decay added to the gradient.
///
/// Per element, with `t` the parameter's step count after increment: `g = -g` if
/// maximize; `g += weight_decay * p`; `m = lerp(m, g, 1 - beta1)`;
/// `v = beta2 * v + (1 - beta2) * g * g`; with amsgrad `vmax = max(vmax, v)` replaces `v`
/// below; `p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`. The bias
/// corrections are computed in f64.
#[derive(Debug)]
pub struct Adam {
    core: OptimCore,
}

/// PyTorch's `torch.optim.AdamW`: Adam with decoupled weight decay
/// (`p *= 1 - lr * weight_decay` before the update; default weight decay 0.01).
#[derive(Debug)]
pub struct AdamW {
    core: OptimCore,
}

fn core(groups: Vec<(Vec<Tensor>, AdamConfig)>, decoupled: bool) -> Result<OptimCore> {
    OptimCore::new(
        groups
            .into_iter()
            .map(|(p, cfg)| (p, Hyper::Adam { cfg, decoupled }))
            .collect(),
    )
}

macro_rules! adam_kind {
    ($t:ident, $decoupled:expr, $defaults:expr) => {
        impl $t {
            /// The optimizer over `params` in one group.
            pub fn new(params: Vec<Tensor>, cfg: AdamConfig) -> Result<$t> {
                Self::with_groups(vec![(params, cfg)])
            }

            /// The optimizer with PyTorch's default hyperparameters.
            pub fn with_defaults(params: Vec<Tensor>) -> Result<$t> {
                Self::new(params, $defaults)
            }

            /// The optimizer over several groups, each with its own hyperparameters.
            pub fn with_groups(groups: Vec<(Vec<Tensor>, AdamConfig)>) -> Result<$t> {
                Ok($t {
                    core: core(groups, $decoupled)?,
                })
            }

            /// Adds a parameter group (PyTorch's `add_param_group`).
            pub fn add_param_group(&mut self, params: Vec<Tensor>, cfg: AdamConfig) -> Result<()> {
                self.core.add_param_group(
                    params,
                    Hyper::Adam {
                        cfg,
                        decoupled: $decoupled,
                    },
                )
            }
        }

        impl Optimizer for $t {
            fn core(&self) -> &OptimCore {
                &self.core
            }
            fn core_mut(&mut self) -> &mut OptimCore {
                &mut self.core
            }
        }
    };
}

adam_kind!(Adam, false, AdamConfig::default());
adam_kind!(AdamW, true, AdamConfig::adamw(1e-3));
