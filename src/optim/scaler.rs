//! Gradient scaling for mixed precision (PyTorch's `torch.amp.GradScaler`).
//!
//! The scale, the growth tracker and `found_inf` live on the parameters' device; `step`
//! checks the grads for inf/NaN (one launch per (device, dtype) on a GPU) and hands scale
//! and found_inf to the optimizer's fused step, which unscales in the same kernel as the
//! update and does nothing when found_inf is set. No host synchronisation.

use crate::base::{Error, Result};
use crate::optim::{loops, Optimizer};
use crate::tensor::{CpuStorage, DType, Device, Tensor};

/// A [`GradScaler`]'s state, with the field names of PyTorch's `scaler.state_dict()`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScalerState {
    /// The current scale.
    pub scale: f64,
    /// Factor applied after `growth_interval` steps without inf/NaN.
    pub growth_factor: f64,
    /// Factor applied after a step with inf/NaN.
    pub backoff_factor: f64,
    /// Clean steps before the scale grows.
    pub growth_interval: u32,
    /// Clean steps since the last change of the scale.
    #[serde(rename = "_growth_tracker")]
    pub growth_tracker: u32,
}

/// PyTorch's `GradScaler`: defaults init scale 65536, growth 2.0, backoff 0.5, interval
/// 2000.
#[derive(Debug)]
pub struct GradScaler {
    scale: Tensor,
    tracker: Tensor,
    found_inf: Tensor,
    growth: f32,
    backoff: f32,
    interval: u32,
    /// `unscale_` ran since the last `update`: `step` must not unscale again.
    unscaled: bool,
}

impl GradScaler {
    /// A scaler with PyTorch's defaults on `device`.
    pub fn new(device: Device) -> Result<GradScaler> {
        Self::with_options(device, 65536.0, 2.0, 0.5, 2000)
    }

    /// A scaler with its own init scale, growth and backoff factors and growth interval.
    pub fn with_options(
        device: Device,
        init_scale: f64,
        growth: f64,
        backoff: f64,
        interval: u32,
    ) -> Result<GradScaler> {
        if !(init_scale > 0.0 && growth > 1.0 && backoff > 0.0 && backoff < 1.0 && interval > 0) {
            return Err(crate::Error::Optim(format!(
                "GradScaler: need init_scale > 0, growth > 1, 0 < backoff < 1, interval > 0 \
                 (got {init_scale}, {growth}, {backoff}, {interval})"
            )));
        }
        Ok(GradScaler {
            scale: Tensor::full(&[], init_scale, DType::F32, device)?,
            tracker: Tensor::zeros(&[], DType::F32, device)?,
            found_inf: Tensor::zeros(&[], DType::F32, device)?,
            growth: growth as f32,
            backoff: backoff as f32,
            interval,
            unscaled: false,
        })
    }

    /// The current scale (a 0-d f32 tensor on the device; multiply the loss by it before
    /// backward).
    pub fn scale_tensor(&self) -> &Tensor {
        &self.scale
    }

    /// `loss * scale` (PyTorch's `scaler.scale(loss)`): the loss in the scale's dtype
    /// (f32) times the current scale, differentiable, so `scale(&loss)?.backward()`
    /// leaves scaled gradients for [`Self::step`] to unscale. No host synchronisation.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        loss.cast(self.scale.dtype())?.mul(&self.scale)
    }

    /// The scale, the growth tracker and the options (reads the device: synchronises).
    pub fn state_dict(&self) -> Result<ScalerState> {
        Ok(ScalerState {
            scale: self.scale.item()?,
            growth_factor: f64::from(self.growth),
            backoff_factor: f64::from(self.backoff),
            growth_interval: self.interval,
            growth_tracker: self.tracker.item()? as u32,
        })
    }

    /// A scaler on `device` in a saved [`Self::state_dict`] state (checked like
    /// [`Self::with_options`]).
    pub fn from_state(device: Device, s: &ScalerState) -> Result<GradScaler> {
        let scaler = Self::with_options(
            device,
            s.scale,
            s.growth_factor,
            s.backoff_factor,
            s.growth_interval,
        )?;
        crate::tensor::prim::fill_(&scaler.tracker, f64::from(s.growth_tracker))?;
        Ok(scaler)
    }

    /// Restores a [`Self::state_dict`]; a bad state is an error that leaves the scaler
    /// unchanged.
    pub fn load_state_dict(&mut self, s: &ScalerState) -> Result<()> {
        *self = Self::from_state(self.scale.device(), s)?;
        Ok(())
    }

    /// Whether the last `step` found an inf or NaN (reads the device: synchronises).
    pub fn found_inf(&self) -> Result<bool> {
        Ok(self.found_inf.item()? != 0.0)
    }

    /// Unscales the optimizer's grads in place (PyTorch's `scaler.unscale_(optimizer)`):
    /// each grad times `1 / scale` and `found_inf` set when one is infinite or NaN, one
    /// launch per (device, dtype) on a GPU, no synchronisation. Call it before clipping
    /// (`clip_grad_norm_`) so that the clip sees the true grads; the next [`Self::step`]
    /// then skips its own unscaling. A second call before [`Self::update`] is an error
    /// (the grads would be divided twice).
    pub fn unscale_(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if self.unscaled {
            return Err(Error::Optim(
                "GradScaler: unscale_ has already been called since the last update".into(),
            ));
        }
        let device = self.found_inf.device();
        let grads = self.clear_found_inf(opt)?;
        if device == Device::Cpu {
            self.check_cpu_grads(&grads)?;
            let inv = f64::from((1.0 / self.scale.item()?) as f32);
            for g in &grads {
                crate::optim::clip_cpu::apply(g, crate::optim::clip_cpu::ElemOp::Scale(inv))?;
            }
        } else {
            #[cfg(gpu)]
            crate::optim::clip::gpu_unscale(&grads, &self.scale, &self.found_inf)?;
            #[cfg(not(gpu))]
            return Err(crate::backend::not_built(device));
        }
        self.unscaled = true;
        Ok(())
    }

    /// Checks the grads, then steps the optimizer with the grads unscaled in its kernel
    /// (skipped entirely when a grad is not finite). After [`Self::unscale_`] it only
    /// steps (or skips on the `found_inf` that found).
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if self.unscaled {
            return opt.step_scaled(None, Some(&self.found_inf));
        }
        let device = self.found_inf.device();
        let grads = self.clear_found_inf(opt)?;
        if device == Device::Cpu {
            self.check_cpu_grads(&grads)?;
        } else {
            #[cfg(gpu)]
            crate::optim::launch::check_finite(opt.core_mut(), &self.found_inf)?;
            #[cfg(not(gpu))]
            return Err(crate::backend::not_built(device));
        }
        opt.step_scaled(Some(&self.scale), Some(&self.found_inf))
    }

    /// Zeroes `found_inf`; the grads of the optimizer's params on the scaler's device.
    fn clear_found_inf(&self, opt: &dyn Optimizer) -> Result<Vec<Tensor>> {
        let device = self.found_inf.device();
        crate::optim::zero::zero_tensors(
            device,
            std::slice::from_ref(&self.found_inf),
            Default::default(),
        )?;
        Ok(opt
            .core()
            .params()
            .iter()
            .filter(|p| p.device() == device)
            .filter_map(|p| p.grad())
            .collect())
    }

    /// Sets `found_inf` when a CPU grad holds an infinity or a NaN.
    fn check_cpu_grads(&self, grads: &[Tensor]) -> Result<()> {
        for g in grads {
            if any_non_finite(g)? {
                return crate::tensor::prim::fill_(&self.found_inf, 1.0);
            }
        }
        Ok(())
    }

    /// Updates the scale after a step: backoff on inf/NaN, growth after `interval` clean
    /// steps.
    pub fn update(&mut self) -> Result<()> {
        self.unscaled = false;
        if self.scale.device() == Device::Cpu {
            let (mut s, mut t) = (self.scale.item()? as f32, self.tracker.item()? as f32);
            if self.found_inf.item()? != 0.0 {
                s *= self.backoff;
                t = 0.0;
            } else {
                t += 1.0;
                if t >= self.interval as f32 {
                    s *= self.growth;
                    t = 0.0;
                }
            }
            crate::tensor::prim::fill_(&self.scale, f64::from(s))?;
            return crate::tensor::prim::fill_(&self.tracker, f64::from(t));
        }
        #[cfg(gpu)]
        return crate::optim::launch::update_scale(
            [&self.scale, &self.tracker, &self.found_inf],
            self.growth,
            self.backoff,
            self.interval,
        );
        #[cfg(not(gpu))]
        Err(crate::backend::not_built(self.scale.device()))
    }
}

/// Whether a CPU gradient holds an infinity or a NaN (any view: a strided grad is read
/// through its layout, never past what it owns).
fn any_non_finite(g: &Tensor) -> Result<bool> {
    let g = if g.is_contiguous() {
        g.clone()
    } else {
        crate::tensor::prim::contiguous(g)?
    };
    let Some(guard) = g.storage().read() else {
        return Err(Error::Optim(
            "unscale: a CPU grad without host storage".into(),
        ));
    };
    let (o, n) = (g.layout().offset(), g.numel());
    Ok(match &*guard {
        CpuStorage::F16(v) => loops::any_non_finite(&v[o..o + n]),
        CpuStorage::BF16(v) => loops::any_non_finite(&v[o..o + n]),
        CpuStorage::F32(v) => loops::any_non_finite(&v[o..o + n]),
        CpuStorage::F64(v) => loops::any_non_finite(&v[o..o + n]),
        CpuStorage::I64(_) => false,
    })
}
