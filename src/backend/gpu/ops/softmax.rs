//! Softmax, log-softmax and cross-entropy, one fused kernel per direction:
//! `kernels/softmax.cu`.
//!
//! Target validation: the forward kernel never reads a logit through an out-of-range
//! target; it reports the first such row in the device's sticky error record, which the
//! host reads at its next synchronisation (no synchronisation here: see `gpu::Status`).
//! The row's loss is NaN; the backward gives it a zero gradient.

use super::plan::{float_kernel, ptr, vector_stride, Rows};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, KernelId, LaunchConfig};
use crate::backend::{
    stats_dtype, CrossEntropyGrad, CrossEntropyIn, CrossEntropyOpts, Memory, Reduction, Softmaxes,
};
use crate::base::{RawTensor, Result};

/// Shape and options of one cross-entropy launch; mirrors `CeParams` in softmax.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CeParams {
    rows: u64,
    classes: u64,
    ls_row: u64,
    ls_col: u64,
    ts: u64,
    lse_s: u64,
    gs: u64,
    ignore_index: i64,
    smoothing: f64,
    reduction: i32,
}

impl CeParams {
    fn new(logits: &RawTensor, target: &RawTensor, opts: &CrossEntropyOpts) -> Self {
        let (ls, ts) = (logits.layout().strides(), target.layout().strides());
        CeParams {
            rows: logits.shape()[0] as u64,
            classes: logits.shape()[1] as u64,
            ls_row: ls[0] as u64,
            ls_col: ls[1] as u64,
            ts: ts[0] as u64,
            lse_s: 1,
            gs: 0,
            ignore_index: opts.ignore_index,
            smoothing: opts.label_smoothing,
            reduction: match opts.reduction {
                Reduction::None => 0,
                Reduction::Mean => 1,
                Reduction::Sum => 2,
            },
        }
    }
}

/// Bytes of the forward's zeroed scratch header (`CeScratch` in softmax.cu).
const CE_SCRATCH_BYTES: usize = 8;

/// Launches a softmax kernel over rows of `inputs` (the forward's `x`, or the backward's
/// `y` and `dy`, all of one shape): a pointer and a row view per input, then the output,
/// the number and length of the rows, and `log`.
fn row_softmax(
    dev: &GpuDevice,
    op: &'static str,
    kernels: [KernelId; 4],
    inputs: &[&RawTensor],
    log: bool,
) -> Result<RawTensor> {
    let x = inputs[0];
    let kernel = float_kernel(op, x.dtype(), x.device(), kernels)?;
    let out = dev.empty(x.shape(), x.dtype())?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = Rows::of(op, x)?;
    let mut args = KernelArgs::new();
    for t in inputs {
        args.push(ptr(t)?);
        Rows::of(op, t)?.push(&mut args);
    }
    args.push(ptr(&out)?)
        .push(rows.rows as u64)
        .push(rows.cols as u64)
        .push(log as i32);
    dev.launch(kernel, rows.launch_config(), &mut args)?;
    Ok(out)
}

impl Softmaxes for GpuDevice {
    fn softmax(&self, x: &RawTensor, log: bool) -> Result<RawTensor> {
        row_softmax(self, "softmax", k::SOFTMAX_FWD, &[x], log)
    }

    fn softmax_backward(&self, y: &RawTensor, dy: &RawTensor, log: bool) -> Result<RawTensor> {
        row_softmax(self, "softmax_backward", k::SOFTMAX_BWD, &[y, dy], log)
    }

    fn cross_entropy(&self, a: &CrossEntropyIn<'_>) -> Result<[RawTensor; 2]> {
        let (logits, target, opts) = (a.logits, a.target, a.opts);
        const OP: &str = "cross_entropy";
        let (dtype, device) = (logits.dtype(), logits.device());
        let kernels = k::CROSS_ENTROPY_FWD;
        let kernel = float_kernel(OP, dtype, device, kernels)?;
        let p = CeParams::new(logits, target, opts);
        let n = p.rows as usize;
        let loss_shape: &[usize] = if opts.reduction == Reduction::None {
            &[n]
        } else {
            &[]
        };
        let loss = self.empty(loss_shape, dtype)?;
        let lse = self.empty(&[n], stats_dtype(dtype))?;
        if n == 0 {
            // No rows: a sum of nothing, or the mean of nothing (NaN, as in PyTorch).
            return match opts.reduction {
                Reduction::None => Ok([loss, lse]),
                Reduction::Sum => self.fill_(&loss, 0.0).map(|_| [loss, lse]),
                Reduction::Mean => self.fill_(&loss, f64::NAN).map(|_| [loss, lse]),
            };
        }
        let blocks = n.min(super::plan::MAX_ROW_BLOCKS);
        let stats_bytes = stats_dtype(dtype).size_in_bytes();
        let scratch = self.alloc(CE_SCRATCH_BYTES + 2 * blocks * stats_bytes)?;
        self.memset_zero(scratch.ptr(), CE_SCRATCH_BYTES)?;
        let partials = scratch.ptr() + CE_SCRATCH_BYTES as u64;
        let mut args = KernelArgs::new();
        args.push(ptr(logits)?).push(ptr(target)?).push(p);
        args.push(ptr(&loss)?)
            .push(ptr(&lse)?)
            .push(partials)
            .push(scratch.ptr());
        let (status, seq) = self.status()?.args();
        args.push(status).push(seq);
        let cfg = LaunchConfig::linear(blocks as u32, super::plan::row_threads(p.classes as usize));
        self.launch(kernel, cfg, &mut args)?;
        Ok([loss, lse])
    }

    fn cross_entropy_backward(&self, a: &CrossEntropyGrad<'_>) -> Result<RawTensor> {
        const OP: &str = "cross_entropy_backward";
        let (logits, target, opts) = (a.input.logits, a.input.target, a.input.opts);
        let (lse, grad_loss) = (a.lse, a.grad_loss);
        let (dtype, device) = (logits.dtype(), logits.device());
        let kernels = k::CROSS_ENTROPY_BWD;
        let kernel = float_kernel(OP, dtype, device, kernels)?;
        let mut p = CeParams::new(logits, target, opts);
        let n = p.rows as usize;
        p.lse_s = vector_stride(OP, "lse", lse, n, stats_dtype(dtype))?;
        let per_row = opts.reduction == Reduction::None;
        let gs = vector_stride(
            OP,
            "grad_loss",
            grad_loss,
            if per_row { n } else { 1 },
            dtype,
        )?;
        p.gs = if per_row { gs } else { 0 };
        let dx = self.empty(logits.shape(), dtype)?;
        if dx.numel() == 0 {
            return Ok(dx);
        }
        let mut args = KernelArgs::new();
        args.push(ptr(logits)?)
            .push(ptr(target)?)
            .push(ptr(lse)?)
            .push(ptr(grad_loss)?)
            .push(p)
            .push(ptr(&dx)?);
        // With a mean, every block counts the non-ignored rows itself: fewer, fuller blocks.
        let cap = if opts.reduction == Reduction::Mean {
            256
        } else {
            super::plan::MAX_ROW_BLOCKS
        };
        let threads = super::plan::row_threads(p.classes as usize);
        self.launch(
            kernel,
            LaunchConfig::linear(n.min(cap) as u32, threads),
            &mut args,
        )?;
        Ok(dx)
    }
}
