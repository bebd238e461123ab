//! A contiguous gradient arena: every grad of a (device, dtype) group is a view into one
//! aligned buffer, set as `.grad` before backward so that backward accumulates into it in
//! place. `zero_grad(false)` is then one memset per group, and the group's grad pointers
//! never change, so the fused step reuses its device-side table.

use crate::base::Result;
use crate::tensor::{contiguous_strides, DType, Device, Layout, Tensor};

/// Each view starts on a 256-byte boundary (16-byte vector loads for every dtype).
const ALIGN_BYTES: usize = 256;

/// The grads of one (device, dtype) group in one buffer.
#[derive(Debug)]
pub struct ArenaGroup {
    device: Device,
    dtype: DType,
    buffer: Tensor,
    /// `(param index, view)`, in increasing offset order.
    views: Vec<(usize, Tensor)>,
}

impl ArenaGroup {
    /// The whole buffer (a 1-D tensor).
    pub fn buffer(&self) -> &Tensor {
        &self.buffer
    }

    /// `(param index, grad view)` of every param of the group.
    pub fn views(&self) -> &[(usize, Tensor)] {
        &self.views
    }

    /// Whether `g` is one of this group's views.
    pub fn holds(&self, g: &Tensor) -> bool {
        // The views lie in the buffer in increasing offset order.
        g.shares_storage(&self.buffer)
            && self
                .views
                .binary_search_by_key(&g.layout().offset(), |(_, v)| v.layout().offset())
                .is_ok_and(|i| self.views[i].1.layout() == g.layout())
    }
}

/// One zeroed buffer of `dtype` on `device` holding a grad view per parameter of
/// `params`, in order, each view starting on a 256-byte boundary. Each parameter's `.grad`
/// becomes its view; a grad it already has is copied in first. Returns the buffer and the
/// views. Shared by the arena and by DistributedDataParallel's buckets.
pub(crate) fn grad_views(
    params: &[&Tensor],
    dtype: DType,
    device: Device,
) -> Result<(Tensor, Vec<Tensor>)> {
    let align = ALIGN_BYTES / dtype.size_in_bytes();
    let mut offsets = Vec::with_capacity(params.len());
    let mut total = 0usize;
    for p in params {
        offsets.push(total);
        total = (total + p.numel()).next_multiple_of(align);
    }
    let buffer = Tensor::zeros(&[total], dtype, device)?;
    let mut views = Vec::with_capacity(params.len());
    for (p, off) in params.iter().zip(offsets) {
        let layout = Layout::new(p.shape().to_vec(), contiguous_strides(p.shape()), off);
        let view = buffer.with_layout(layout)?;
        if let Some(g) = p.grad() {
            crate::tensor::prim::copy_(&view, &g)?;
        }
        p.set_grad(Some(view.clone()))?;
        views.push(view);
    }
    Ok((buffer, views))
}

/// Contiguous grad storage for a list of parameters, one buffer per (device, dtype).
#[derive(Debug, Default)]
pub struct GradArena {
    groups: Vec<ArenaGroup>,
}

impl GradArena {
    /// Allocates the buffers (zeroed), copies any existing grads in, and sets every
    /// param's `.grad` to its view.
    pub fn new(params: &[Tensor]) -> Result<GradArena> {
        let mut keys: Vec<(Device, DType)> =
            params.iter().map(|p| (p.device(), p.dtype())).collect();
        keys.sort();
        keys.dedup();
        let mut groups = Vec::new();
        for (device, dtype) in keys {
            let (index, members): (Vec<usize>, Vec<&Tensor>) = params
                .iter()
                .enumerate()
                .filter(|(_, p)| (p.device(), p.dtype()) == (device, dtype))
                .unzip();
            let (buffer, views) = grad_views(&members, dtype, device)?;
            groups.push(ArenaGroup {
                device,
                dtype,
                buffer,
                views: index.into_iter().zip(views).collect(),
            });
        }
        Ok(GradArena { groups })
    }

    /// The group of `(device, dtype)`, if any.
    pub fn group(&self, device: Device, dtype: DType) -> Option<&ArenaGroup> {
        self.groups
            .iter()
            .find(|g| g.device == device && g.dtype == dtype)
    }

    /// Every group.
    pub fn groups(&self) -> &[ArenaGroup] {
        &self.groups
    }

    /// Sets each param's `.grad` back to its arena view (zeroed), e.g. after a
    /// `zero_grad(true)` dropped them. `params` is the optimizer's parameter list.
    pub fn attach(&self, params: &[Tensor]) -> Result<()> {
        for g in &self.groups {
            crate::optim::zero::zero_tensors(
                g.device,
                std::slice::from_ref(&g.buffer),
                crate::optim::ZeroMode::MultiTensor,
            )?;
            for (i, v) in &g.views {
                if let Some(p) = params.get(*i) {
                    p.set_grad(Some(v.clone()))?;
                }
            }
        }
        Ok(())
    }
}
