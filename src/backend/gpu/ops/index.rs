//! Embedding lookup and gradient, argmax: `kernels/index.cu`.
//!
//! Index validation: the lookup kernel never reads through an out-of-range index; it
//! writes NaN there and reports the first such position in the device's sticky error
//! record, which the host reads at its next synchronisation (see `gpu::Status`). The
//! gradient kernel skips out-of-range indices.

use super::plan::{elementwise_config, float_kernel, ptr, zeros, StridedLayout};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs};
use crate::backend::{Indexing, Memory};
use crate::base::{DType, RawTensor, Result};

impl Indexing for GpuDevice {
    fn embedding(&self, weight: &RawTensor, idx: &RawTensor) -> Result<RawTensor> {
        const OP: &str = "embedding";
        let (dtype, device) = (weight.dtype(), weight.device());
        let kernel = float_kernel(OP, dtype, device, k::EMBEDDING_FWD)?;
        let (v, d) = (weight.shape()[0], weight.shape()[1]);
        let ws = weight.layout().strides();
        let mut shape = idx.shape().to_vec();
        shape.push(d);
        let out = self.empty(&shape, dtype)?;
        let n = out.numel();
        if n == 0 {
            return Ok(out);
        }
        let (status, seq) = self.status()?.args();
        let mut args = KernelArgs::new();
        args.push(ptr(weight)?)
            .push(ws[0] as u64)
            .push(ws[1] as u64);
        args.push(ptr(idx)?)
            .push(StridedLayout::of(OP, idx)?)
            .push(idx.numel() as u64);
        args.push(v as u64)
            .push(d as u64)
            .push(ptr(&out)?)
            .push(status)
            .push(seq);
        self.launch(kernel, elementwise_config(n), &mut args)?;
        Ok(out)
    }

    fn embedding_backward(
        &self,
        grad: &RawTensor,
        idx: &RawTensor,
        num_embeddings: usize,
    ) -> Result<RawTensor> {
        const OP: &str = "embedding_backward";
        let (dtype, device) = (grad.dtype(), grad.device());
        let kernel = float_kernel(OP, dtype, device, k::EMBEDDING_BWD)?;
        let d = grad.shape().last().copied().unwrap_or(0);
        let acc_dtype = if matches!(dtype, DType::F16 | DType::BF16) {
            DType::F32
        } else {
            dtype
        };
        let acc = zeros(self, &[num_embeddings, d], acc_dtype)?;
        let n = grad.numel();
        if n > 0 {
            let mut args = KernelArgs::new();
            args.push(ptr(grad)?).push(StridedLayout::of(OP, grad)?);
            args.push(ptr(idx)?)
                .push(StridedLayout::of(OP, idx)?)
                .push(idx.numel() as u64);
            args.push(num_embeddings as u64)
                .push(d as u64)
                .push(ptr(&acc)?);
            self.launch(kernel, elementwise_config(n), &mut args)?;
        }
        if acc_dtype == dtype {
            Ok(acc)
        } else {
            self.cast(&acc, dtype)
        }
    }
}
