//! Dropout masks: `kernels/random.cu`.

use super::plan::{elementwise_config, float_kernel, ptr};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs};
use crate::backend::{Memory, Random};
use crate::base::{DType, RawTensor, Result};

impl Random for GpuDevice {
    fn dropout_mask(&self, shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<RawTensor> {
        if self.capturing() {
            return Err(crate::backend::gpu::graph::refused(
                "dropout (its seed is a host value that every replay would repeat)",
            ));
        }
        let device = self.device();
        let kernels = k::DROPOUT_MASK;
        let kernel = float_kernel("dropout", dtype, device, kernels)?;
        let out = self.empty(shape, dtype)?;
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
        self.launch(kernel, elementwise_config(n), &mut args)?;
        Ok(out)
    }
}
