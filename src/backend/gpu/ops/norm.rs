//! Layer norm forward and backward: `kernels/norm.cu`.

use super::plan::{device_of, empty, float_kernel, opt_ptr, ptr, vector_stride, Rows};
use crate::backend::dispatch::stats_dtype;
use crate::backend::gpu::{kernels::k, KernelArgs, LaunchConfig};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Columns covered by one block of `layer_norm_bwd_params` (`LN_COLS` x `LN_SLICES`
/// threads in norm.cu).
const LN_COLS: usize = 32;
const LN_SLICES: u32 = 8;

/// Element stride of an optional 1-D parameter (0 when absent).
fn param_stride(p: Option<&Tensor>) -> u64 {
    p.and_then(|t| t.layout().strides().first().copied())
        .unwrap_or(0) as u64
}

/// See [`crate::backend::dispatch::layer_norm`].
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm";
    let (dtype, device) = (x.dtype(), x.device());
    let kernel = float_kernel(
        OP,
        dtype,
        device,
        [
            k::LAYER_NORM_FWD_F16,
            k::LAYER_NORM_FWD_F32,
            k::LAYER_NORM_FWD_F64,
        ],
    )?;
    let rows = Rows::of(OP, x)?;
    let y = empty(x.shape(), dtype, device)?;
    let mean = empty(&[rows.rows], stats_dtype(dtype), device)?;
    let rstd = empty(&[rows.rows], stats_dtype(dtype), device)?;
    if rows.rows == 0 {
        return Ok((y, mean, rstd));
    }
    let mut args = KernelArgs::new();
    args.push(ptr(x)?);
    rows.push(&mut args);
    args.push(opt_ptr(weight)?).push(param_stride(weight));
    args.push(opt_ptr(bias)?).push(param_stride(bias));
    args.push(ptr(&y)?).push(ptr(&mean)?).push(ptr(&rstd)?);
    args.push(rows.rows as u64).push(rows.cols as u64).push(eps);
    device_of(x)?.launch(kernel, rows.launch_config(), &mut args)?;
    Ok((y, mean, rstd))
}

/// See [`crate::backend::dispatch::layer_norm_backward`].
pub fn layer_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    const OP: &str = "layer_norm_backward";
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
    let dx_kernels = [
        k::LAYER_NORM_BWD_DX_F16,
        k::LAYER_NORM_BWD_DX_F32,
        k::LAYER_NORM_BWD_DX_F64,
    ];
    let dx_kernel = float_kernel(OP, dtype, device, dx_kernels)?;
    let dev = device_of(x)?;
    // The arguments both kernels start with: dy, x and the statistics.
    let common = |args: &mut KernelArgs| -> Result<()> {
        args.push(ptr(dy)?);
        dr.push(args);
        args.push(ptr(x)?);
        xr.push(args);
        args.push(ptr(mean)?).push(ms).push(ptr(rstd)?).push(rss);
        Ok(())
    };
    let dx = empty(x.shape(), dtype, device)?;
    if dx.numel() > 0 {
        let mut args = KernelArgs::new();
        common(&mut args)?;
        args.push(opt_ptr(weight)?).push(param_stride(weight));
        args.push(ptr(&dx)?)
            .push(xr.rows as u64)
            .push(xr.cols as u64);
        dev.launch(dx_kernel, xr.launch_config(), &mut args)?;
    }
    if weight.is_none() {
        return Ok((dx, None, None));
    }
    let dw = empty(&[xr.cols], dtype, device)?;
    let db = empty(&[xr.cols], dtype, device)?;
    if xr.cols > 0 {
        let kernels = [
            k::LAYER_NORM_BWD_PARAMS_F16,
            k::LAYER_NORM_BWD_PARAMS_F32,
            k::LAYER_NORM_BWD_PARAMS_F64,
        ];
        let kernel = float_kernel(OP, dtype, device, kernels)?;
        let mut args = KernelArgs::new();
        common(&mut args)?;
        args.push(ptr(&dw)?)
            .push(ptr(&db)?)
            .push(xr.rows as u64)
            .push(xr.cols as u64);
        let blocks = xr.cols.div_ceil(LN_COLS).min(super::plan::MAX_ROW_BLOCKS) as u32;
        dev.launch(
            kernel,
            LaunchConfig::linear(blocks, LN_COLS as u32 * LN_SLICES),
            &mut args,
        )?;
    }
    Ok((dx, Some(dw), Some(db)))
}
