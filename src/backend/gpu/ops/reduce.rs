//! Sums over dims (`kernels/reduce.cu`) and argmax (`kernels/index.cu`).

use super::plan::{
    elementwise_config, float_kernel, ptr, row_threads, Rows, StridedLayout, MAX_ROW_BLOCKS,
};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, LaunchConfig};
use crate::backend::{Memory, Reductions};
use crate::base::{DType, Error, RawTensor, Result};

/// Reductions shorter than this run one thread per output (`sum_cols`); longer ones one
/// block per output (`sum_rows`).
const SHORT_REDUCTION: usize = 64;

impl Reductions for GpuDevice {
    fn sum_dims(&self, x: &RawTensor, dims: &[usize], keepdim: bool) -> Result<RawTensor> {
        const OP: &str = "sum";
        let (shape, strides) = (x.shape(), x.layout().strides());
        let (mut kept_shape, mut kept_strides, mut red_shape, mut red_strides) =
            (vec![], vec![], vec![], vec![]);
        let mut out_shape = Vec::with_capacity(shape.len());
        for d in 0..shape.len() {
            if dims.contains(&d) {
                red_shape.push(shape[d]);
                red_strides.push(strides[d]);
                if keepdim {
                    out_shape.push(1);
                }
            } else {
                kept_shape.push(shape[d]);
                kept_strides.push(strides[d]);
                out_shape.push(shape[d]);
            }
        }
        let (n_out, n_red): (usize, usize) =
            (kept_shape.iter().product(), red_shape.iter().product());
        let rows = k::SUM_ROWS;
        let cols = k::SUM_COLS;
        let short = n_red < SHORT_REDUCTION;
        let kernel = float_kernel(OP, x.dtype(), x.device(), if short { cols } else { rows })?;
        let out = self.empty(&out_shape, x.dtype())?;
        if n_out == 0 {
            return Ok(out);
        }
        let cfg = if short {
            elementwise_config(n_out)
        } else {
            LaunchConfig::linear(n_out.min(MAX_ROW_BLOCKS) as u32, row_threads(n_red))
        };
        let mut args = KernelArgs::new();
        args.push(ptr(x)?)
            .push(StridedLayout::new(OP, &kept_shape, &kept_strides)?)
            .push(StridedLayout::new(OP, &red_shape, &red_strides)?)
            .push(ptr(&out)?)
            .push(n_out as u64)
            .push(n_red as u64);
        self.launch(kernel, cfg, &mut args)?;
        Ok(out)
    }

    fn argmax(&self, x: &RawTensor) -> Result<RawTensor> {
        const OP: &str = "argmax";
        let kernel = float_kernel(OP, x.dtype(), x.device(), k::ARGMAX)?;
        let rows = Rows::of(OP, x)?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        let out = self.empty(shape, DType::I64)?;
        if rows.rows == 0 {
            return Ok(out);
        }
        if rows.cols == 0 {
            return Err(Error::invalid(
                OP,
                format!("no maximum of an empty last dim (shape {:?})", x.shape()),
            ));
        }
        let mut args = KernelArgs::new();
        args.push(ptr(x)?);
        rows.push(&mut args);
        args.push(ptr(&out)?)
            .push(rows.rows as u64)
            .push(rows.cols as u64);
        self.launch(kernel, rows.launch_config(), &mut args)?;
        Ok(out)
    }
}
