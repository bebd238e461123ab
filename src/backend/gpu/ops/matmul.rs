//! Matrix products: a vendor GEMM where the device has one (cuBLAS), else the tiled
//! kernel of `kernels/matmul.cu` (the emulator).

use super::plan::{float_kernel, ptr, StridedLayout};
use crate::backend::gpu::{kernels::k, GemmDesc, GpuDevice, KernelArgs, LaunchConfig};
use crate::backend::{Memory, Products};
use crate::base::{RawTensor, Result};

/// Sizes and strides of one batched product; mirrors `GemmParams` in matmul.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GemmParams {
    m: u64,
    n: u64,
    k: u64,
    batch: u64,
    a_batch: u64,
    a_row: u64,
    a_col: u64,
    b_batch: u64,
    b_row: u64,
    b_col: u64,
}

/// Tile edge of the kernel (`TILE` in matmul.cu); blocks are TILE x TILE threads.
const TILE: usize = 16;
/// Grid cap per dimension of the kernel (it strides over tiles and batches).
const MAX_GRID: usize = 1024;

/// One operand as a batched matrix: its tensor (or a contiguous copy), batch stride,
/// row stride and column stride in elements.
struct Operand {
    t: RawTensor,
    batch: usize,
    row: usize,
    col: usize,
}

impl Operand {
    /// `t` viewed as `[batch..., rows, cols]`, its batch dims merged into one stride (a
    /// contiguous copy when they cannot be). `shared`: one matrix for every batch.
    fn new(dev: &GpuDevice, t: &RawTensor, shared: bool) -> Result<Operand> {
        let r = t.rank();
        let (shape, strides) = (t.shape(), t.layout().strides());
        let merged = StridedLayout::new("matmul", &shape[..r - 2], &strides[..r - 2])?;
        let t = if merged.rank() <= 1 {
            t.clone()
        } else {
            dev.cast(t, t.dtype())?
        };
        let strides = t.layout().strides();
        let batch = if shared { 0 } else { merged_stride(&t) };
        Ok(Operand {
            batch,
            row: strides[r - 2],
            col: strides[r - 1],
            t,
        })
    }

    /// `(transposed, leading dim)` as a BLAS takes a `rows x cols` matrix, when one of
    /// its strides is 1 (after giving size-1 dims their natural stride).
    fn blas(&self, rows: usize, cols: usize) -> Option<(bool, usize)> {
        let row = if rows == 1 { cols.max(1) } else { self.row };
        let col = if cols == 1 { 1 } else { self.col };
        if col == 1 && row >= cols.max(1) {
            Some((false, row))
        } else if row == 1 && col >= rows.max(1) {
            Some((true, col))
        } else {
            None
        }
    }

    /// The same operand as a dense copy.
    fn dense(self, dev: &GpuDevice, shared: bool) -> Result<Operand> {
        let c = dev.cast(&self.t, self.t.dtype())?;
        Operand::new(dev, &c, shared)
    }
}

/// The stride of the merged batch dims of `t` (0 when there is at most one batch).
fn merged_stride(t: &RawTensor) -> usize {
    let r = t.rank();
    let (shape, strides) = (t.shape(), t.layout().strides());
    (0..r - 2)
        .rev()
        .find(|&d| shape[d] != 1)
        .map_or(0, |d| strides[d])
}

impl Products for GpuDevice {
    fn matmul(&self, a: &RawTensor, b: &RawTensor) -> Result<RawTensor> {
        const OP: &str = "matmul";
        let (dtype, device) = (a.dtype(), a.device());
        let kernel = float_kernel(OP, dtype, device, k::MATMUL)?;
        let ra = a.rank();
        let (m, kk, n) = (
            a.shape()[ra - 2],
            a.shape()[ra - 1],
            b.shape()[b.rank() - 1],
        );
        let mut shape = a.shape()[..ra - 2].to_vec();
        let batch: usize = shape.iter().product();
        shape.extend([m, n]);
        let out = self.empty(&shape, dtype)?;
        if out.numel() == 0 {
            return Ok(out);
        }
        if kk == 0 {
            self.zero_(&out)?;
            return Ok(out);
        }
        let shared_b = b.rank() == 2;
        let mut oa = Operand::new(self, a, false)?;
        let mut ob = Operand::new(self, b, shared_b)?;
        if oa.blas(m, kk).is_none() {
            oa = oa.dense(self, false)?;
        }
        if ob.blas(kk, n).is_none() {
            ob = ob.dense(self, shared_b)?;
        }
        let ((trans_a, lda), (trans_b, ldb)) = (
            oa.blas(m, kk).unwrap_or((false, kk)),
            ob.blas(kk, n).unwrap_or((false, n)),
        );
        let desc = GemmDesc {
            dtype,
            trans_a,
            trans_b,
            m,
            n,
            k: kk,
            a: ptr(&oa.t)?,
            lda,
            stride_a: oa.batch,
            b: ptr(&ob.t)?,
            ldb,
            stride_b: ob.batch,
            c: ptr(&out)?,
            ldc: n,
            stride_c: m * n,
            batch,
            alpha: 1.0,
            beta: 0.0,
        };
        if self.gemm(&desc)? {
            return Ok(out);
        }
        let g = GemmParams {
            m: m as u64,
            n: n as u64,
            k: kk as u64,
            batch: batch as u64,
            a_batch: oa.batch as u64,
            a_row: oa.row as u64,
            a_col: oa.col as u64,
            b_batch: ob.batch as u64,
            b_row: ob.row as u64,
            b_col: ob.col as u64,
        };
        let grid = |len: usize| len.div_ceil(TILE).clamp(1, MAX_GRID) as u32;
        let cfg = LaunchConfig {
            grid: (grid(n), grid(m), batch.clamp(1, MAX_GRID) as u32),
            block: (TILE as u32, TILE as u32, 1),
            shared_bytes: 0,
        };
        let mut args = KernelArgs::new();
        args.push(desc.a).push(desc.b).push(desc.c).push(g);
        self.launch(kernel, cfg, &mut args)?;
        Ok(out)
    }
}
