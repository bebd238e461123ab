//! Parameter-free layers: `Dropout`, `Flatten`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::base::{Error, Result};
use crate::nn::module::Module;
use crate::tensor::Tensor;

/// Dropout with probability `p` in training mode, the identity in evaluation mode.
///
/// Each forward in training draws a new mask from the counter-based generator, keyed by
/// the layer's seed and a call counter, so runs are reproducible on every device.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    seed: u64,
    calls: AtomicU64,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1]` and a seed for its masks.
    pub fn new(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("p = {p} outside [0, 1]")));
        }
        Ok(Dropout {
            p,
            seed,
            calls: AtomicU64::new(0),
            training: true,
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }
}

impl Module for Dropout {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        if !self.training {
            return Ok(input.clone());
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let seed = self
            .seed
            .wrapping_add(n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        crate::ops::dropout(input, self.p, true, seed)
    }

    fn is_training(&self) -> bool {
        self.training
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Merges dims `start_dim..=end_dim` (PyTorch's defaults: 1 and -1).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    /// First dim merged.
    pub start_dim: isize,
    /// Last dim merged (inclusive; negative counts from the end).
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            end_dim: -1,
        }
    }
}

impl Flatten {
    /// `Flatten(start_dim=1, end_dim=-1)`.
    pub fn new() -> Flatten {
        Flatten::default()
    }

    /// Flatten over the given dims.
    pub fn with_dims(start_dim: isize, end_dim: isize) -> Flatten {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        input.flatten(self.start_dim, self.end_dim)
    }
}
