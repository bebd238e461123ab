//! Gradient clipping with PyTorch's semantics: [`clip_grad_norm_`] and
//! [`clip_grad_value_`] (`torch.nn.utils.clip_grad_norm_` / `clip_grad_value_`).
//!
//! On a GPU both are multi-tensor kernels grouped per dtype (`kernels/clip.cu`): the
//! norm is four launches for one dtype (chunk partials, tensor norms, the total and the
//! coefficient, the scaled write), the total norm and the coefficient stay on the
//! device, and nothing synchronises with the host unless `error_if_nonfinite` asks for
//! the total to be checked there. The arithmetic follows torch: each tensor's norm is
//! rounded to its grad's dtype (`_foreach_norm` returns it so), the total is the norm of
//! those norms in the promoted dtype, and the coefficient is `max_norm / (total +
//! 1e-6)` computed as torch evaluates it (`reciprocal(total + 1e-6) * max_norm`, each
//! step rounded to that dtype), clamped to at most 1, and every grad is multiplied by it
//! (also when it is 1).

use std::collections::BTreeMap;

use crate::base::{bf16_from_f64, f16_from_f64, Error, Result};
use crate::optim::clip_cpu::{self, ElemOp};
use crate::tensor::{DType, Device, Tensor};

/// A vector norm order, mirrored by `CLIP_*` in `kernels/clip.cu`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NormKind {
    /// Any other order p: `(sum |x|^p)^(1/p)`.
    P(f64),
    L1,
    L2,
    Inf,
    NegInf,
    /// The number of non-zero elements.
    L0,
}

impl NormKind {
    fn of(norm_type: f64) -> Result<NormKind> {
        Ok(match norm_type {
            v if v.is_nan() => {
                return Err(Error::Optim(
                    "clip_grad_norm_: norm_type is NaN (use a number, or f64::INFINITY)".into(),
                ))
            }
            f64::INFINITY => NormKind::Inf,
            f64::NEG_INFINITY => NormKind::NegInf,
            0.0 => NormKind::L0,
            1.0 => NormKind::L1,
            2.0 => NormKind::L2,
            p => NormKind::P(p),
        })
    }

    /// The kernels' code and exponent.
    #[cfg(gpu)]
    fn code(self) -> (i32, f64) {
        match self {
            NormKind::P(p) => (0, p),
            NormKind::L1 => (1, 1.0),
            NormKind::L2 => (2, 2.0),
            NormKind::Inf => (3, 0.0),
            NormKind::NegInf => (4, 0.0),
            NormKind::L0 => (5, 0.0),
        }
    }

    pub(crate) fn term(self, a: f64) -> f64 {
        match self {
            NormKind::L2 => a * a,
            NormKind::L0 => f64::from(u8::from(a != 0.0)),
            NormKind::P(p) => a.powf(p),
            _ => a,
        }
    }

    pub(crate) fn combine(self, a: f64, b: f64) -> f64 {
        match self {
            NormKind::Inf | NormKind::NegInf if a.is_nan() => a,
            NormKind::Inf | NormKind::NegInf if b.is_nan() => b,
            NormKind::Inf => a.max(b),
            NormKind::NegInf => a.min(b),
            _ => a + b,
        }
    }

    pub(crate) fn identity(self) -> f64 {
        if self == NormKind::NegInf {
            f64::INFINITY
        } else {
            0.0
        }
    }

    fn root(self, s: f64) -> f64 {
        match self {
            NormKind::L2 => s.sqrt(),
            NormKind::P(p) => s.powf(1.0 / p),
            _ => s,
        }
    }
}

/// `v` rounded to `dtype` (f16, bf16, f32 or f64).
fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F16 => f16_from_f64(v).to_f64(),
        DType::BF16 => bf16_from_f64(v).to_f64(),
        DType::F32 => f64::from(v as f32),
        _ => v,
    }
}

/// The total norm (rounded to `out`) and the clip coefficient, computed in `out`'s
/// compute type exactly as `clip_norm_total` in `kernels/clip.cu` does.
fn total_and_coefficient(kind: NormKind, s: f64, max_norm: f64, out: DType) -> (f64, f64) {
    if out == DType::F64 {
        let t = kind.root(s);
        let q = (1.0 / (t + 1e-6)) * max_norm;
        return (t, if q > 1.0 { 1.0 } else { q });
    }
    let r = |v: f32| round_to(out, f64::from(v)) as f32;
    let root = match kind {
        NormKind::L2 => (s as f32).sqrt(),
        NormKind::P(p) => (s as f32).powf(1.0 / p as f32),
        _ => s as f32,
    };
    let t = r(root);
    let q = r(r(1.0 / r(t + 1e-6f32)) * max_norm as f32);
    (f64::from(t), f64::from(if q > 1.0 { 1.0 } else { q }))
}

/// The dtype torch's `stack` gives norms of these dtypes: the widest, and f32 for f16
/// with bf16.
fn promoted(dtypes: impl Iterator<Item = DType>) -> DType {
    let mut out: Option<DType> = None;
    for d in dtypes {
        out = Some(match out {
            None => d,
            Some(o) if o == d => o,
            Some(o) if o.size_in_bytes() == d.size_in_bytes() => DType::F32,
            Some(o) if o.size_in_bytes() > d.size_in_bytes() => o,
            Some(_) => d,
        });
    }
    out.unwrap_or(DType::F32)
}

/// `grads` grouped by dtype, in order within each group.
fn by_dtype(grads: &[Tensor]) -> BTreeMap<DType, Vec<Tensor>> {
    let mut groups: BTreeMap<DType, Vec<Tensor>> = BTreeMap::new();
    for g in grads {
        groups.entry(g.dtype()).or_default().push(g.clone());
    }
    groups
}

/// The grads of `params` that exist, checked: float, contiguous or not (the CPU reads
/// through views; a GPU grad must be contiguous), all on one device.
fn grads_of(params: &[Tensor], what: &str) -> Result<Vec<Tensor>> {
    if let Some(i) = params.iter().position(|p| p.meta().stepped_in_backward) {
        return Err(Error::Optim(format!(
            "{what}: param {i} is stepped inside backward (StepInBackward), so its grad is \
             gone before any clipping; clipping needs every grad at once: use the ordinary \
             zero_grad/backward/step loop to clip"
        )));
    }
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).collect();
    for (i, g) in grads.iter().enumerate() {
        if !g.dtype().is_float() {
            return Err(Error::Optim(format!(
                "{what}: grad {i} is {}, not a float tensor",
                g.dtype()
            )));
        }
        if g.device() != grads[0].device() {
            return Err(Error::Optim(format!(
                "{what}: grads on more than one device ({} and {}); clip each device's \
                 parameters separately",
                grads[0].device(),
                g.device()
            )));
        }
        if g.device() != Device::Cpu && !g.is_contiguous() {
            return Err(Error::Optim(format!(
                "{what}: grad {i} is a view of shape {:?} and strides {:?}; the GPU kernels \
                 need contiguous grads",
                g.shape(),
                g.layout().strides()
            )));
        }
    }
    Ok(grads)
}

/// Clips the gradients of `params` so that their total norm of order `norm_type` is at
/// most `max_norm` (PyTorch's `torch.nn.utils.clip_grad_norm_`), in place, and returns
/// the total norm before clipping as a 0-d tensor on the grads' device, in their dtype
/// (the widest of them). Parameters without a grad are skipped; with none at all the
/// result is a CPU f32 zero.
///
/// `norm_type` is any order: 2 (the default in torch), 1, `f64::INFINITY` (largest
/// absolute value), `f64::NEG_INFINITY`, 0 (non-zero count) or another p. With
/// `error_if_nonfinite` a NaN or infinite total norm is an error and the grads are left
/// as they were; checking it reads the total on the host (a synchronisation, and not
/// allowed inside a graph capture). Without it nothing synchronises: a non-finite total
/// makes the coefficient NaN (or 0), and the grads become what torch makes of them.
/// `foreach`: `None` or `Some(true)` launch multi-tensor kernels per dtype on a GPU,
/// `Some(false)` launches per tensor (torch's `foreach=False`); the values are the same.
///
/// Errors: `max_norm` negative or NaN, `norm_type` NaN (torch accepts both and produces
/// sign-flipped or NaN grads), an infinity-order norm over a grad with no elements
/// (torch's error too), grads that are not float, on several devices, or GPU grads that
/// are not contiguous.
pub fn clip_grad_norm_(
    params: &[Tensor],
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
    foreach: Option<bool>,
) -> Result<Tensor> {
    const WHAT: &str = "clip_grad_norm_";
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Optim(format!(
            "{WHAT}: max_norm must be at least 0, got {max_norm}"
        )));
    }
    let kind = NormKind::of(norm_type)?;
    let grads = grads_of(params, WHAT)?;
    if matches!(kind, NormKind::Inf | NormKind::NegInf) {
        if let Some(i) = grads.iter().position(|g| g.numel() == 0) {
            return Err(Error::Optim(format!(
                "{WHAT}: grad {i} has no elements, and the norm of order {norm_type} (a \
                 max or min over the elements) of no elements is undefined"
            )));
        }
    }
    let Some(first) = grads.first() else {
        return Tensor::zeros(&[], DType::F32, Device::Cpu);
    };
    let device = first.device();
    let out = promoted(grads.iter().map(|g| g.dtype()));
    let groups = by_dtype(&grads);
    let nonfinite = |total: f64| {
        Error::Optim(format!(
            "{WHAT}: the total norm of order {norm_type} of the gradients is {total}, so \
             they cannot be clipped; pass error_if_nonfinite=false to clip anyway (the \
             grads are unchanged)"
        ))
    };
    if device == Device::Cpu {
        let _ = foreach;
        let mut s = kind.identity();
        for (dtype, gs) in &groups {
            for g in gs {
                let n = round_to(*dtype, kind.root(clip_cpu::fold(g, kind)?));
                s = kind.combine(s, kind.term(n.abs()));
            }
        }
        let (total, coef) = total_and_coefficient(kind, s, max_norm, out);
        if error_if_nonfinite && !total.is_finite() {
            return Err(nonfinite(total));
        }
        for g in &grads {
            clip_cpu::apply(g, ElemOp::Scale(coef))?;
        }
        return Tensor::from_f64s(&[total], &[], out, Device::Cpu);
    }
    #[cfg(gpu)]
    {
        gpu::clip_norm(
            device,
            &groups,
            kind,
            (max_norm, out),
            foreach,
            error_if_nonfinite,
            nonfinite,
        )
    }
    #[cfg(not(gpu))]
    Err(crate::backend::not_built(device))
}

/// Clamps every gradient of `params` to `[-clip_value, clip_value]` in place (PyTorch's
/// `torch.nn.utils.clip_grad_value_`; NaN stays NaN). One multi-tensor launch per dtype
/// on a GPU (per tensor with `foreach == Some(false)`), no synchronisation. Errors:
/// `clip_value` negative or NaN, no parameter with a grad (torch's error too), and the
/// grads' errors of [`clip_grad_norm_`].
pub fn clip_grad_value_(params: &[Tensor], clip_value: f64, foreach: Option<bool>) -> Result<()> {
    const WHAT: &str = "clip_grad_value_";
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::Optim(format!(
            "{WHAT}: clip_value must be at least 0, got {clip_value}"
        )));
    }
    let grads = grads_of(params, WHAT)?;
    let Some(first) = grads.first() else {
        return Err(Error::Optim(format!(
            "{WHAT}: no parameter has a grad (as torch, an error: clipping nothing is \
             most likely a mistake)"
        )));
    };
    let device = first.device();
    if device == Device::Cpu {
        let _ = foreach;
        let (lo, hi) = (-clip_value, clip_value);
        for g in &grads {
            // The bounds as the grad's dtype holds them (torch compares in that dtype).
            let (lo, hi) = (round_to(g.dtype(), lo), round_to(g.dtype(), hi));
            clip_cpu::apply(g, ElemOp::Clamp(lo, hi))?;
        }
        return Ok(());
    }
    #[cfg(gpu)]
    return gpu::clip_value(device, &grads, clip_value, foreach);
    #[cfg(not(gpu))]
    Err(crate::backend::not_built(device))
}

#[cfg(gpu)]
mod gpu {
    use std::collections::BTreeMap;

    use super::NormKind;
    use crate::backend::gpu::{self, kernels::k, GpuDevice, KernelArgs, KernelId, LaunchConfig};
    use crate::base::{Error, Result};
    use crate::optim::multi_tensor::{DeviceTable, MtTensor};
    use crate::tensor::{DType, Device, Tensor};

    /// The member of a `kernels/clip.cu` family for a grads' dtype.
    fn of(family: [KernelId; 4], dtype: DType) -> Result<KernelId> {
        gpu::kernels::of_dtype(family, dtype)
            .ok_or_else(|| Error::Optim(format!("clip: {dtype} grads")))
    }

    /// The multi-tensor table of some grads (uploaded without a synchronisation).
    fn table(dev: &GpuDevice, grads: &[Tensor]) -> Result<DeviceTable> {
        let host = grads
            .iter()
            .map(|g| {
                Ok(MtTensor {
                    g: g.device_ptr()?,
                    numel: g.numel() as u64,
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        DeviceTable::upload(dev, host)
    }

    /// Launches `kernel` over a table: once for all entries, or per entry when `per`.
    fn over(
        dev: &GpuDevice,
        t: &DeviceTable,
        kernel: KernelId,
        per: bool,
        rest: impl Fn(&mut KernelArgs),
    ) -> Result<()> {
        if per {
            (0..t.host.len()).try_for_each(|i| t.launch_over(dev, kernel, i, 1, &rest))
        } else {
            t.launch_over(dev, kernel, 0, t.host.len(), rest)
        }
    }

    fn bump(grads: &[Tensor]) {
        grads.iter().for_each(|g| g.storage().bump_version());
    }

    /// `clip_grad_norm_` on one GPU device, the total in `out`; with `check` the total is
    /// read on the host and a non-finite one fails with `nonfinite(total)`.
    pub(super) fn clip_norm(
        device: Device,
        groups: &BTreeMap<DType, Vec<Tensor>>,
        kind: NormKind,
        (max_norm, out): (f64, DType),
        foreach: Option<bool>,
        check: bool,
        nonfinite: impl Fn(f64) -> Error,
    ) -> Result<Tensor> {
        let dev = gpu::get(device)?;
        let per = foreach == Some(false);
        let (code, p) = kind.code();
        let tables = groups
            .iter()
            .map(|(d, gs)| Ok((*d, table(&dev, gs)?)))
            .collect::<Result<Vec<_>>>()?;
        // f64 scratch: every group's chunk partials, then one value per group, then the
        // coefficient.
        let chunks: u64 = tables.iter().map(|(_, t)| t.chunks()).sum();
        let ngroups = tables.len() as u64;
        let scratch = Tensor::empty(&[(chunks + ngroups + 1) as usize], DType::F64, device)?;
        let base = scratch.device_ptr()?;
        let (acc, coef) = (base + 8 * chunks, base + 8 * (chunks + ngroups));
        let total = Tensor::empty(&[], out, device)?;
        let mut off = 0u64;
        for (gi, (dtype, t)) in tables.iter().enumerate() {
            // Chunk c of this table writes partials[off + c].
            let partials = base + 8 * off;
            over(&dev, t, of(k::CLIP_NORM_PARTIALS, *dtype)?, per, |a| {
                a.push(code).push(p).push(partials);
            })?;
            let mut a = KernelArgs::new();
            a.push(t.tab())
                .push(t.host.len() as u32)
                .push(code)
                .push(p)
                .push(partials)
                .push(acc + 8 * gi as u64);
            dev.launch(
                of(k::CLIP_NORM_TENSORS, *dtype)?,
                LaunchConfig::linear(1, 256),
                &mut a,
            )?;
            off += t.chunks();
        }
        let mut a = KernelArgs::new();
        a.push(acc)
            .push(ngroups as u32)
            .push(code)
            .push(p)
            .push(max_norm)
            .push(total.device_ptr()?)
            .push(coef);
        dev.launch(
            of(k::CLIP_NORM_TOTAL, out)?,
            LaunchConfig::linear(1, 32),
            &mut a,
        )?;
        if check {
            let v = total.item()?;
            if !v.is_finite() {
                return Err(nonfinite(v));
            }
        }
        for ((_, t), (dtype, gs)) in tables.iter().zip(groups) {
            over(&dev, t, of(k::CLIP_MUL, *dtype)?, per, |a| {
                a.push(coef);
            })?;
            bump(gs);
        }
        Ok(total)
    }

    /// `clip_grad_value_` on one GPU device.
    pub(super) fn clip_value(
        device: Device,
        grads: &[Tensor],
        clip_value: f64,
        foreach: Option<bool>,
    ) -> Result<()> {
        let dev = gpu::get(device)?;
        let groups = super::by_dtype(grads);
        for (dtype, gs) in &groups {
            let t = table(&dev, gs)?;
            // The bounds as the grads' dtype holds them (torch converts the scalar so).
            let hi = super::round_to(*dtype, clip_value);
            let per = foreach == Some(false);
            over(&dev, &t, of(k::CLIP_VALUE, *dtype)?, per, |a| {
                a.push(-hi).push(hi);
            })?;
            bump(gs);
        }
        Ok(())
    }

    /// The GradScaler's `unscale_` on one device: grads times `1 / scale`, `found_inf`
    /// set when one is not finite; one launch per dtype.
    pub(crate) fn unscale(grads: &[Tensor], scale: &Tensor, found_inf: &Tensor) -> Result<()> {
        let dev = gpu::get(scale.device())?;
        let groups = super::by_dtype(grads);
        let (sp, fp) = (scale.device_ptr()?, found_inf.device_ptr()?);
        for (dtype, gs) in &groups {
            let t = table(&dev, gs)?;
            over(&dev, &t, of(k::AMP_UNSCALE, *dtype)?, false, |a| {
                a.push(sp).push(fp);
            })?;
            bump(gs);
        }
        Ok(())
    }
}

#[cfg(gpu)]
pub(crate) use gpu::unscale as gpu_unscale;
