//! In-place operations: `fill_`, `zero_`, `add_`, `copy_` (PyTorch's names), and the
//! address of a tensor's data.
//!
//! Each bumps the storage's version, so a tensor saved for backward and changed in place
//! afterwards makes that backward an error instead of a wrong gradient. As in PyTorch, a
//! leaf that requires grad can be changed in place only with grad mode off
//! ([`crate::autograd::no_grad`]); in-place changes of tensors that are part of a
//! recorded graph (non-leaves that require grad) are refused.

use crate::base::{Error, Result};
use crate::tensor::grad_mode::is_grad_enabled;
use crate::tensor::{prim, Tensor};

impl Tensor {
    /// An error when an in-place op may not change this tensor (see the module docs).
    fn check_inplace(&self, op: &'static str) -> Result<()> {
        if self.requires_grad() && (is_grad_enabled() || !self.is_leaf()) {
            return Err(Error::Autograd(format!(
                "{op}: a {} that requires grad cannot be changed in place{}",
                if self.is_leaf() {
                    "leaf"
                } else {
                    "tensor of the graph"
                },
                if self.is_leaf() {
                    " outside no_grad()"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// Sets every element to `value` (rounded once to the dtype).
    pub fn fill_(&self, value: f64) -> Result<()> {
        self.check_inplace("fill_")?;
        prim::fill_(self, value)
    }

    /// Sets every element to zero.
    pub fn zero_(&self) -> Result<()> {
        self.check_inplace("zero_")?;
        prim::zero_(self)
    }

    /// `self += alpha * other` (same shape and dtype; `self` contiguous).
    pub fn add_(&self, other: &Tensor, alpha: f64) -> Result<()> {
        self.check_inplace("add_")?;
        prim::add_(self, other, alpha)
    }

    /// `self = src` elementwise (same shape and dtype; `self` contiguous). `src` may be
    /// on another device: then its elements go through host memory (one upload into a
    /// GPU `self`, no allocation there).
    pub fn copy_(&self, src: &Tensor) -> Result<()> {
        self.check_inplace("copy_")?;
        if src.device() == self.device() {
            return prim::copy_(self, src);
        }
        prim::write_host(self, &src.to_cpu_storage()?)
    }

    /// The address of the view's first element (PyTorch's `data_ptr`): a device address
    /// on a GPU, a host address on the CPU. For identity checks and interop; reading or
    /// writing through it is the caller's `unsafe` business.
    pub fn data_ptr(&self) -> Result<usize> {
        if self.device().is_gpu() {
            return Ok(self.device_ptr()? as usize);
        }
        let guard = self
            .storage()
            .read()
            .ok_or_else(|| Error::invalid("data_ptr", "a CPU tensor without host storage"))?;
        let base = guard.as_bytes().as_ptr() as usize;
        Ok(base + self.layout().offset() * self.dtype().size_in_bytes())
    }
}
