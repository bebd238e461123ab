//! Learning-rate schedules (PyTorch's `torch.optim.lr_scheduler`, closed forms).
//!
//! A schedule sets each group's lr through [`Optimizer::set_lr`]. On a GPU that writes
//! the group's lr in device memory (one small upload, no host sync), which the step's
//! kernels read: a step captured into a graph ([`crate::graph::StepGraph`]) follows the
//! schedule across replays.
//!
//! ```
//! use gradstep::optim::{LrScheduler, Optimizer, SgdConfig, StepLR, SGD};
//! use gradstep::{Device, Tensor};
//! # fn main() -> gradstep::Result<()> {
//! let w = Tensor::from_vec(vec![0.0f32; 2], &[2], Device::Cpu)?;
//! let mut opt = SGD::new(vec![w], SgdConfig::new(0.1))?;
//! let mut sched = StepLR::new(&mut opt, 2, 0.5)?;
//! sched.step(&mut opt)?;
//! sched.step(&mut opt)?;
//! assert!((sched.get_last_lr()[0] - 0.05).abs() < 1e-12);
//! # Ok(()) }
//! ```

use crate::base::{Error, Result};
use crate::optim::Optimizer;

/// A schedule of learning rates over epochs (or steps).
pub trait LrScheduler {
    /// The factor or value of each group at `epoch`, from its base lr.
    fn lr_at(&self, base: f64, epoch: u64) -> f64;
    /// The base lrs and the current epoch.
    fn state(&mut self) -> (&[f64], &mut u64, &mut Vec<f64>);

    /// Advances one epoch and sets every group's lr.
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let (bases, epoch, _) = self.state();
        *epoch += 1;
        let (bases, e) = (bases.to_vec(), *epoch);
        let lrs: Vec<f64> = bases.iter().map(|&b| self.lr_at(b, e)).collect();
        for (g, &lr) in lrs.iter().enumerate() {
            opt.set_lr(g, lr)?;
        }
        *self.state().2 = lrs;
        Ok(())
    }

    /// The lrs set by the last step (PyTorch's `get_last_lr`).
    fn get_last_lr(&mut self) -> Vec<f64> {
        self.state().2.clone()
    }
}

/// Common state: base lrs, epoch, last lrs.
#[derive(Debug, Clone)]
struct Sched {
    base: Vec<f64>,
    epoch: u64,
    last: Vec<f64>,
}

impl Sched {
    /// Records the base lrs and applies epoch 0.
    fn start(opt: &mut dyn Optimizer, at0: impl Fn(f64) -> f64) -> Result<Sched> {
        let base: Vec<f64> = (0..opt.param_groups().len())
            .map(|g| opt.lr(g))
            .collect::<Result<_>>()?;
        let last: Vec<f64> = base.iter().map(|&b| at0(b)).collect();
        for (g, &lr) in last.iter().enumerate() {
            opt.set_lr(g, lr)?;
        }
        Ok(Sched {
            base,
            epoch: 0,
            last,
        })
    }
}

macro_rules! sched_state {
    ($t:ty) => {
        impl LrScheduler for $t {
            fn lr_at(&self, base: f64, epoch: u64) -> f64 {
                self.at(base, epoch)
            }
            fn state(&mut self) -> (&[f64], &mut u64, &mut Vec<f64>) {
                (&self.s.base, &mut self.s.epoch, &mut self.s.last)
            }
        }
    };
}

/// `lr = base * gamma^(epoch / step_size)`.
#[derive(Debug, Clone)]
pub struct StepLR {
    s: Sched,
    step_size: u64,
    gamma: f64,
}

impl StepLR {
    /// Decays by `gamma` every `step_size` epochs.
    pub fn new(opt: &mut dyn Optimizer, step_size: u64, gamma: f64) -> Result<StepLR> {
        if step_size == 0 {
            return Err(Error::Optim("StepLR: step_size must be positive".into()));
        }
        Ok(StepLR {
            s: Sched::start(opt, |b| b)?,
            step_size,
            gamma,
        })
    }
    fn at(&self, base: f64, e: u64) -> f64 {
        base * self.gamma.powi((e / self.step_size) as i32)
    }
}
sched_state!(StepLR);

/// `lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2`.
#[derive(Debug, Clone)]
pub struct CosineAnnealingLR {
    s: Sched,
    t_max: u64,
    eta_min: f64,
}

impl CosineAnnealingLR {
    /// Anneals from the base lr to `eta_min` over `t_max` epochs.
    pub fn new(opt: &mut dyn Optimizer, t_max: u64, eta_min: f64) -> Result<CosineAnnealingLR> {
        if t_max == 0 {
            return Err(Error::Optim(
                "CosineAnnealingLR: T_max must be positive".into(),
            ));
        }
        Ok(CosineAnnealingLR {
            s: Sched::start(opt, |b| b)?,
            t_max,
            eta_min,
        })
    }
    fn at(&self, base: f64, e: u64) -> f64 {
        let x = std::f64::consts::PI * e as f64 / self.t_max as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + x.cos()) / 2.0
    }
}
sched_state!(CosineAnnealingLR);

/// Linear warm-up: `lr = base * (start + (end - start) * min(epoch, total) / total)`.
#[derive(Debug, Clone)]
pub struct LinearLR {
    s: Sched,
    start: f64,
    end: f64,
    total: u64,
}

impl LinearLR {
    /// Scales the lr from `start_factor` to `end_factor` over `total_iters` epochs
    /// (PyTorch's defaults: 1/3, 1.0, 5).
    pub fn new(
        opt: &mut dyn Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    ) -> Result<LinearLR> {
        if !(start_factor > 0.0 && start_factor <= 1.0 && (0.0..=1.0).contains(&end_factor)) {
            return Err(Error::Optim(
                "LinearLR: factors must be in (0, 1] and [0, 1]".into(),
            ));
        }
        let total = total_iters.max(1);
        Ok(LinearLR {
            s: Sched::start(opt, |b| b * start_factor)?,
            start: start_factor,
            end: end_factor,
            total,
        })
    }
    fn at(&self, base: f64, e: u64) -> f64 {
        let f = self.start + (self.end - self.start) * e.min(self.total) as f64 / self.total as f64;
        base * f
    }
}
sched_state!(LinearLR);
