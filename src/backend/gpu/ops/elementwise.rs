//! Unary, binary (broadcast), affine and in-place accumulation: `kernels/elementwise.cu`.

use super::plan::{elementwise_config, float_kernel, ptr, StridedLayout};
use crate::backend::gpu::{kernels::k, GpuDevice, KernelArgs, KernelId};
use crate::backend::{BinaryOp, Elementwise, Memory, UnaryOp};
use crate::base::{broadcast_shapes, RawTensor, Result};

/// The kernel's code of a unary op (`UnaryCode` in elementwise.cu).
fn unary_code(op: UnaryOp) -> i32 {
    match op {
        UnaryOp::Neg => 0,
        UnaryOp::Exp => 1,
        UnaryOp::Log => 2,
        UnaryOp::Sqrt => 3,
        UnaryOp::Tanh => 4,
        UnaryOp::Sigmoid => 5,
        UnaryOp::Relu => 6,
        UnaryOp::Gelu => 7,
        UnaryOp::GeluTanh => 8,
        UnaryOp::Step => 9,
        UnaryOp::GeluGrad => 10,
        UnaryOp::GeluTanhGrad => 11,
        UnaryOp::Recip => 12,
        UnaryOp::Square => 13,
        UnaryOp::Abs => 14,
    }
}

/// The kernel's code of a binary op (`BinaryCode` in elementwise.cu).
fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::ThresholdBackward => 4,
    }
}

/// Allocates a dense output like `x` (of `shape`) and launches a map kernel whose
/// arguments are `inputs` (pointer and layout each), the output pointer, `n`, then
/// whatever `extra` pushes.
fn map(
    dev: &GpuDevice,
    op: &'static str,
    kernels: [KernelId; 4],
    x: &RawTensor,
    inputs: &[(&RawTensor, StridedLayout)],
    shape: &[usize],
    extra: impl FnOnce(&mut KernelArgs),
) -> Result<RawTensor> {
    let kernel = float_kernel(op, x.dtype(), x.device(), kernels)?;
    let out = dev.empty(shape, x.dtype())?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let mut args = KernelArgs::new();
    for (t, l) in inputs {
        args.push(ptr(t)?).push(*l);
    }
    args.push(ptr(&out)?).push(n as u64);
    extra(&mut args);
    dev.launch(kernel, elementwise_config(n), &mut args)?;
    Ok(out)
}

impl Elementwise for GpuDevice {
    fn unary(&self, op: UnaryOp, x: &RawTensor) -> Result<RawTensor> {
        let xl = StridedLayout::of("unary", x)?;
        map(self, "unary", k::UNARY, x, &[(x, xl)], x.shape(), |a| {
            a.push(unary_code(op));
        })
    }

    fn binary(&self, op: BinaryOp, a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
        let shape = &broadcast_shapes("binary", a.shape(), b.shape())?;
        let view = |t: &RawTensor| -> Result<StridedLayout> {
            let l = t.layout().broadcast_to(shape)?;
            StridedLayout::new("binary", l.shape(), l.strides())
        };
        let inputs = [(a, view(a)?), (b, view(b)?)];
        map(self, "binary", k::BINARY, a, &inputs, shape, |args| {
            args.push(binary_code(op));
        })
    }

    fn affine(&self, x: &RawTensor, mul: f64, add: f64) -> Result<RawTensor> {
        let xl = StridedLayout::of("affine", x)?;
        map(self, "affine", k::AFFINE, x, &[(x, xl)], x.shape(), |a| {
            a.push(mul).push(add);
        })
    }

    fn add_(&self, dst: &RawTensor, src: &RawTensor, alpha: f64) -> Result<()> {
        let kernels = k::ADD_INPLACE;
        let kernel = float_kernel("add_", dst.dtype(), dst.device(), kernels)?;
        let n = dst.numel();
        if n == 0 {
            return Ok(());
        }
        let mut args = KernelArgs::new();
        args.push(ptr(dst)?).push(StridedLayout::dense());
        args.push(ptr(src)?).push(StridedLayout::of("add_", src)?);
        args.push(n as u64).push(alpha);
        self.launch(kernel, elementwise_config(n), &mut args)
    }
}
