//! The `Dataset` trait and the batches it collates.

use crate::base::{Error, Result};
use crate::tensor::{CpuStorage, Device, Tensor};

/// One batch collated on the host: inputs and targets as flat storage plus their shapes.
///
/// Host batches are plain data, so a loader thread can build them while the training
/// thread runs; [`HostBatch::to_device`] turns one into tensors.
#[derive(Clone, Debug)]
pub struct HostBatch {
    /// The inputs in row-major order.
    pub inputs: CpuStorage,
    /// Shape of the inputs, batch dimension first.
    pub input_shape: Vec<usize>,
    /// The targets in row-major order.
    pub targets: CpuStorage,
    /// Shape of the targets, batch dimension first.
    pub target_shape: Vec<usize>,
}

/// One batch as tensors on the training device.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The inputs (`X`), batch dimension first.
    pub inputs: Tensor,
    /// The targets (`y`), batch dimension first.
    pub targets: Tensor,
}

impl HostBatch {
    /// Number of samples in the batch (the first dimension; 0 for a scalar shape).
    pub fn len(&self) -> usize {
        self.input_shape.first().copied().unwrap_or(0)
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the batch into tensors on `device`.
    pub fn to_device(self, device: Device) -> Result<Batch> {
        Ok(Batch {
            inputs: Tensor::from_cpu_storage(self.inputs, &self.input_shape, device)?,
            targets: Tensor::from_cpu_storage(self.targets, &self.target_shape, device)?,
        })
    }
}

/// A finite, indexable collection of samples that collates any subset into one batch.
///
/// Collating whole batches (rather than single samples) lets a dataset fill one buffer
/// per batch, in parallel.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one input sample (without the batch dimension).
    fn input_shape(&self) -> Vec<usize>;

    /// The samples at `indices`, in that order, stacked into one batch.
    fn collate(&self, indices: &[usize]) -> Result<HostBatch>;
}

/// Checks that every index is below `len` (shared by dataset implementations).
pub fn check_indices(op: &'static str, indices: &[usize], len: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= len) {
        Some(i) => Err(Error::invalid(
            op,
            format!("index {i} out of range for {len} samples"),
        )),
        None => Ok(()),
    }
}
