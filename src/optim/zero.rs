//! `zero_grad`, exactly as PyTorch documents it, with the zeroing grouped per
//! (device, dtype).

use rayon::prelude::*;
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

/// Bytes from which a contiguous CPU grad is zeroed by every rayon thread at once.
const SPLIT_FILL_BYTES: usize = 1 << 20;

/// `v.fill(zero)`; a large `v` in one piece per rayon thread, each still large enough
/// for the C library's memset to use its streaming stores (one core's stores do not fill
/// the memory bandwidth).
fn fill_split<T: Copy + Send + Sync>(v: &mut [T], zero: T) {
    let threads = rayon::current_num_threads();
    if std::mem::size_of_val(v) >= SPLIT_FILL_BYTES && threads > 1 {
        v.par_chunks_mut(v.len().div_ceil(threads))
            .for_each(|c| c.fill(zero));
    } else {
        v.fill(zero);
    }
}

fn zero_cpu(t: &Tensor) -> Result<()> {
    let Some(mut c) = t.storage().write() else {
        return Err(Error::Optim(
            "zero_grad: a CPU tensor without host storage".into(),
        ));
    };
    fn fill<T: Copy + Send + Sync>(v: &mut [T], t: &Tensor, zero: T) {
        if t.is_contiguous() {
            let o = t.layout().offset();
            fill_split(&mut v[o..o + t.numel()], zero);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A grad above the split size, a view into the middle of a larger storage, zeroed in
    /// pools of 1 to 3 threads: every element of the view is zero, the rest untouched.
    #[test]
    fn large_grads_are_zeroed_in_pieces_and_only_inside_their_view() {
        let n = SPLIT_FILL_BYTES / 4 + 12_345;
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let base = Tensor::from_vec(vec![1.5f32; n + 10], &[n + 10], Device::Cpu).unwrap();
            let view = base
                .with_layout(crate::base::Layout::new(vec![n], vec![1], 7))
                .unwrap();
            pool.install(|| zero_cpu(&view)).unwrap();
            let v = base.to_vec::<f32>().unwrap();
            assert!(v[7..7 + n].iter().all(|&x| x == 0.0), "{threads} threads");
            assert!(v[..7].iter().chain(&v[7 + n..]).all(|&x| x == 1.5));
        }
    }
}
