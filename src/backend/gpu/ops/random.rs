//! Dropout masks: `kernels/random.cu`.

use super::plan::{elementwise_config, empty, float_kernel, ptr};
use crate::backend::gpu::{self, kernels::k, KernelArgs};
use crate::error::Result;
use crate::tensor::{DType, Device};

/// See [`crate::backend::dispatch::dropout_mask`]: `p` is in [0, 1).
pub fn dropout_mask(
    shape: &[usize],
    p: f64,
    seed: u64,
    dtype: DType,
    device: Device,
) -> Result<crate::tensor::Tensor> {
    let kernels = [
        k::DROPOUT_MASK_F16,
        k::DROPOUT_MASK_F32,
        k::DROPOUT_MASK_F64,
    ];
    let kernel = float_kernel("dropout", dtype, device, kernels)?;
    let out = empty(shape, dtype, device)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    // The kept value, 1 / (1 - p), computed in the dtype's compute precision.
    let scale = if dtype == DType::F64 {
        1.0 / (1.0 - p)
    } else {
        (1.0f32 / (1.0f32 - p as f32)) as f64
    };
    let mut args = KernelArgs::new();
    args.push(ptr(&out)?)
        .push(n as u64)
        .push(seed)
        .push(p)
        .push(scale);
    gpu::get(device)?.launch(kernel, elementwise_config(n), &mut args)?;
    Ok(out)
}
