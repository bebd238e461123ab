//! The GPU side of `zero_grad` and `step`: builds the multi-tensor tables of
//! [`crate::optim::multi_tensor`] and launches `kernels/foreach.cu` / `kernels/optim.cu`.
//!
//! No host synchronisation, and capturable: step counts live on the device (the kernels
//! compute the bias corrections from them), so does each group's learning rate (written
//! by `set_lr`, read by the kernels) and whether an SGD momentum buffer is new (a bit of
//! the table's per-tensor counters); a table is uploaded (host-to-device, no sync) only
//! when the set of pointers changes, and the GradScaler's finite check keeps its table
//! too. A table made during a graph capture (grads allocated by the captured backward
//! are new) is written at once into memory the graph holds, not recorded. The optimizer
//! state and the learning rates on the device are made by an eager warm-up step before
//! a capture; inside one, making them is refused.

use std::collections::HashMap;

use crate::backend::gpu::{self, kernels::k, GpuDevice, KernelArgs, LaunchConfig};
use crate::base::{Error, Result};
use crate::optim::config::Hyper;
use crate::optim::core::OptimCore;
use crate::optim::multi_tensor::{DeviceTable, MtTensor, OptArgs, Phase, FLAG_FIRST};
use crate::optim::{Impl, ZeroMode};
use crate::tensor::{DType, Device, Tensor};

/// `(device, dtype, param group, implementation)`.
type TableKey = (Device, DType, usize, Impl);

/// Tables kept per key: the grads `zero_grad(set_to_none=True)` frees come back from the
/// caching allocator in a few recurring arrangements, so the last few tables cover a
/// steady loop and a step uploads none.
const TABLES_KEPT: usize = 4;

/// The last few tables of one key, most recently used first.
#[derive(Debug)]
struct Recent(Vec<DeviceTable>);

impl Default for Recent {
    fn default() -> Self {
        Recent(Vec::with_capacity(TABLES_KEPT))
    }
}

impl Recent {
    /// The table whose entries address the memory of `host` (moved to the front), or a
    /// new one uploaded from it.
    fn get(
        &mut self,
        dev: &GpuDevice,
        host: Vec<MtTensor>,
        with_flags: bool,
    ) -> Result<&DeviceTable> {
        match self
            .0
            .iter()
            .position(|t| same_pointers(&t.host, &host, with_flags))
        {
            Some(i) => self.0[..=i].rotate_right(1),
            None => {
                self.0.truncate(TABLES_KEPT - 1);
                self.0.insert(0, DeviceTable::upload(dev, host)?);
            }
        }
        Ok(&self.0[0])
    }
}

/// Device tables kept while the parameter set is unchanged, per (device, dtype, group,
/// implementation), with the foreach form's scratch; each group's learning rate on each
/// device; the tables of the finite check, per (device, dtype).
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    tables: HashMap<TableKey, Recent>,
    scratch: HashMap<TableKey, Tensor>,
    lrs: HashMap<(Device, usize), Tensor>,
    finite: HashMap<(Device, DType), Recent>,
}

impl PlanCache {
    /// Forgets every cached table (the learning rates stay: they follow `set_lr`).
    pub fn invalidate(&mut self) {
        self.tables.clear();
        self.scratch.clear();
        self.finite.clear();
    }

    /// Writes `lr` into group `group`'s device learning rates (an upload each; refused
    /// inside a graph capture, where nothing host-side can change the step).
    pub(crate) fn set_lr(&self, group: usize, lr: f64) -> Result<()> {
        for ((_, g), t) in &self.lrs {
            if *g == group {
                crate::tensor::prim::write_host(t, &crate::tensor::CpuStorage::F64(vec![lr]))?;
            }
        }
        Ok(())
    }
}

/// The error of a first upload inside a graph capture.
fn needs_warm_up(what: &str) -> Error {
    Error::Optim(format!(
        "{what} is not on the device yet and cannot be uploaded inside a graph capture: \
         run the step eagerly once before capturing it"
    ))
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
        if imp == Impl::Foreach {
            // The foreach form's scratch: three compute-type slots per element (see
            // OPT_* in kernels/optim.cu), one buffer for the whole group.
            let cdt = if dtype == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            let total: usize = host.iter().map(|e| e.numel as usize).sum();
            let cache = &mut core.gpu_cache;
            if cache
                .scratch
                .get(&key)
                .is_none_or(|s| s.numel() != 3 * total)
            {
                // Tables of the old scratch go with it.
                cache.tables.remove(&key);
                cache
                    .scratch
                    .insert(key, Tensor::zeros(&[3 * total], cdt, device)?);
            }
            let base = cache.scratch[&key].device_ptr()?;
            let mut off = 0u64;
            for e in host.iter_mut() {
                e.tmp = base + off * cdt.size_in_bytes() as u64;
                off += 3 * e.numel;
            }
        }
        if core.capturable && !core.gpu_cache.lrs.contains_key(&(device, gi)) {
            if dev.capturing() {
                return Err(needs_warm_up("the learning rate"));
            }
            let lr = Tensor::from_f64s(&[hyper.lr()], &[], DType::F64, device)?;
            core.gpu_cache.lrs.insert((device, gi), lr);
        }
        let args = |phase| -> Result<OptArgs> {
            let mut a = opt_args(&hyper, phase);
            if core.capturable {
                a.lr_ptr = core.gpu_cache.lrs[&(device, gi)].device_ptr()?;
            } else {
                // Frozen into a captured launch: a replay checks it did not change.
                let what = format!("the learning rate of param group {gi}");
                dev.freeze(what, a.lr, &core.lr_sources[gi]);
            }
            Ok(a)
        };
        let table =
            core.gpu_cache
                .tables
                .entry(key)
                .or_default()
                .get(&dev, host, imp == Impl::Foreach)?;
        let n = table.host.len();
        match imp {
            Impl::Fused => table.launch(&dev, dtype, 0, n, args(Phase::All)?, sp, fp)?,
            Impl::ForLoop => {
                for i in 0..n {
                    table.launch(&dev, dtype, i, 1, args(Phase::All)?, sp, fp)?;
                }
            }
            Impl::Foreach => {
                for ph in foreach_phases(&hyper, scale.is_some()) {
                    table.launch(&dev, dtype, 0, n, args(ph)?, sp, fp)?;
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

/// Whether two tables address the same memory (the scratch pointers and chunk
/// numbering are derived). The fused kernel itself notes that a new momentum buffer has
/// started (`OPT_STARTED`), so its table keeps the first-step flags; the foreach form
/// does not, and its table follows them (`with_flags`).
fn same_pointers(a: &[MtTensor], b: &[MtTensor], with_flags: bool) -> bool {
    let key = |x: &MtTensor| (x.p, x.g, x.b0, x.b1, x.b2, x.master, x.step, x.numel);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| key(x) == key(y) && (!with_flags || x.flags == y.flags))
}

/// Sets `found_inf` (a zeroed one-element f32 device tensor) to 1 when a grad of the
/// optimizer's params on its device is infinite or NaN: one launch per (device, dtype)
/// group, over a table kept while the grads stay where they are. A grad that is not
/// contiguous is an error (the kernel reads `numel` elements from its start).
pub(crate) fn check_finite(core: &mut OptimCore, found_inf: &Tensor) -> Result<()> {
    let device = found_inf.device();
    let dev = gpu::get(device)?;
    let mut per: HashMap<DType, Vec<MtTensor>> = HashMap::new();
    for (i, p) in core.params.iter().enumerate() {
        if let Some(g) = p.grad().filter(|_| p.device() == device) {
            if !g.is_contiguous() {
                return Err(Error::Optim(format!(
                    "param {i}: the finite check needs a contiguous grad, not a view of \
                     shape {:?} and strides {:?}",
                    g.shape(),
                    g.layout().strides()
                )));
            }
            per.entry(g.dtype()).or_default().push(MtTensor {
                g: g.device_ptr()?,
                numel: g.numel() as u64,
                ..Default::default()
            });
        }
    }
    for (dtype, host) in per {
        let table = core.gpu_cache.finite.entry((device, dtype)).or_default();
        table
            .get(&dev, host, false)?
            .launch_check_finite(&dev, dtype, found_inf.device_ptr()?)?;
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
