//! Hyperparameters of each optimizer, their PyTorch defaults and validation.

use serde_json::{json, Map, Value};

use crate::base::{Error, Result};

/// SGD hyperparameters (PyTorch's `torch.optim.SGD`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum factor (default 0: no momentum buffer).
    pub momentum: f64,
    /// Dampening of the momentum (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl SgdConfig {
    /// The defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            ..Default::default()
        }
    }
    /// Sets the momentum.
    pub fn momentum(mut self, v: f64) -> Self {
        self.momentum = v;
        self
    }
    /// Sets the dampening.
    pub fn dampening(mut self, v: f64) -> Self {
        self.dampening = v;
        self
    }
    /// Sets the weight decay.
    pub fn weight_decay(mut self, v: f64) -> Self {
        self.weight_decay = v;
        self
    }
    /// Sets Nesterov momentum.
    pub fn nesterov(mut self, v: bool) -> Self {
        self.nesterov = v;
        self
    }
    /// Sets maximize.
    pub fn maximize(mut self, v: bool) -> Self {
        self.maximize = v;
        self
    }
}

/// Adam / AdamW hyperparameters (PyTorch's `torch.optim.Adam` and `AdamW`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay: L2 added to the gradient for Adam, decoupled for AdamW (default 0
    /// for Adam, 0.01 for AdamW).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl AdamConfig {
    /// Adam's defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        AdamConfig {
            lr,
            ..Default::default()
        }
    }
    /// AdamW's defaults (weight decay 0.01) with learning rate `lr`.
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            lr,
            weight_decay: 0.01,
            ..Default::default()
        }
    }
    /// Sets the betas.
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        self.betas = (b1, b2);
        self
    }
    /// Sets eps.
    pub fn eps(mut self, v: f64) -> Self {
        self.eps = v;
        self
    }
    /// Sets the weight decay.
    pub fn weight_decay(mut self, v: f64) -> Self {
        self.weight_decay = v;
        self
    }
    /// Sets AMSGrad.
    pub fn amsgrad(mut self, v: bool) -> Self {
        self.amsgrad = v;
        self
    }
    /// Sets maximize.
    pub fn maximize(mut self, v: bool) -> Self {
        self.maximize = v;
        self
    }
}

/// The hyperparameters of one parameter group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hyper {
    /// SGD.
    Sgd(SgdConfig),
    /// Adam (`decoupled == false`) or AdamW (`decoupled == true`).
    Adam {
        /// The hyperparameters.
        cfg: AdamConfig,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
    },
}

fn check(what: &str, v: f64, ok: bool) -> Result<()> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(Error::Optim(format!("invalid {what}: {v}")))
    }
}

/// Keys PyTorch's optimizers write into each `param_groups` entry beside the
/// hyperparameters (implementation flags and the schedulers' `initial_lr`): accepted in a
/// loaded state dict and ignored.
pub const TORCH_GROUP_FLAGS: [&str; 5] = [
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "initial_lr",
];

impl Hyper {
    /// The optimizer's name: `sgd`, `adam` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            Hyper::Sgd(_) => "sgd",
            Hyper::Adam {
                decoupled: false, ..
            } => "adam",
            Hyper::Adam {
                decoupled: true, ..
            } => "adamw",
        }
    }

    /// Validates like PyTorch's constructors.
    pub fn validate(&self) -> Result<()> {
        match self {
            Hyper::Sgd(c) => {
                check("learning rate", c.lr, c.lr >= 0.0)?;
                check("momentum value", c.momentum, c.momentum >= 0.0)?;
                check("dampening value", c.dampening, true)?;
                check("weight_decay value", c.weight_decay, c.weight_decay >= 0.0)?;
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return Err(Error::Optim(format!(
                        "Nesterov momentum requires a momentum and zero dampening (momentum {}, dampening {})",
                        c.momentum, c.dampening
                    )));
                }
                Ok(())
            }
            Hyper::Adam { cfg: c, .. } => {
                check("learning rate", c.lr, c.lr >= 0.0)?;
                check("epsilon value", c.eps, c.eps >= 0.0)?;
                check(
                    "beta parameter at index 0",
                    c.betas.0,
                    (0.0..1.0).contains(&c.betas.0),
                )?;
                check(
                    "beta parameter at index 1",
                    c.betas.1,
                    (0.0..1.0).contains(&c.betas.1),
                )?;
                check("weight_decay value", c.weight_decay, c.weight_decay >= 0.0)
            }
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Hyper::Sgd(c) => c.lr,
            Hyper::Adam { cfg, .. } => cfg.lr,
        }
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Hyper::Sgd(c) => c.lr = lr,
            Hyper::Adam { cfg, .. } => cfg.lr = lr,
        }
    }

    /// Whether two groups may live in one optimizer (same optimizer kind).
    pub fn same_kind(&self, o: &Hyper) -> bool {
        match (self, o) {
            (Hyper::Sgd(_), Hyper::Sgd(_)) => true,
            (Hyper::Adam { decoupled: a, .. }, Hyper::Adam { decoupled: b, .. }) => a == b,
            _ => false,
        }
    }

    /// The names of the per-parameter state buffers, in kernel order.
    pub fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            Hyper::Sgd(c) if c.momentum != 0.0 => &["momentum_buffer"],
            Hyper::Sgd(_) => &[],
            Hyper::Adam { cfg, .. } if cfg.amsgrad => &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
            Hyper::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// Whether the state holds a step count (Adam, AdamW).
    pub fn has_step(&self) -> bool {
        matches!(self, Hyper::Adam { .. })
    }

    /// The group's entries of a PyTorch `param_groups` dict (everything but `params`).
    pub fn to_json(&self) -> Map<String, Value> {
        let v = match self {
            Hyper::Sgd(c) => json!({"lr": c.lr, "momentum": c.momentum, "dampening": c.dampening,
                "weight_decay": c.weight_decay, "nesterov": c.nesterov, "maximize": c.maximize}),
            Hyper::Adam { cfg: c, decoupled } => {
                json!({"lr": c.lr, "betas": [c.betas.0, c.betas.1],
                "eps": c.eps, "weight_decay": c.weight_decay, "amsgrad": c.amsgrad,
                "maximize": c.maximize, "decoupled_weight_decay": decoupled})
            }
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// Reads hyperparameters of the same kind as `self` from a `param_groups` entry;
    /// missing keys keep `self`'s values.
    ///
    /// `lr` must be present; a key that is neither one of `self`'s hyperparameters nor
    /// one of the flags PyTorch writes beside them (`foreach`, `fused`, `capturable`,
    /// `differentiable`, `initial_lr`: ignored) is an error naming it.
    pub fn from_json(&self, m: &Map<String, Value>) -> Result<Hyper> {
        let known = self.to_json();
        if let Some(k) = m
            .keys()
            .find(|k| !known.contains_key(*k) && !TORCH_GROUP_FLAGS.contains(&k.as_str()))
        {
            return Err(Error::Optim(format!(
                "param group key '{k}' is not a hyperparameter of {} (expected {:?})",
                self.name(),
                known.keys().collect::<Vec<_>>()
            )));
        }
        if !m.contains_key("lr") {
            return Err(Error::Optim("param group has no 'lr'".into()));
        }
        let num = |k: &str, d: f64| -> Result<f64> {
            match m.get(k) {
                None => Ok(d),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| Error::Optim(format!("param group key '{k}' is not a number"))),
            }
        };
        let flag = |k: &str, d: bool| -> Result<bool> {
            match m.get(k) {
                None => Ok(d),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| Error::Optim(format!("param group key '{k}' is not a bool"))),
            }
        };
        let h = match self {
            Hyper::Sgd(c) => Hyper::Sgd(SgdConfig {
                lr: num("lr", c.lr)?,
                momentum: num("momentum", c.momentum)?,
                dampening: num("dampening", c.dampening)?,
                weight_decay: num("weight_decay", c.weight_decay)?,
                nesterov: flag("nesterov", c.nesterov)?,
                maximize: flag("maximize", c.maximize)?,
            }),
            Hyper::Adam { cfg: c, decoupled } => {
                let betas = match m.get("betas") {
                    None => c.betas,
                    Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_f64(), a[1].as_f64()) {
                        (Some(x), Some(y)) => (x, y),
                        _ => {
                            return Err(Error::Optim(
                                "param group key 'betas' is not two numbers".into(),
                            ))
                        }
                    },
                    Some(_) => {
                        return Err(Error::Optim(
                            "param group key 'betas' is not two numbers".into(),
                        ))
                    }
                };
                let d = flag("decoupled_weight_decay", *decoupled)?;
                if d != *decoupled {
                    return Err(Error::Optim(
                        "decoupled_weight_decay does not match this optimizer".into(),
                    ));
                }
                Hyper::Adam {
                    cfg: AdamConfig {
                        lr: num("lr", c.lr)?,
                        betas,
                        eps: num("eps", c.eps)?,
                        weight_decay: num("weight_decay", c.weight_decay)?,
                        amsgrad: flag("amsgrad", c.amsgrad)?,
                        maximize: flag("maximize", c.maximize)?,
                    },
                    decoupled: d,
                }
            }
        };
        h.validate()?;
        Ok(h)
    }
}
