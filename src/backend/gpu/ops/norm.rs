//! Layer norm forward and backward: `kernels/norm.cu`.

use super::plan::{float_kernel, opt_ptr, ptr, vector_stride, Rows};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, LaunchConfig};
use crate::backend::{stats_dtype, LayerNormGrad, LayerNormGrads, LayerNormIn, Memory, Norms};
use crate::base::{Error, RawTensor, Result};

/// Columns covered by one block of `layer_norm_bwd_params` (`LN_COLS` x `LN_SLICES`
/// threads in norm.cu).
const LN_COLS: usize = 32;
const LN_SLICES: u32 = 8;

/// Element stride of an optional 1-D parameter (0 when absent).
fn param_stride(p: Option<&RawTensor>) -> u64 {
    p.and_then(|t| t.layout().strides().first().copied())
        .unwrap_or(0) as u64
}

impl Norms for GpuDevice {
    fn layer_norm(&self, a: &LayerNormIn<'_>) -> Result<[RawTensor; 3]> {
        const OP: &str = "layer_norm";
        let (x, weight, bias, eps) = (a.x, a.weight, a.bias, a.eps);
        let (dtype, device) = (x.dtype(), x.device());
        let kernel = float_kernel(OP, dtype, device, k::LAYER_NORM_FWD)?;
        let rows = Rows::of(OP, x)?;
        let y = self.empty(x.shape(), dtype)?;
        let mean = self.empty(&[rows.rows], stats_dtype(dtype))?;
        let rstd = self.empty(&[rows.rows], stats_dtype(dtype))?;
        if rows.rows == 0 {
            return Ok([y, mean, rstd]);
        }
        let mut args = KernelArgs::new();
        args.push(ptr(x)?);
        rows.push(&mut args);
        args.push(opt_ptr(weight)?).push(param_stride(weight));
        args.push(opt_ptr(bias)?).push(param_stride(bias));
        args.push(ptr(&y)?).push(ptr(&mean)?).push(ptr(&rstd)?);
        args.push(rows.rows as u64).push(rows.cols as u64).push(eps);
        self.launch(kernel, rows.launch_config(), &mut args)?;
        Ok([y, mean, rstd])
    }

    fn layer_norm_backward(&self, a: &LayerNormGrad<'_>) -> Result<LayerNormGrads> {
        const OP: &str = "layer_norm_backward";
        let (dy, x, [mean, rstd], weight) = (a.dy, a.x, a.stats, a.weight);
        let (dtype, device) = (x.dtype(), x.device());
        if dy.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: dy.shape().to_vec(),
                rhs: x.shape().to_vec(),
            });
        }
        let (xr, dr) = (Rows::of(OP, x)?, Rows::of(OP, dy)?);
        if let Some(w) = weight {
            if w.shape() != [xr.cols] || w.dtype() != dtype {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "weight must be [{}] of {dtype}, got {:?} of {}",
                        xr.cols,
                        w.shape(),
                        w.dtype()
                    ),
                ));
            }
        }
        let ms = vector_stride(OP, "mean", mean, xr.rows, stats_dtype(dtype))?;
        let rss = vector_stride(OP, "rstd", rstd, xr.rows, stats_dtype(dtype))?;
        let dx_kernels = k::LAYER_NORM_BWD_DX;
        let dx_kernel = float_kernel(OP, dtype, device, dx_kernels)?;
        // The arguments both kernels start with: dy, x and the statistics.
        let common = |args: &mut KernelArgs| -> Result<()> {
            args.push(ptr(dy)?);
            dr.push(args);
            args.push(ptr(x)?);
            xr.push(args);
            args.push(ptr(mean)?).push(ms).push(ptr(rstd)?).push(rss);
            Ok(())
        };
        let dx = self.empty(x.shape(), dtype)?;
        if dx.numel() > 0 {
            let mut args = KernelArgs::new();
            common(&mut args)?;
            args.push(opt_ptr(weight)?).push(param_stride(weight));
            args.push(ptr(&dx)?)
                .push(xr.rows as u64)
                .push(xr.cols as u64);
            self.launch(dx_kernel, xr.launch_config(), &mut args)?;
        }
        if weight.is_none() {
            return Ok((dx, None, None));
        }
        let dw = self.empty(&[xr.cols], dtype)?;
        let db = self.empty(&[xr.cols], dtype)?;
        if xr.cols > 0 {
            let kernels = k::LAYER_NORM_BWD_PARAMS;
            let kernel = float_kernel(OP, dtype, device, kernels)?;
            let mut args = KernelArgs::new();
            common(&mut args)?;
            args.push(ptr(&dw)?)
                .push(ptr(&db)?)
                .push(xr.rows as u64)
                .push(xr.cols as u64);
            let blocks = xr.cols.div_ceil(LN_COLS).min(super::plan::MAX_ROW_BLOCKS) as u32;
            self.launch(
                kernel,
                LaunchConfig::linear(blocks, LN_COLS as u32 * LN_SLICES),
                &mut args,
            )?;
        }
        Ok((dx, Some(dw), Some(db)))
    }
}
