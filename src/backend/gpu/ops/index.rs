//! Embedding lookup and gradient, argmax: `kernels/index.cu`.
//!
//! Index validation: the lookup kernel never reads through an out-of-range index; it
//! records the first such position in a device word that the host reads back after the
//! launch (one 8-byte copy, which synchronises) to return an error, as the CPU backend
//! does. The gradient kernel skips out-of-range indices without a synchronisation.

use super::plan::{
    device_of, elementwise_config, empty, float_kernel, ptr, read_u64, Rows, StridedLayout,
};
use crate::backend::gpu::{kernels::k, KernelArgs};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// See [`crate::backend::dispatch::embedding`]. Synchronises once to check the indices.
pub fn embedding(weight: &Tensor, idx: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (dtype, device) = (weight.dtype(), weight.device());
    let kernel = float_kernel(
        OP,
        dtype,
        device,
        [
            k::EMBEDDING_FWD_F16,
            k::EMBEDDING_FWD_F32,
            k::EMBEDDING_FWD_F64,
        ],
    )?;
    let (v, d) = (weight.shape()[0], weight.shape()[1]);
    let ws = weight.layout().strides();
    let mut shape = idx.shape().to_vec();
    shape.push(d);
    let out = empty(&shape, dtype, device)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let dev = device_of(weight)?;
    let bad = dev.alloc_zeroed(8)?;
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
        .push(bad.ptr());
    dev.launch(kernel, elementwise_config(n), &mut args)?;
    let pos = read_u64(&dev, bad.ptr())?;
    if pos != 0 {
        let i = (pos - 1) as usize;
        let value = idx.to_vec::<i64>()?.get(i).copied().unwrap_or_default();
        return Err(Error::invalid(
            OP,
            format!("index {value} (position {i}) is outside 0..{v}"),
        ));
    }
    Ok(out)
}

/// See [`crate::backend::dispatch::embedding_backward`]: `grad` has shape
/// `idx.shape + [D]`. f32 and f64 accumulate with atomics straight into the result; f16
/// into an f32 buffer that is then cast.
pub fn embedding_backward(grad: &Tensor, idx: &Tensor, num_embeddings: usize) -> Result<Tensor> {
    const OP: &str = "embedding_backward";
    let (dtype, device) = (grad.dtype(), grad.device());
    let kernel = float_kernel(
        OP,
        dtype,
        device,
        [
            k::EMBEDDING_BWD_F16,
            k::EMBEDDING_BWD_F32,
            k::EMBEDDING_BWD_F64,
        ],
    )?;
    let d = grad.shape().last().copied().unwrap_or(0);
    if grad.rank() != idx.rank() + 1 || grad.shape()[..idx.rank()] != *idx.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: grad.shape().to_vec(),
            rhs: idx.shape().to_vec(),
        });
    }
    let acc_dtype = if dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    };
    let acc = Tensor::zeros(&[num_embeddings, d], acc_dtype, device)?;
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
        device_of(grad)?.launch(kernel, elementwise_config(n), &mut args)?;
    }
    if acc_dtype == dtype {
        Ok(acc)
    } else {
        super::copy::cast(&acc, dtype)
    }
}

/// See [`crate::backend::dispatch::argmax`]: the last dim must not be empty unless there
/// are no rows.
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "argmax";
    let kernel = float_kernel(
        OP,
        x.dtype(),
        x.device(),
        [k::ARGMAX_F16, k::ARGMAX_F32, k::ARGMAX_F64],
    )?;
    let rows = Rows::of(OP, x)?;
    let shape = &x.shape()[..x.rank().saturating_sub(1)];
    let out = empty(shape, DType::I64, x.device())?;
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
    device_of(x)?.launch(kernel, rows.launch_config(), &mut args)?;
    Ok(out)
}
