//! Launch planning shared by every op family: strided layouts as kernels see them,
//! row views, per-dtype kernel choice, output allocation and launch shapes.

use crate::backend::gpu::{GpuDevice, KernelArgs, KernelId, LaunchConfig};
use crate::backend::Memory;
use crate::base::{DType, Device, Error, RawTensor, Result};

/// Maximum rank of a strided view passed to a kernel (after merging dims).
pub(super) const MAX_RANK: usize = 8;
/// Threads per block of elementwise (grid-stride) kernels.
pub(super) const THREADS: u32 = 256;
/// Block cap of grid-stride kernels.
pub(super) const MAX_BLOCKS: u32 = 1024;
/// Block cap of one-block-per-row kernels (they stride over the remaining rows).
pub(super) const MAX_ROW_BLOCKS: usize = 4096;

/// Shape and element strides of a view as a kernel reads it; mirrors `GsLayout` in
/// `kernels/common.cuh`. Rank 0 means dense (element `i` at `i`). The view's offset is
/// applied to the pointer passed next to it, not stored here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StridedLayout {
    rank: u64,
    shape: [u64; MAX_RANK],
    strides: [u64; MAX_RANK],
}

impl StridedLayout {
    /// A dense view (row-major without gaps).
    pub(super) fn dense() -> Self {
        Self::default()
    }

    /// The layout of `shape`/`strides` with size-1 dims dropped and mergeable neighbours
    /// merged; dense when what is left is one dim of stride 1 (or nothing).
    pub(super) fn new(op: &'static str, shape: &[usize], strides: &[usize]) -> Result<Self> {
        let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
        for (&s, &st) in shape.iter().zip(strides) {
            if s == 1 {
                continue;
            }
            match dims.last_mut() {
                Some(last) if last.1 == s * st => *last = (last.0 * s, st),
                _ => dims.push((s, st)),
            }
        }
        if dims.is_empty() || (dims.len() == 1 && dims[0].1 == 1) {
            return Ok(Self::dense());
        }
        if dims.len() > MAX_RANK {
            return Err(Error::invalid(
                op,
                format!("a view of shape {shape:?} and strides {strides:?} has more than {MAX_RANK} non-mergeable dims"),
            ));
        }
        let mut l = Self {
            rank: dims.len() as u64,
            ..Self::default()
        };
        for (d, (s, st)) in dims.into_iter().enumerate() {
            l.shape[d] = s as u64;
            l.strides[d] = st as u64;
        }
        Ok(l)
    }

    /// The layout of a tensor's view.
    pub(super) fn of(op: &'static str, t: &RawTensor) -> Result<Self> {
        Self::new(op, t.shape(), t.layout().strides())
    }

    /// Number of dims left after merging (0: dense).
    pub(super) fn rank(&self) -> usize {
        self.rank as usize
    }
}

/// A tensor seen as rows over its last dim: `rows` rows of `cols` elements, row `r` at
/// `offset(rows_layout, r)` and column `j` at `+ j * col_stride`. A 0-d tensor is one
/// row of one element.
pub(super) struct Rows {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) layout: StridedLayout,
    pub(super) col_stride: u64,
}

impl Rows {
    /// The row view of `t`.
    pub(super) fn of(op: &'static str, t: &RawTensor) -> Result<Self> {
        let (shape, strides) = (t.shape(), t.layout().strides());
        let Some((&cols, lead)) = shape.split_last() else {
            return Ok(Rows {
                rows: 1,
                cols: 1,
                layout: StridedLayout::dense(),
                col_stride: 1,
            });
        };
        let r = shape.len() - 1;
        Ok(Rows {
            rows: lead.iter().product(),
            cols,
            layout: StridedLayout::new(op, lead, &strides[..r])?,
            col_stride: strides[r] as u64,
        })
    }

    /// Pushes the layout and the column stride (the order row kernels take them in).
    pub(super) fn push(&self, args: &mut KernelArgs) {
        args.push(self.layout).push(self.col_stride);
    }

    /// One block per row (capped), with enough threads for the row length.
    pub(super) fn launch_config(&self) -> LaunchConfig {
        LaunchConfig::linear(
            self.rows.clamp(1, MAX_ROW_BLOCKS) as u32,
            row_threads(self.cols),
        )
    }
}

/// Threads for a block that shares one row of `len` elements: a power of two in
/// 32..=1024, about four elements per thread.
pub(super) fn row_threads(len: usize) -> u32 {
    (len / 4).next_power_of_two().clamp(32, 1024) as u32
}

/// A grid-stride launch over `n` elements.
pub(super) fn elementwise_config(n: usize) -> LaunchConfig {
    LaunchConfig::for_elements(n, THREADS, 4, MAX_BLOCKS)
}

/// The kernel of a family (`k::UNARY`: f16, bf16, f32, f64 variants) for `dtype`.
pub(super) fn float_kernel(
    op: &'static str,
    dtype: DType,
    device: Device,
    kernels: [KernelId; 4],
) -> Result<KernelId> {
    crate::backend::gpu::kernels::of_dtype(kernels, dtype).ok_or(Error::Unsupported {
        op,
        dtype,
        device,
    })
}

/// Device address of a tensor's first element, for a kernel argument.
pub(super) fn ptr(t: &RawTensor) -> Result<u64> {
    t.device_ptr()
}

/// Device address of an optional tensor (0, a null pointer, for none).
pub(super) fn opt_ptr(t: Option<&RawTensor>) -> Result<u64> {
    t.map_or(Ok(0), ptr)
}

/// A new dense tensor of zeros.
pub(super) fn zeros(dev: &GpuDevice, shape: &[usize], dtype: DType) -> Result<RawTensor> {
    let t = dev.empty(shape, dtype)?;
    dev.memset_zero(t.device_ptr()?, t.numel() * dtype.size_in_bytes())?;
    Ok(t)
}

/// Checks that a 1-D helper tensor (statistics, per-row gradients) has `n` elements of
/// `dtype`, and returns its element stride.
pub(super) fn vector_stride(
    op: &'static str,
    what: &str,
    t: &RawTensor,
    n: usize,
    dtype: DType,
) -> Result<u64> {
    if t.numel() != n || t.rank() > 1 || t.dtype() != dtype {
        return Err(Error::invalid(
            op,
            format!(
                "{what} must have {n} elements of {dtype} in at most one dim, got shape {:?} of {}",
                t.shape(),
                t.dtype()
            ),
        ));
    }
    Ok(t.layout().strides().first().copied().unwrap_or(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_makes_contiguous_views_dense() {
        assert!(
            StridedLayout::new("t", &[2, 3, 4], &[12, 4, 1])
                .unwrap()
                .rank()
                == 0
        );
        assert!(
            StridedLayout::new("t", &[1, 5, 1], &[7, 1, 9])
                .unwrap()
                .rank()
                == 0
        );
        assert!(StridedLayout::new("t", &[], &[]).unwrap().rank() == 0);
    }

    #[test]
    fn strided_views_keep_their_dims() {
        // A transposed [3, 2] view of a [2, 3] tensor.
        let l = StridedLayout::new("t", &[3, 2], &[1, 3]).unwrap();
        assert_eq!(
            (l.rank, &l.shape[..2], &l.strides[..2]),
            (2, &[3u64, 2][..], &[1u64, 3][..])
        );
        // A broadcast row: stride 0 stays.
        let b = StridedLayout::new("t", &[4, 5], &[0, 1]).unwrap();
        assert_eq!((b.rank, b.shape[0], b.strides[0]), (2, 4, 0));
        // Rows of a wider buffer: [2, 3] with row stride 5 cannot merge.
        let w = StridedLayout::new("t", &[2, 3], &[5, 1]).unwrap();
        assert_eq!(w.rank, 2);
    }

    #[test]
    fn too_many_dims_is_an_error() {
        let shape = [2usize; 9];
        let strides: Vec<usize> = (0..9).map(|d| 1 << (2 * (9 - d))).collect();
        assert!(StridedLayout::new("t", &shape, &strides).is_err());
    }

    #[test]
    fn row_threads_are_warp_multiples() {
        assert_eq!(row_threads(0), 32);
        assert_eq!(row_threads(1000), 256);
        assert_eq!(row_threads(1 << 20), 1024);
    }
}
