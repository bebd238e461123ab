//! `zero_grad`, exactly as PyTorch documents it, with the zeroing grouped per
//! (device, dtype).

use std::collections::BTreeMap;

use crate::base::{Error, Result};
use crate::optim::arena::GradArena;
#[cfg(gpu)]
use crate::optim::launch;
use crate::optim::ZeroMode;
use crate::tensor::{CpuStorage, DType, Device, Tensor};

/// Clears the grads of `params`: with `set_to_none` each `.grad` becomes None; otherwise
/// each grad is detached when it has a grad_fn (else loses requires_grad) and is zeroed.
/// The zeroing is one multi-tensor launch per (device, dtype) group on a GPU (or one
/// memset per tensor with [`ZeroMode::PerTensor`], or one memset per group for the grads
/// that live in `arena`).
pub fn zero_grad_params(
    params: &[Tensor],
    set_to_none: bool,
    mode: ZeroMode,
    arena: Option<&GradArena>,
) -> Result<()> {
    let mut groups: BTreeMap<(Device, DType), Vec<Tensor>> = BTreeMap::new();
    for p in params {
        let Some(g) = p.grad() else { continue };
        if set_to_none {
            p.set_grad(None)?;
            continue;
        }
        if g.grad_fn().is_some() {
            g.detach_();
        } else {
            g.requires_grad_(false)?;
        }
        groups.entry((g.device(), g.dtype())).or_default().push(g);
    }
    for ((device, dtype), grads) in groups {
        let (in_arena, rest): (Vec<Tensor>, Vec<Tensor>) =
            match arena.and_then(|a| a.group(device, dtype)) {
                Some(ag) => grads.into_iter().partition(|g| ag.holds(g)),
                None => (Vec::new(), grads),
            };
        if !in_arena.is_empty() {
            if let Some(ag) = arena.and_then(|a| a.group(device, dtype)) {
                zero_tensors(device, std::slice::from_ref(ag.buffer()), mode)?;
            }
        }
        zero_tensors(device, &rest, mode)?;
    }
    Ok(())
}

/// Zeroes tensors of one (device, dtype) group.
pub(crate) fn zero_tensors(device: Device, ts: &[Tensor], mode: ZeroMode) -> Result<()> {
    if ts.is_empty() {
        return Ok(());
    }
    if device == Device::Cpu {
        ts.iter().try_for_each(zero_cpu)?;
    } else {
        #[cfg(gpu)]
        launch::zero_group(device, ts, mode)?;
        #[cfg(not(gpu))]
        {
            let _ = mode;
            return Err(crate::backend::not_built(device));
        }
    }
    ts.iter().for_each(|t| t.storage().bump_version());
    Ok(())
}

fn zero_cpu(t: &Tensor) -> Result<()> {
    let Some(mut c) = t.storage().write() else {
        return Err(Error::Optim(
            "zero_grad: a CPU tensor without host storage".into(),
        ));
    };
    fn fill<T: Copy>(v: &mut [T], t: &Tensor, zero: T) {
        if t.is_contiguous() {
            let o = t.layout().offset();
            v[o..o + t.numel()].fill(zero);
        } else {
            for i in t.layout().indices() {
                v[i] = zero;
            }
        }
    }
    match &mut *c {
        CpuStorage::F16(v) => fill(v, t, half::f16::ZERO),
        CpuStorage::BF16(v) => fill(v, t, half::bf16::ZERO),
        CpuStorage::F32(v) => fill(v, t, 0.0),
        CpuStorage::F64(v) => fill(v, t, 0.0),
        CpuStorage::I64(v) => fill(v, t, 0),
    }
    Ok(())
}
