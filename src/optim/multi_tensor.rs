//! Multi-tensor launch planning: the chunk tables of `kernels/multi_tensor.cuh`, mirrored
//! as `#[repr(C)]` structs, and the launches of the zero and step kernels.
//!
//! Two kinds of table: the zero table goes by value (up to [`ZERO_MAX`] tensors per
//! launch, under the 4 KB argument limit); the step table lives on the device, is built
//! once and reused while the set of pointers is unchanged, so one launch covers any
//! number of tensors.

use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, KernelId, LaunchConfig};
use crate::base::{Error, Result};
use crate::tensor::DType;

/// Elements per chunk (`MT_CHUNK`).
pub const CHUNK: u64 = 65536;
/// Threads per block (`MT_THREADS`).
pub const THREADS: u32 = 512;
/// Tensors one zero launch holds (`MT_ZERO_MAX`).
pub const ZERO_MAX: usize = crate::optim::raw::ZERO_TENSORS_PER_LAUNCH;
/// Bytes per chunk of the zero kernel.
const ZERO_CHUNK_BYTES: u64 = CHUNK * 4;
/// Most blocks of one launch (grid-stride beyond).
const MAX_BLOCKS: u64 = 65535;

/// `MtZeroTable`, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ZeroTable {
    ptr: [u64; ZERO_MAX],
    bytes: [u64; ZERO_MAX],
    chunk_start: [u32; ZERO_MAX + 1],
    ntensors: u32,
}

/// `MtTensor`: one entry of a device-side step table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtTensor {
    /// Parameter.
    pub p: u64,
    /// Gradient.
    pub g: u64,
    /// momentum_buffer or exp_avg (0: none).
    pub b0: u64,
    /// exp_avg_sq (0: none).
    pub b1: u64,
    /// max_exp_avg_sq (0: none).
    pub b2: u64,
    /// f32 master weights (0: none).
    pub master: u64,
    /// Compute-type scratch of the foreach form (0: none).
    pub tmp: u64,
    /// `float*` step count (0: none).
    pub step: u64,
    /// Elements.
    pub numel: u64,
    /// First chunk (set by [`number_chunks`]).
    pub chunk_start: u64,
    /// Chunks, at least 1 (set by [`number_chunks`]).
    pub nchunks: u32,
    /// [`FLAG_FIRST`] or 0.
    pub flags: u32,
}

/// SGD's momentum buffer takes the gradient as is (`MT_FIRST`).
pub const FLAG_FIRST: u32 = 1;

/// `OptArgs` of `kernels/optim.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OptArgs {
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD dampening.
    pub dampening: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam eps.
    pub eps: f64,
    /// 0: SGD, 1: Adam/AdamW.
    pub kind: i32,
    /// [`Phase`] as i32.
    pub phase: i32,
    /// SGD Nesterov.
    pub nesterov: i32,
    /// Maximize.
    pub maximize: i32,
    /// Adam amsgrad.
    pub amsgrad: i32,
    /// AdamW decoupled decay.
    pub decoupled: i32,
    /// SGD with a momentum buffer.
    pub has_momentum: i32,
    /// Padding.
    pub pad: i32,
    /// Device address of the learning rate (a double; 0: use `lr`).
    pub lr_ptr: u64,
}

/// The ops of the step kernel: `All` is the fused update, the others the elementary ops
/// of the foreach form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Phase {
    /// The whole update.
    All = 0,
    /// `tmp = g` (unscaled, written back).
    Load,
    /// `tmp = -tmp`.
    Neg,
    /// `tmp += wd * p`.
    Wd,
    /// `p *= 1 - lr * wd`.
    Decay,
    /// Momentum buffer update.
    Mom,
    /// `tmp += momentum * buf`.
    Nest,
    /// `tmp = buf`.
    CopyB,
    /// `p += -lr * tmp`.
    SgdP,
    /// `m = lerp(m, tmp, 1 - beta1)`.
    M,
    /// `v = beta2 * v + (1 - beta2) * tmp^2`.
    V,
    /// `vmax = max(vmax, v)`.
    VMax,
    /// `tmp = sqrt(v) / sqrt(bc2) + eps`.
    Den,
    /// `p += -step_size * m / tmp`.
    AdamP,
    /// `step += 1`.
    Step,
}

/// Numbers the chunks of a table in order; returns the total.
pub fn number_chunks(tab: &mut [MtTensor]) -> u64 {
    let mut c = 0u64;
    for e in tab.iter_mut() {
        e.chunk_start = c;
        e.nchunks = e.numel.div_ceil(CHUNK).max(1) as u32;
        c += u64::from(e.nchunks);
    }
    c
}

/// The zero tables for `(pointer, bytes)` ranges: one per launch, [`ZERO_MAX`] each.
pub fn zero_tables(ranges: &[(u64, u64)]) -> Vec<ZeroTable> {
    let ranges: Vec<&(u64, u64)> = ranges.iter().filter(|r| r.1 > 0).collect();
    ranges
        .chunks(ZERO_MAX)
        .map(|part| {
            let mut t = ZeroTable {
                ptr: [0; ZERO_MAX],
                bytes: [0; ZERO_MAX],
                chunk_start: [0; ZERO_MAX + 1],
                ntensors: part.len() as u32,
            };
            let mut c = 0u32;
            for (i, r) in part.iter().enumerate() {
                t.ptr[i] = r.0;
                t.bytes[i] = r.1;
                t.chunk_start[i] = c;
                c += r.1.div_ceil(ZERO_CHUNK_BYTES) as u32;
            }
            t.chunk_start[part.len()] = c;
            t
        })
        .collect()
}

/// Zeroes `(pointer, bytes)` ranges with one `foreach_zero` launch per [`ZERO_MAX`].
pub fn launch_zero(dev: &GpuDevice, ranges: &[(u64, u64)]) -> Result<()> {
    for t in zero_tables(ranges) {
        let chunks = u64::from(t.chunk_start[t.ntensors as usize]);
        let cfg = LaunchConfig::linear(chunks.min(MAX_BLOCKS) as u32, THREADS);
        let mut a = KernelArgs::new();
        a.push(t);
        dev.launch(k::FOREACH_ZERO, cfg, &mut a)?;
    }
    Ok(())
}

/// The step kernel of a dtype.
pub fn step_kernel(dtype: DType) -> Result<KernelId> {
    crate::backend::gpu::kernels::of_dtype(k::OPTIM_STEP, dtype)
        .ok_or_else(|| Error::Optim(format!("can't optimize a {dtype} tensor")))
}

/// A step table uploaded to a device, followed in the same block by the per-entry
/// counters the fused form uses to advance step counts.
#[derive(Debug)]
pub struct DeviceTable {
    /// The host copy (chunks numbered).
    pub host: Vec<MtTensor>,
    block: crate::base::DeviceBuffer,
}

impl DeviceTable {
    /// Uploads `host` (numbering its chunks) and a zeroed counter per entry, in one
    /// block written outside a capture under way (a replay must not re-zero the
    /// counters).
    pub fn upload(dev: &GpuDevice, mut host: Vec<MtTensor>) -> Result<DeviceTable> {
        number_chunks(&mut host);
        let mut raw: Vec<u8> = host
            .iter()
            .flat_map(|e| {
                let p = e as *const MtTensor as *const u8;
                // SAFETY: MtTensor is #[repr(C)] plain data without padding holes read as UB
                // (all fields are integers), size_of bytes are valid to read.
                unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<MtTensor>()) }.to_vec()
            })
            .collect();
        raw.resize(raw.len() + 4 * host.len(), 0);
        let block = dev.upload_fixed(&raw)?;
        Ok(DeviceTable { host, block })
    }

    /// The device address of the table.
    pub fn tab(&self) -> u64 {
        self.block.ptr()
    }

    fn done(&self) -> u64 {
        self.block.ptr() + std::mem::size_of_val(self.host.as_slice()) as u64
    }

    /// Launches the step kernel over entries `first..first + count`.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        dev: &GpuDevice,
        dtype: DType,
        first: usize,
        count: usize,
        args: OptArgs,
        grad_scale: u64,
        found_inf: u64,
    ) -> Result<()> {
        let done = self.done() + (first * 4) as u64;
        self.launch_over(dev, step_kernel(dtype)?, first, count, |a| {
            a.push(args).push(grad_scale).push(found_inf).push(done);
        })
    }

    /// Launches `kernel(tab + first, count, c0, c1, ...)` over entries `first..first +
    /// count` (one block per chunk up to the grid limit); `rest` pushes the kernel's
    /// other arguments. Nothing is launched for no entries.
    pub fn launch_over(
        &self,
        dev: &GpuDevice,
        kernel: KernelId,
        first: usize,
        count: usize,
        rest: impl FnOnce(&mut KernelArgs),
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let last = &self.host[first + count - 1];
        let c0 = self.host[first].chunk_start;
        let c1 = last.chunk_start + u64::from(last.nchunks);
        let mut a = KernelArgs::new();
        a.push(self.tab() + (first * std::mem::size_of::<MtTensor>()) as u64)
            .push(count as u32)
            .push(c0)
            .push(c1);
        rest(&mut a);
        dev.launch(
            kernel,
            LaunchConfig::linear((c1 - c0).min(MAX_BLOCKS) as u32, THREADS),
            &mut a,
        )
    }

    /// Chunks of the whole table.
    pub fn chunks(&self) -> u64 {
        self.host
            .last()
            .map_or(0, |l| l.chunk_start + u64::from(l.nchunks))
    }

    /// The GradScaler's finite check over the whole table (see `foreach.cu`).
    pub fn launch_check_finite(&self, dev: &GpuDevice, dtype: DType, found_inf: u64) -> Result<()> {
        let kernel = crate::backend::gpu::kernels::of_dtype(k::FOREACH_CHECK_FINITE, dtype)
            .ok_or_else(|| Error::Optim(format!("{dtype} grads")))?;
        self.launch_over(dev, kernel, 0, self.host.len(), |a| {
            a.push(found_inf);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_table_fits_the_argument_limit_and_splits() {
        assert!(std::mem::size_of::<ZeroTable>() <= 4096);
        let ranges: Vec<(u64, u64)> = (0..450).map(|i| (i * 4096, 4000 + i)).collect();
        let t = zero_tables(&ranges);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2].ntensors, 50);
        let big = zero_tables(&[(0, ZERO_CHUNK_BYTES * 2 + 1), (0, 0), (64, 3)]);
        assert_eq!(big[0].ntensors, 2);
        assert_eq!(&big[0].chunk_start[..3], &[0, 3, 4]);
    }

    #[test]
    fn chunks_are_numbered_with_empty_tensors_counting_one() {
        let mut t = vec![
            MtTensor {
                numel: 0,
                ..Default::default()
            },
            MtTensor {
                numel: CHUNK * 2 + 5,
                ..Default::default()
            },
            MtTensor {
                numel: 1,
                ..Default::default()
            },
        ];
        assert_eq!(number_chunks(&mut t), 5);
        assert_eq!(
            (t[1].chunk_start, t[1].nchunks, t[2].chunk_start),
            (1, 3, 4)
        );
        assert_eq!(std::mem::size_of::<MtTensor>(), 88);
        assert_eq!(std::mem::size_of::<OptArgs>(), 96);
    }
}
