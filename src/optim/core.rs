//! The engine shared by every optimizer: parameter groups, per-parameter state, and the
//! dispatch of `zero_grad` and `step` to the CPU loops or the GPU kernels.

use std::collections::BTreeMap;

use crate::base::{Error, Result};
use crate::optim::arena::GradArena;
use crate::optim::config::Hyper;
#[cfg(gpu)]
use crate::optim::launch;
use crate::optim::loops::{
    self, AdamScalars, Elem, GradLane, Job, Lanes, Real, SgdScalars, Update,
};
use crate::optim::{zero, Impl, ZeroMode};
use crate::tensor::{CpuStorage, DType, Device, Tensor};

/// One parameter group: its parameters and their hyperparameters.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// The parameters, in order.
    pub params: Vec<Tensor>,
    /// Their indices in the optimizer's parameter order (PyTorch's state_dict layout).
    pub indices: Vec<usize>,
    /// The hyperparameters.
    pub hyper: Hyper,
}

/// The state of one parameter.
#[derive(Clone, Debug)]
pub(crate) struct ParamState {
    /// Number of updates, a 0-d f32 tensor on the parameter's device (Adam, AdamW).
    pub step: Option<Tensor>,
    /// Named buffers, in [`Hyper::buffer_names`] order.
    pub buffers: Vec<(&'static str, Tensor)>,
    /// SGD: whether the momentum buffer has taken a first gradient.
    pub momentum_started: bool,
}

/// The engine behind [`crate::optim::Optimizer`].
pub struct OptimCore {
    pub(crate) params: Vec<Tensor>,
    pub(crate) groups: Vec<ParamGroup>,
    pub(crate) state: Vec<Option<ParamState>>,
    /// f32 master weights of f16 and bf16 parameters, when enabled.
    pub(crate) masters: Vec<Option<Tensor>>,
    pub(crate) master_weights: bool,
    pub(crate) imp: Impl,
    pub(crate) zero_mode: ZeroMode,
    /// GPU steps read each group's learning rate from the device (see `set_capturable`).
    pub(crate) capturable: bool,
    /// Each group's learning rate as f64 bits, for the check of a replayed graph that
    /// froze it (a step that is not capturable).
    pub(crate) lr_sources: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    pub(crate) arena: Option<GradArena>,
    /// Device tables of the GPU step, kept while the parameter set is unchanged.
    #[cfg(gpu)]
    pub(crate) gpu_cache: launch::PlanCache,
}

impl std::fmt::Debug for OptimCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OptimCore({} params, {} groups, {:?})",
            self.params.len(),
            self.groups.len(),
            self.imp
        )
    }
}

/// What a scaled step receives: `(grad_scale, found_inf)`.
/// Params of one (device, dtype) with a grad: `(group, param index, grad)`.
pub(crate) type Live = Vec<(usize, usize, Tensor)>;

/// What a scaled step receives.
pub(crate) type Amp<'a> = Option<(Option<&'a Tensor>, Option<&'a Tensor>)>;

impl OptimCore {
    /// An engine over `groups`, validated like PyTorch (no params, a param in two groups,
    /// invalid hyperparameters, non-float or non-leaf params are errors).
    pub fn new(groups: Vec<(Vec<Tensor>, Hyper)>) -> Result<OptimCore> {
        let mut core = OptimCore {
            params: Vec::new(),
            groups: Vec::new(),
            state: Vec::new(),
            masters: Vec::new(),
            master_weights: false,
            imp: Impl::default(),
            zero_mode: ZeroMode::default(),
            capturable: true,
            lr_sources: Vec::new(),
            arena: None,
            #[cfg(gpu)]
            gpu_cache: launch::PlanCache::default(),
        };
        if groups.is_empty() {
            return Err(Error::Optim("optimizer got an empty parameter list".into()));
        }
        for (params, hyper) in groups {
            core.add_param_group(params, hyper)?;
        }
        Ok(core)
    }

    /// Adds a group; validates it first and changes nothing on error.
    pub fn add_param_group(&mut self, params: Vec<Tensor>, hyper: Hyper) -> Result<()> {
        hyper.validate()?;
        if params.is_empty() {
            return Err(Error::Optim("optimizer got an empty parameter list".into()));
        }
        if let Some(g) = self.groups.first() {
            if !g.hyper.same_kind(&hyper) {
                return Err(Error::Optim(
                    "a param group's hyperparameters are of another optimizer".into(),
                ));
            }
        }
        for (i, p) in params.iter().enumerate() {
            if !p.dtype().is_float() {
                return Err(Error::Optim(format!(
                    "can't optimize a tensor of dtype {}",
                    p.dtype()
                )));
            }
            if !p.is_leaf() {
                return Err(Error::Optim("can't optimize a non-leaf Tensor".into()));
            }
            if self
                .params
                .iter()
                .chain(&params[..i])
                .any(|q| q.same_tensor(p))
            {
                return Err(Error::Optim(
                    "some parameters appear in more than one parameter group".into(),
                ));
            }
        }
        let start = self.params.len();
        let indices: Vec<usize> = (start..start + params.len()).collect();
        self.params.extend(params.iter().cloned());
        self.state.extend(params.iter().map(|_| None));
        self.masters.extend(params.iter().map(|_| None));
        self.lr_sources
            .push(std::sync::Arc::new(hyper.lr().to_bits().into()));
        self.groups.push(ParamGroup {
            params,
            indices,
            hyper,
        });
        self.invalidate_plans();
        Ok(())
    }

    /// Forgets the cached GPU launch tables (the parameters or their state changed).
    pub(crate) fn invalidate_plans(&mut self) {
        #[cfg(gpu)]
        self.gpu_cache.invalidate();
    }

    /// The groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Every parameter, in state_dict order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    fn group(&self, g: usize) -> Result<&ParamGroup> {
        self.groups.get(g).ok_or_else(|| {
            Error::Optim(format!("no param group {g} ({} groups)", self.groups.len()))
        })
    }

    /// The learning rate of a group.
    pub fn lr(&self, group: usize) -> Result<f64> {
        Ok(self.group(group)?.hyper.lr())
    }

    /// Sets the learning rate of a group.
    /// On a GPU the group's device learning rate is written at once (an upload, no
    /// synchronisation), so the next step, or the next replay of a captured one, uses it.
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.group(group)?;
        let mut h = self.groups[group].hyper;
        h.set_lr(lr);
        h.validate()?;
        #[cfg(gpu)]
        self.gpu_cache.set_lr(group, lr)?;
        self.groups[group].hyper = h;
        self.lr_sources[group].store(lr.to_bits(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether GPU steps read the learning rate from the device (the default, and what a
    /// captured step needs to follow a scheduler: PyTorch's `capturable=True`, with no
    /// cost to eager steps) or take it by value in the launch (then a captured step holds
    /// the value it was captured with, and a replay after a change is refused).
    pub fn set_capturable(&mut self, capturable: bool) {
        self.capturable = capturable;
    }

    /// Chooses the step implementation.
    pub fn set_impl(&mut self, imp: Impl) {
        self.imp = imp;
    }

    /// Chooses the GPU zeroing mode.
    pub fn set_zero_mode(&mut self, mode: ZeroMode) {
        self.zero_mode = mode;
    }

    /// Keeps f32 master weights for f16 and bf16 parameters (created from the values on
    /// the next step; the parameter is then the rounded master after each step).
    pub fn set_master_weights(&mut self, on: bool) {
        self.master_weights = on;
        if !on {
            self.masters.iter_mut().for_each(|m| *m = None);
        }
        self.invalidate_plans();
    }

    /// Places the grads of every (device, dtype) group in one contiguous buffer (see
    /// [`GradArena`]); existing grads are copied in.
    pub fn enable_grad_arena(&mut self) -> Result<()> {
        self.arena = Some(GradArena::new(&self.params)?);
        self.invalidate_plans();
        Ok(())
    }

    /// The grad arena, when enabled.
    pub fn grad_arena(&self) -> Option<&GradArena> {
        self.arena.as_ref()
    }

    /// See [`crate::optim::Optimizer::zero_grad`].
    pub fn zero_grad(&mut self, set_to_none: bool) -> Result<()> {
        zero::zero_grad_params(
            &self.params,
            set_to_none,
            self.zero_mode,
            self.arena.as_ref(),
        )
    }

    /// One step; `amp` carries the scaler's `(grad_scale, found_inf)`.
    pub(crate) fn step(&mut self, amp: Amp<'_>) -> Result<()> {
        self.step_only(amp, None)
    }

    /// One step of the params whose indices are in `only` (all with `None`).
    pub(crate) fn step_only(&mut self, amp: Amp<'_>, only: Option<&[usize]>) -> Result<()> {
        let (scale, found_inf) = amp.unwrap_or((None, None));
        for t in [scale, found_inf].into_iter().flatten() {
            if t.numel() != 1 || t.dtype() != DType::F32 {
                return Err(Error::Optim(format!(
                    "grad_scale and found_inf must be one-element f32 tensors, got {:?} {}",
                    t.shape(),
                    t.dtype()
                )));
            }
        }
        // Every (group, param) with a grad, checked before anything changes.
        let mut live: Live = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for &pi in &g.indices {
                if only.is_some_and(|o| !o.contains(&pi)) {
                    continue;
                }
                let p = &self.params[pi];
                if let Some(grad) = p.grad() {
                    if !p.is_contiguous() || !grad.is_contiguous() {
                        return Err(Error::Optim(format!(
                            "param {pi}: step needs a contiguous param and grad"
                        )));
                    }
                    if p.shares_storage(&grad) {
                        return Err(Error::Optim(format!(
                            "param {pi}: the grad shares the param's storage"
                        )));
                    }
                    for t in [scale, found_inf].into_iter().flatten() {
                        if t.device() != p.device() {
                            return Err(Error::DeviceMismatch {
                                op: "step",
                                lhs: p.device(),
                                rhs: t.device(),
                            });
                        }
                    }
                    live.push((gi, pi, grad));
                }
            }
        }
        let any_cpu = live
            .iter()
            .any(|(_, pi, _)| self.params[*pi].device() == Device::Cpu);
        if any_cpu {
            if let Some(f) = found_inf.filter(|f| f.device() == Device::Cpu) {
                if f.item()? != 0.0 {
                    return Ok(());
                }
            }
        }
        for (gi, pi, _) in &live {
            self.ensure_state(*gi, *pi)?;
        }
        let scale_host = match scale.filter(|s| s.device() == Device::Cpu) {
            Some(s) => Some(s.item()?),
            None => None,
        };
        let mut gpu_items: BTreeMap<(Device, DType), Live> = BTreeMap::new();
        for (gi, pi, grad) in live {
            let p = self.params[pi].clone();
            if p.device() == Device::Cpu {
                self.cpu_step(gi, pi, &p, &grad, scale_host)?;
            } else {
                gpu_items
                    .entry((p.device(), p.dtype()))
                    .or_default()
                    .push((gi, pi, grad));
            }
        }
        #[cfg(gpu)]
        for ((device, dtype), items) in gpu_items {
            launch::step_group(self, device, dtype, &items, scale, found_inf)?;
        }
        // Without a GPU backend no tensor can be on a GPU device.
        #[cfg(not(gpu))]
        if let Some(&(device, _)) = gpu_items.keys().next() {
            return Err(crate::backend::not_built(device));
        }
        Ok(())
    }

    /// Creates the state of a parameter on its first step with a grad.
    /// The dtype of a param's state buffers: f32 beside the f32 master weights of an
    /// f16 or bf16 param (squared f16 gradients underflow in f16 moments; bf16 moments
    /// lose the small updates), else the param's own.
    pub(crate) fn state_dtype(&self, pi: usize) -> DType {
        match self.params[pi].dtype() {
            d if d.is_half() && self.master_weights => DType::F32,
            d => d,
        }
    }

    fn ensure_state(&mut self, gi: usize, pi: usize) -> Result<()> {
        let p = self.params[pi].clone();
        let hyper = self.groups[gi].hyper;
        let needs_master = self.master_weights && p.dtype().is_half() && self.masters[pi].is_none();
        let needs_state =
            self.state[pi].is_none() && (!hyper.buffer_names().is_empty() || hyper.has_step());
        if needs_master || needs_state {
            crate::backend::refuse_in_capture(
                p.device(),
                &format!("creating the optimizer state of param {pi}"),
            )?;
        }
        if needs_master {
            self.masters[pi] = Some(p.detach().to_dtype(DType::F32)?);
        }
        if !needs_state {
            return Ok(());
        }
        let mut buffers = Vec::new();
        for &name in hyper.buffer_names() {
            buffers.push((
                name,
                Tensor::zeros(p.shape(), self.state_dtype(pi), p.device())?,
            ));
        }
        let step = if hyper.has_step() {
            Some(Tensor::zeros(&[], DType::F32, p.device())?)
        } else {
            None
        };
        self.state[pi] = Some(ParamState {
            step,
            buffers,
            momentum_started: false,
        });
        Ok(())
    }

    fn cpu_step(
        &mut self,
        gi: usize,
        pi: usize,
        p: &Tensor,
        grad: &Tensor,
        scale: Option<f64>,
    ) -> Result<()> {
        let hyper = self.groups[gi].hyper;
        let imp = self.imp;
        let master = self.masters[pi].clone();
        let mut t = 0.0f64;
        let mut first = true;
        let mut bufs: Vec<Tensor> = Vec::new();
        if let Some(st) = self.state[pi].as_mut() {
            if let Some(step) = &st.step {
                t = f64::from(read_step(step)? + 1.0);
                write_step(step, t as f32)?;
            }
            first = !st.momentum_started;
            st.momentum_started = true;
            bufs = st.buffers.iter().map(|(_, b)| b.clone()).collect();
        }
        macro_rules! run {
            ($e:ty, $s:ty) => {
                cpu_update::<$e, $s>(
                    imp,
                    &scalars::<<$e as Elem>::R>(&hyper, t, first, scale),
                    p,
                    grad,
                    &bufs,
                    master.as_ref(),
                )
            };
        }
        match p.dtype() {
            DType::F16 if master.is_some() => run!(half::f16, f32),
            DType::F16 => run!(half::f16, half::f16),
            DType::BF16 if master.is_some() => run!(half::bf16, f32),
            DType::BF16 => run!(half::bf16, half::bf16),
            DType::F32 => run!(f32, f32),
            DType::F64 => run!(f64, f64),
            DType::I64 => Err(Error::Optim("can't optimize an i64 tensor".into())),
        }
    }
}

/// Reads a host step count.
pub(crate) fn read_step(step: &Tensor) -> Result<f32> {
    Ok(step.item()? as f32)
}

fn write_step(step: &Tensor, v: f32) -> Result<()> {
    let mut g = step.storage().write();
    match g.as_deref_mut() {
        Some(CpuStorage::F32(x)) if !x.is_empty() => {
            x[step.layout().offset()] = v;
            Ok(())
        }
        _ => Err(Error::Optim(
            "a CPU step count must be an f32 host tensor".into(),
        )),
    }
}

/// The f64 host scalars of one tensor's update, converted to the compute type. `t` is
/// the step number of this update (Adam), `first` whether SGD's momentum buffer is new.
pub(crate) fn scalars<R: Real>(h: &Hyper, t: f64, first: bool, grad_scale: Option<f64>) -> Job<R> {
    let update = match h {
        Hyper::Sgd(c) => Update::Sgd(SgdScalars {
            neg_lr: R::of(-c.lr),
            momentum: R::of(c.momentum),
            one_minus_dampening: R::of(1.0 - c.dampening),
            weight_decay: R::of(c.weight_decay),
            nesterov: c.nesterov,
            maximize: c.maximize,
            has_momentum: c.momentum != 0.0,
            first,
        }),
        Hyper::Adam { cfg: c, decoupled } => {
            let bc1 = 1.0 - c.betas.0.powf(t);
            let bc2 = 1.0 - c.betas.1.powf(t);
            Update::Adam(AdamScalars {
                weight_decay: R::of(c.weight_decay),
                decay: R::of(1.0 - c.lr * c.weight_decay),
                lerp_w: R::of(1.0 - c.betas.0),
                beta2: R::of(c.betas.1),
                one_minus_beta2: R::of(1.0 - c.betas.1),
                eps: R::of(c.eps),
                neg_step_size: R::of(-(c.lr / bc1)),
                bc2_sqrt: R::of(bc2.sqrt()),
                amsgrad: c.amsgrad,
                maximize: c.maximize,
                decoupled: *decoupled,
            })
        }
    };
    Job {
        update,
        grad_scale: grad_scale.map(R::of),
    }
}

/// Runs one tensor's update on the CPU with the chosen implementation.
fn cpu_update<E: Elem, S: Elem<R = E::R>>(
    imp: Impl,
    job: &Job<E::R>,
    p: &Tensor,
    grad: &Tensor,
    bufs: &[Tensor],
    master: Option<&Tensor>,
) -> Result<()> {
    let n = p.numel();
    // Every storage locked at once, in the global lock order.
    let scaled = job.grad_scale.is_some();
    let mut req: Vec<(&crate::base::StorageCell, bool)> =
        vec![(p.storage(), true), (grad.storage(), scaled)];
    req.extend(bufs.iter().map(|b| (&**b.storage(), true)));
    req.extend(master.map(|m| (&**m.storage(), true)));
    let mut guards = crate::base::lock_host(&req)?;
    fn view<'a, T: Elem>(
        g: &'a mut crate::base::HostGuard<'_>,
        off: usize,
        n: usize,
        what: &str,
    ) -> Result<&'a mut [T]> {
        g.get_mut()
            .and_then(|c| T::vec_mut(c))
            .and_then(|v| v.get_mut(off..off + n))
            .ok_or_else(|| Error::Optim(format!("{what}: wrong dtype or size")))
    }
    let (pg, rest) = guards.split_at_mut(1);
    let (gg, rest) = rest.split_at_mut(1);
    let (bg, mg) = rest.split_at_mut(bufs.len());
    let pl = view::<E>(&mut pg[0], p.layout().offset(), n, "param")?;
    let (goff, bad_grad) = (grad.layout().offset(), || {
        Error::Optim("grad: wrong dtype or size".into())
    });
    let gl = if scaled {
        GradLane::Write(view::<E>(&mut gg[0], goff, n, "grad")?)
    } else {
        let v = E::vec_ref(&gg[0]).and_then(|v| v.get(goff..goff + n));
        GradLane::Read(v.ok_or_else(bad_grad)?)
    };
    let mut bl: Vec<&mut [S]> = Vec::new();
    for (g, b) in bg.iter_mut().zip(bufs) {
        bl.push(view::<S>(g, b.layout().offset(), n, "state buffer")?);
    }
    let ml: &mut [E::R] = match (mg.first_mut(), master) {
        (Some(g), Some(m)) => view::<E::R>(g, m.layout().offset(), n, "master weights")?,
        _ => &mut [],
    };
    let mut it = bl.into_iter();
    let lanes = Lanes {
        p: pl,
        g: gl,
        b0: it.next().unwrap_or(&mut []),
        b1: it.next().unwrap_or(&mut []),
        b2: it.next().unwrap_or(&mut []),
        master: ml,
    };
    match imp {
        Impl::ForLoop => loops::run_seq(job, lanes),
        Impl::Foreach => loops::run_foreach(job, lanes),
        Impl::Fused => loops::run_fused(job, lanes),
    }
    drop(guards);
    p.storage().bump_version();
    if job.grad_scale.is_some() {
        grad.storage().bump_version();
    }
    Ok(())
}
