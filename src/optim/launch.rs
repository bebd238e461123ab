//! The GPU side of `zero_grad` and `step`: builds the multi-tensor tables of
//! [`crate::optim::multi_tensor`] and launches `kernels/foreach.cu` / `kernels/optim.cu`.
//!
//! No host synchronisation: step counts live on the device (the kernels compute the bias
//! corrections from them), and a device table is only uploaded (host-to-device, no sync)
//! when the set of pointers changes.

use std::collections::HashMap;

use crate::backend::gpu::{self, kernels::k, KernelArgs, LaunchConfig};
use crate::base::{Error, Result};
use crate::optim::config::Hyper;
use crate::optim::core::OptimCore;
use crate::optim::multi_tensor::{DeviceTable, MtTensor, OptArgs, Phase, FLAG_FIRST};
use crate::optim::{Impl, ZeroMode};
use crate::tensor::{DType, Device, Tensor};

/// `(device, dtype, param group, implementation)`.
type TableKey = (Device, DType, usize, Impl);

/// Device tables kept while the parameter set is unchanged, per (device, dtype, group,
/// implementation).
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    tables: HashMap<TableKey, (DeviceTable, Option<Tensor>)>,
}

impl PlanCache {
    /// Forgets every cached table.
    pub fn invalidate(&mut self) {
        self.tables.clear();
    }
}

/// Zeroes the grads of one (device, dtype) group.
pub(crate) fn zero_group(device: Device, ts: &[Tensor], mode: ZeroMode) -> Result<()> {
    let dev = gpu::get(device)?;
    let mut ranges = Vec::with_capacity(ts.len());
    for t in ts {
        if !t.is_contiguous() {
            return Err(Error::Optim(
                "zero_grad on a GPU needs contiguous grads".into(),
            ));
        }
        ranges.push((
            t.device_ptr()?,
            (t.numel() * t.dtype().size_in_bytes()) as u64,
        ));
    }
    match mode {
        ZeroMode::MultiTensor => crate::optim::multi_tensor::launch_zero(&dev, &ranges),
        ZeroMode::PerTensor => ranges
            .iter()
            .try_for_each(|&(p, b)| dev.memset_zero(p, b as usize)),
    }
}

fn ptr(t: Option<&Tensor>) -> Result<u64> {
    t.map_or(Ok(0), |t| t.device_ptr())
}

/// The kernel arguments of a group.
pub(crate) fn opt_args(h: &Hyper, phase: Phase) -> OptArgs {
    let mut a = OptArgs {
        phase: phase as i32,
        ..Default::default()
    };
    match h {
        Hyper::Sgd(c) => {
            a.lr = c.lr;
            a.momentum = c.momentum;
            a.dampening = c.dampening;
            a.weight_decay = c.weight_decay;
            a.nesterov = c.nesterov as i32;
            a.maximize = c.maximize as i32;
            a.has_momentum = (c.momentum != 0.0) as i32;
        }
        Hyper::Adam { cfg, decoupled } => {
            a.kind = 1;
            a.lr = cfg.lr;
            a.beta1 = cfg.betas.0;
            a.beta2 = cfg.betas.1;
            a.eps = cfg.eps;
            a.weight_decay = cfg.weight_decay;
            a.amsgrad = cfg.amsgrad as i32;
            a.maximize = cfg.maximize as i32;
            a.decoupled = *decoupled as i32;
        }
    }
    a
}

/// The elementary ops of the foreach form, in order.
fn foreach_phases(h: &Hyper, scaled: bool) -> Vec<Phase> {
    let _ = scaled;
    let mut v = Vec::new();
    match h {
        Hyper::Sgd(c) => {
            v.push(Phase::Load);
            if c.maximize {
                v.push(Phase::Neg);
            }
            if c.weight_decay != 0.0 {
                v.push(Phase::Wd);
            }
            if c.momentum != 0.0 {
                v.push(Phase::Mom);
                v.push(if c.nesterov {
                    Phase::Nest
                } else {
                    Phase::CopyB
                });
            }
            v.push(Phase::SgdP);
        }
        Hyper::Adam { cfg, decoupled } => {
            v.push(Phase::Step);
            v.push(Phase::Load);
            if cfg.maximize {
                v.push(Phase::Neg);
            }
            if cfg.weight_decay != 0.0 {
                v.push(if *decoupled { Phase::Decay } else { Phase::Wd });
            }
            v.extend([Phase::M, Phase::V]);
            if cfg.amsgrad {
                v.push(Phase::VMax);
            }
            v.extend([Phase::Den, Phase::AdamP]);
        }
    }
    v
}

/// Steps the params of one (device, dtype): one table per param group.
pub(crate) fn step_group(
    core: &mut OptimCore,
    device: Device,
    dtype: DType,
    items: &[(usize, usize, Tensor)],
    scale: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> Result<()> {
    let dev = gpu::get(device)?;
    let imp = core.imp;
    let (sp, fp) = (ptr(scale)?, ptr(found_inf)?);
    let mut groups: Vec<usize> = items.iter().map(|i| i.0).collect();
    groups.dedup();
    for gi in groups {
        let hyper = core.groups[gi].hyper;
        let mut host = Vec::new();
        for (_, pi, grad) in items.iter().filter(|i| i.0 == gi) {
            let p = &core.params[*pi];
            let st = core.state[*pi].as_ref();
            let buf = |k: usize| st.and_then(|s| s.buffers.get(k)).map(|b| &b.1);
            host.push(MtTensor {
                p: p.device_ptr()?,
                g: grad.device_ptr()?,
                b0: ptr(buf(0))?,
                b1: ptr(buf(1))?,
                b2: ptr(buf(2))?,
                master: ptr(core.masters[*pi].as_ref())?,
                step: ptr(st.and_then(|s| s.step.as_ref()))?,
                numel: p.numel() as u64,
                flags: if matches!(hyper, Hyper::Sgd(_)) && st.is_some_and(|s| !s.momentum_started)
                {
                    FLAG_FIRST
                } else {
                    0
                },
                ..Default::default()
            });
        }
        let key = (device, dtype, gi, imp);
        let cached = core
            .gpu_cache
            .tables
            .get(&key)
            .is_some_and(|(t, _)| same_pointers(&t.host, &host));
        if !cached {
            // The foreach form's scratch: one compute-type buffer for the whole group.
            let scratch = if imp == Impl::Foreach {
                let cdt = if dtype == DType::F64 {
                    DType::F64
                } else {
                    DType::F32
                };
                let total: usize = host.iter().map(|e| e.numel as usize).sum();
                // Three compute-type slots per element (see OPT_* in kernels/optim.cu).
                let s = Tensor::zeros(&[3 * total], cdt, device)?;
                let base = s.device_ptr()?;
                let mut off = 0u64;
                for e in host.iter_mut() {
                    e.tmp = base + off * cdt.size_in_bytes() as u64;
                    off += 3 * e.numel;
                }
                Some(s)
            } else {
                None
            };
            let table = DeviceTable::upload(&dev, host)?;
            core.gpu_cache.tables.insert(key, (table, scratch));
        }
        let (table, _) = &core.gpu_cache.tables[&key];
        let n = table.host.len();
        match imp {
            Impl::Fused => table.launch(&dev, dtype, 0, n, opt_args(&hyper, Phase::All), sp, fp)?,
            Impl::ForLoop => {
                for i in 0..n {
                    table.launch(&dev, dtype, i, 1, opt_args(&hyper, Phase::All), sp, fp)?;
                }
            }
            Impl::Foreach => {
                for ph in foreach_phases(&hyper, scale.is_some()) {
                    table.launch(&dev, dtype, 0, n, opt_args(&hyper, ph), sp, fp)?;
                }
            }
        }
        for (_, pi, grad) in items.iter().filter(|i| i.0 == gi) {
            if let Some(s) = core.state[*pi].as_mut() {
                s.momentum_started = true;
            }
            core.params[*pi].storage().bump_version();
            if scale.is_some() {
                grad.storage().bump_version();
            }
        }
    }
    Ok(())
}

/// Whether two tables address the same memory with the same flags (the scratch pointers
/// and chunk numbering are derived).
fn same_pointers(a: &[MtTensor], b: &[MtTensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (
                x.p, x.g, x.b0, x.b1, x.b2, x.master, x.step, x.numel, x.flags,
            ) == (
                y.p, y.g, y.b0, y.b1, y.b2, y.master, y.step, y.numel, y.flags,
            )
        })
}

/// Sets `found_inf` (a zeroed one-element f32 device tensor) to 1 when a grad of
/// `params` on its device is infinite or NaN: one launch per (device, dtype) group.
pub(crate) fn check_finite(params: &[Tensor], found_inf: &Tensor) -> Result<()> {
    let device = found_inf.device();
    let dev = gpu::get(device)?;
    let mut per: HashMap<DType, Vec<MtTensor>> = HashMap::new();
    for p in params.iter().filter(|p| p.device() == device) {
        if let Some(g) = p.grad() {
            per.entry(g.dtype()).or_default().push(MtTensor {
                g: g.device_ptr()?,
                numel: g.numel() as u64,
                ..Default::default()
            });
        }
    }
    for (dtype, host) in per {
        let t = DeviceTable::upload(&dev, host)?;
        t.launch_check_finite(&dev, dtype, found_inf.device_ptr()?)?;
    }
    Ok(())
}

/// The GradScaler's update on the device (PyTorch's `_amp_update_scale_`): backoff after
/// a step with inf/NaN, growth after `interval` clean steps. `[scale, tracker,
/// found_inf]` are one-element f32 tensors on one device. No host synchronisation.
pub(crate) fn update_scale(
    [scale, tracker, found_inf]: [&Tensor; 3],
    growth: f32,
    backoff: f32,
    interval: u32,
) -> Result<()> {
    let dev = gpu::get(scale.device())?;
    let mut a = KernelArgs::new();
    a.push(scale.device_ptr()?)
        .push(tracker.device_ptr()?)
        .push(found_inf.device_ptr()?)
        .push(growth)
        .push(backoff)
        .push(interval as f32);
    dev.launch(k::AMP_UPDATE_SCALE, LaunchConfig::linear(1, 32), &mut a)
}
