//! The primitive operations every backend implements, declared once.
//!
//! Each trait is one family of primitives; a backend implements every family (the
//! [`Backend`] bound), so the compiler keeps the CPU and the GPU in step. Inputs are any
//! strided views inside their storage; outputs are new contiguous tensors. Arguments
//! reach a backend validated (dtypes, devices, shapes) by `tensor::prim`; a backend
//! checks only what that leaves open and never panics. In-place primitives end in `_`
//! and take a contiguous destination; the caller bumps its version.

use crate::base::{CpuStorage, DType, RawTensor, Result};

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural log
    Log,
    /// square root
    Sqrt,
    /// hyperbolic tangent
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `max(x, 0)`
    Relu,
    /// exact GELU, `x * Phi(x)`
    Gelu,
    /// tanh-approximated GELU
    GeluTanh,
    /// `1` where `x > 0`, else `0` (relu's derivative; 0 at 0)
    Step,
    /// derivative of exact GELU
    GeluGrad,
    /// derivative of tanh-approximated GELU
    GeluTanhGrad,
    /// `1 / x`
    Recip,
    /// `x * x`
    Square,
    /// `|x|`
    Abs,
}

impl UnaryOp {
    /// Every op, in declaration order.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const ALL: [UnaryOp; 15] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Step,
        UnaryOp::GeluGrad,
        UnaryOp::GeluTanhGrad,
        UnaryOp::Recip,
        UnaryOp::Square,
        UnaryOp::Abs,
    ];
}

/// Elementwise functions of two broadcast tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `0` where `b <= 0`, else `a`: relu's backward from its output `b` (torch's
    /// `threshold_backward`: a NaN `b` passes the gradient, a dead unit drops even a
    /// non-finite one).
    ThresholdBackward,
}

impl BinaryOp {
    /// Every op, in declaration order.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const ALL: [BinaryOp; 5] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::ThresholdBackward,
    ];
}

/// How a loss reduces over the batch.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Reduction {
    /// One loss per sample.
    None,
    /// The mean (over non-ignored samples, for cross-entropy).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// Options of cross-entropy with class indices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOpts {
    /// Targets equal to this contribute no loss and no gradient (`-100` by default).
    pub ignore_index: i64,
    /// Weight moved from the target class to a uniform distribution, in [0, 1].
    pub label_smoothing: f64,
    /// Reduction over samples.
    pub reduction: Reduction,
}

impl Default for CrossEntropyOpts {
    fn default() -> Self {
        CrossEntropyOpts {
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
        }
    }
}

/// The dtype of saved statistics (row means, log-sum-exps): f64 for f64 data, else f32.
#[cfg_attr(not(gpu), allow(dead_code))] // the GPU kernels allocate their statistics
pub(crate) fn stats_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Memory: new tensors, host transfers, copies, casts and fills.
pub(crate) trait Memory {
    /// A contiguous tensor of `shape` (zeroed on the CPU, uninitialised on a GPU: every
    /// caller writes all of it).
    fn empty(&self, shape: &[usize], dtype: DType) -> Result<RawTensor>;
    /// A contiguous tensor of `shape` holding `host` (whose length the caller checked is
    /// the shape's).
    fn upload(&self, host: CpuStorage, shape: &[usize]) -> Result<RawTensor>;
    /// The elements of any view in row-major order (waits for queued device work).
    fn download(&self, x: &RawTensor) -> Result<CpuStorage>;
    /// A contiguous copy converted to `dtype` (a plain copy when it is `x`'s).
    fn cast(&self, x: &RawTensor, dtype: DType) -> Result<RawTensor>;
    /// `dst = src` (same shape and dtype; `src` may be strided or overlap `dst`).
    fn copy_(&self, dst: &RawTensor, src: &RawTensor) -> Result<()>;
    /// `dst = host` (a contiguous `dst`; `host` of its dtype and element count).
    fn write_host(&self, dst: &RawTensor, host: &CpuStorage) -> Result<()>;
    /// Every element set to `value`, rounded once to the dtype.
    fn fill_(&self, t: &RawTensor, value: f64) -> Result<()>;
    /// Every element set to zero (a memset on a GPU).
    fn zero_(&self, t: &RawTensor) -> Result<()>;
}

/// Elementwise maps and in-place accumulation.
pub(crate) trait Elementwise {
    /// `op(x)`.
    fn unary(&self, op: UnaryOp, x: &RawTensor) -> Result<RawTensor>;
    /// `op(a, b)`, broadcast by PyTorch's rules.
    fn binary(&self, op: BinaryOp, a: &RawTensor, b: &RawTensor) -> Result<RawTensor>;
    /// `x * mul + add` (scalars in f32, or f64 for f64 tensors).
    fn affine(&self, x: &RawTensor, mul: f64, add: f64) -> Result<RawTensor>;
    /// `dst += alpha * src` (same shape; `src` may be strided or overlap `dst`).
    fn add_(&self, dst: &RawTensor, src: &RawTensor, alpha: f64) -> Result<()>;
}

/// Reductions.
pub(crate) trait Reductions {
    /// Sum over `dims` (sorted, unique, in range), accumulated in f32 (f64 for f64).
    fn sum_dims(&self, x: &RawTensor, dims: &[usize], keepdim: bool) -> Result<RawTensor>;
    /// Index of the largest element along the last dim (first on ties), as i64.
    fn argmax(&self, x: &RawTensor) -> Result<RawTensor>;
}

/// Matrix products.
pub(crate) trait Products: Elementwise {
    /// `a [.., m, k] @ b [.., k, n]` with equal batch dims, or a 2-D `b` shared by every
    /// batch. f16 accumulates in f32.
    fn matmul(&self, a: &RawTensor, b: &RawTensor) -> Result<RawTensor>;

    /// `a @ b`, then `+ bias` and then ReLU where asked (a linear layer's forward, with
    /// the ReLU that follows it), where `bias` is the row of `n` values broadcast to the
    /// product's shape: the bits of [`Self::matmul`] followed by [`Elementwise::add_`]
    /// and [`UnaryOp::Relu`], which is what this default runs; a backend may fold them
    /// into a pass the product makes anyway.
    fn matmul_epilogue(
        &self,
        operands: (&RawTensor, &RawTensor),
        bias: Option<&RawTensor>,
        relu: bool,
    ) -> Result<RawTensor> {
        matmul_then_epilogue(self, operands, bias, relu)
    }
}

/// [`Products::matmul_epilogue`] as separate ops: the product, the bias added in place,
/// ReLU.
pub(crate) fn matmul_then_epilogue<B: Products + ?Sized>(
    backend: &B,
    (a, b): (&RawTensor, &RawTensor),
    bias: Option<&RawTensor>,
    relu: bool,
) -> Result<RawTensor> {
    let y = backend.matmul(a, b)?;
    if let Some(bias) = bias {
        backend.add_(&y, bias, 1.0)?;
    }
    if relu {
        return backend.unary(UnaryOp::Relu, &y);
    }
    Ok(y)
}

/// The inputs of cross-entropy: `logits [N, C]`, class indices `target [N]` (i64).
#[derive(Clone, Copy)]
pub(crate) struct CrossEntropyIn<'a> {
    pub logits: &'a RawTensor,
    pub target: &'a RawTensor,
    pub opts: &'a CrossEntropyOpts,
}

/// The inputs of the cross-entropy gradient: the forward's, its statistics and the
/// gradient of the loss.
#[derive(Clone, Copy)]
pub(crate) struct CrossEntropyGrad<'a> {
    pub input: CrossEntropyIn<'a>,
    /// Each row's log-sum-exp from the forward.
    pub lse: &'a RawTensor,
    /// The gradient of the loss (shape `[]`, or `[N]` without reduction).
    pub grad_loss: &'a RawTensor,
}

/// Softmax and cross-entropy over the last dim.
pub(crate) trait Softmaxes {
    /// Softmax (or log-softmax), max-subtracted.
    fn softmax(&self, x: &RawTensor, log: bool) -> Result<RawTensor>;
    /// The gradient of [`Self::softmax`] from its output `y` and output gradient `dy`.
    fn softmax_backward(&self, y: &RawTensor, dy: &RawTensor, log: bool) -> Result<RawTensor>;
    /// Cross-entropy of `logits [N, C]` against class indices `target [N]` (i64): the loss
    /// (`[]`, or `[N]` without reduction) and each row's log-sum-exp ([`stats_dtype`]).
    /// A target outside `0..C` that is not `ignore_index` is an error.
    fn cross_entropy(&self, a: &CrossEntropyIn<'_>) -> Result<[RawTensor; 2]>;
    /// The gradient of [`Self::cross_entropy`] for the logits.
    fn cross_entropy_backward(&self, a: &CrossEntropyGrad<'_>) -> Result<RawTensor>;
}

/// The inputs of layer norm.
#[derive(Clone, Copy)]
pub(crate) struct LayerNormIn<'a> {
    pub x: &'a RawTensor,
    pub weight: Option<&'a RawTensor>,
    pub bias: Option<&'a RawTensor>,
    pub eps: f64,
}

/// The inputs of the layer-norm gradient: the output gradient, the forward's input and
/// weight, and its `[mean, rstd]` per row.
#[derive(Clone, Copy)]
pub(crate) struct LayerNormGrad<'a> {
    pub dy: &'a RawTensor,
    pub x: &'a RawTensor,
    pub stats: [&'a RawTensor; 2],
    pub weight: Option<&'a RawTensor>,
}

/// What the layer-norm gradient returns: `dx`, and `dweight`, `dbias` with a weight.
pub(crate) type LayerNormGrads = (RawTensor, Option<RawTensor>, Option<RawTensor>);

/// Normalisation over the last dim.
pub(crate) trait Norms {
    /// `y`, and each row's mean and reciprocal standard deviation ([`stats_dtype`]).
    fn layer_norm(&self, a: &LayerNormIn<'_>) -> Result<[RawTensor; 3]>;
    /// The gradients of [`Self::layer_norm`].
    fn layer_norm_backward(&self, a: &LayerNormGrad<'_>) -> Result<LayerNormGrads>;
}

/// Gathers and scatters by index.
pub(crate) trait Indexing {
    /// Rows of `weight [V, D]` picked by `idx` (i64, any shape): `idx.shape + [D]`. An
    /// index outside `0..V` is an error.
    fn embedding(&self, weight: &RawTensor, idx: &RawTensor) -> Result<RawTensor>;
    /// The weight's gradient `[num_embeddings, D]`: rows of `grad` summed per index.
    fn embedding_backward(
        &self,
        grad: &RawTensor,
        idx: &RawTensor,
        rows: usize,
    ) -> Result<RawTensor>;
}

/// Random tensors from counter-based generators (the same values on every device).
pub(crate) trait Random {
    /// Each element `1/(1-p)` with probability `1-p`, else 0, keyed by `seed`.
    fn dropout_mask(&self, shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<RawTensor>;
}

/// Everything a backend implements.
pub(crate) trait Backend:
    Memory + Elementwise + Reductions + Products + Softmaxes + Norms + Indexing + Random + Send + Sync
{
}

impl<T> Backend for T where
    T: Memory
        + Elementwise
        + Reductions
        + Products
        + Softmaxes
        + Norms
        + Indexing
        + Random
        + Send
        + Sync
{
}
