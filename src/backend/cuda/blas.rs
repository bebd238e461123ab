//! Row-major GEMM through cuBLAS (column-major): `C = A·B` is computed as `Cᵀ = Bᵀ·Aᵀ`.

use std::ffi::{c_int, c_longlong, c_void};
use std::sync::{Arc, Mutex};

use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaStream;

use super::error;
use crate::backend::gpu::GemmDesc;
use crate::base::DType;
use crate::base::{Error, Result};

/// A cuBLAS handle bound to the device's stream. cuBLAS calls are serialised through
/// the mutex because one handle must not be used by two threads at once.
pub(super) struct Blas(Mutex<CudaBlas>);

impl Blas {
    /// A handle on `stream`; `Ok(None)` when libcublas cannot be loaded (the caller then
    /// falls back to gradstep's own matmul kernel).
    pub(super) fn new(stream: Arc<CudaStream>) -> Result<Option<Blas>> {
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Ok(None);
        }
        let handle = CudaBlas::new(stream).map_err(|e| error::cublas("cublasCreate", e))?;
        Ok(Some(Blas(Mutex::new(handle))))
    }

    /// Runs `g` on the handle's stream. `Ok(false)` for dtypes cuBLAS does not cover.
    ///
    /// # Safety
    /// The pointers of `g` address device buffers large enough for its matrices.
    pub(super) unsafe fn gemm(&self, g: &GemmDesc) -> Result<bool> {
        if !matches!(g.dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return Ok(false);
        }
        if g.batch == 0 || g.m == 0 || g.n == 0 {
            return Ok(true);
        }
        let d = ColumnMajor::from_row_major(g)?;
        let blas = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let h = *blas.handle();
        let ctx = format!(
            "cuBLAS gemm {} ({}x{}x{}, batch {})",
            g.dtype, g.m, g.n, g.k, g.batch
        );
        // One gemm_ex for every dtype: storage type, accumulation type, and alpha/beta of
        // the accumulation type (f32 for f16, bf16 and f32, f64 for f64).
        let (alpha, beta) = (g.alpha as f64, g.beta as f64);
        let (ty, compute, scalars): (_, _, [*const c_void; 2]) = match g.dtype {
            DType::F64 => (
                cudaDataType_t::CUDA_R_64F,
                cublasComputeType_t::CUBLAS_COMPUTE_64F,
                [&alpha as *const f64 as _, &beta as *const f64 as _],
            ),
            DType::F32 => (
                cudaDataType_t::CUDA_R_32F,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                [&g.alpha as *const f32 as _, &g.beta as *const f32 as _],
            ),
            DType::BF16 => (
                cudaDataType_t::CUDA_R_16BF,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                [&g.alpha as *const f32 as _, &g.beta as *const f32 as _],
            ),
            _ => (
                cudaDataType_t::CUDA_R_16F,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                [&g.alpha as *const f32 as _, &g.beta as *const f32 as _],
            ),
        };
        // SAFETY: the caller guarantees the pointers address device buffers large enough
        // for the described matrices; alpha and beta are host values that outlive the
        // call (cuBLAS reads them before returning in host pointer mode).
        unsafe {
            blas::gemm_strided_batched_ex(
                h,
                d.op_a,
                d.op_b,
                d.m,
                d.n,
                d.k,
                scalars[0],
                d.a as *const c_void,
                ty,
                d.lda,
                d.stride_a,
                d.b as *const c_void,
                ty,
                d.ldb,
                d.stride_b,
                scalars[1],
                d.c as *mut c_void,
                ty,
                d.ldc,
                d.stride_c,
                d.batch,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| error::cublas(ctx, e))?;
        Ok(true)
    }
}

/// The cuBLAS (column-major) arguments of a row-major [`GemmDesc`]: the operands swap,
/// m and n swap, and each operand keeps its transposition flag.
#[derive(Debug, PartialEq)]
struct ColumnMajor {
    op_a: cublasOperation_t,
    op_b: cublasOperation_t,
    m: c_int,
    n: c_int,
    k: c_int,
    a: u64,
    lda: c_int,
    stride_a: c_longlong,
    b: u64,
    ldb: c_int,
    stride_b: c_longlong,
    c: u64,
    ldc: c_int,
    stride_c: c_longlong,
    batch: c_int,
}

impl ColumnMajor {
    /// A row-major matrix with row stride `ld` is, read column-major, its transpose with
    /// leading dimension `ld`. So row-major `C = op(A)·op(B)` is column-major
    /// `Cᵀ = op(B)ᵀ·op(A)ᵀ`: cuBLAS's first operand is B (transposed iff `trans_b`), its
    /// second is A (transposed iff `trans_a`), and its m, n are the row-major n, m.
    fn from_row_major(g: &GemmDesc) -> Result<ColumnMajor> {
        let int = |what: &str, v: usize| {
            c_int::try_from(v).map_err(|_| {
                Error::invalid(
                    "cuBLAS gemm",
                    format!("{what} = {v} exceeds the 32-bit limit"),
                )
            })
        };
        let long = |what: &str, v: usize| {
            c_longlong::try_from(v).map_err(|_| {
                Error::invalid(
                    "cuBLAS gemm",
                    format!("{what} = {v} exceeds the 64-bit limit"),
                )
            })
        };
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        Ok(ColumnMajor {
            op_a: op(g.trans_b),
            op_b: op(g.trans_a),
            m: int("n", g.n)?,
            n: int("m", g.m)?,
            k: int("k", g.k)?,
            a: g.b,
            lda: int("ldb", g.ldb)?,
            stride_a: long("stride_b", g.stride_b)?,
            b: g.a,
            ldb: int("lda", g.lda)?,
            stride_b: long("stride_a", g.stride_a)?,
            c: g.c,
            ldc: int("ldc", g.ldc)?,
            stride_c: long("stride_c", g.stride_c)?,
            batch: int("batch", g.batch)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(trans_a: bool, trans_b: bool) -> GemmDesc {
        GemmDesc {
            dtype: DType::F32,
            trans_a,
            trans_b,
            m: 2,
            n: 3,
            k: 4,
            a: 0xa000,
            lda: if trans_a { 2 } else { 4 },
            stride_a: 8,
            b: 0xb000,
            ldb: if trans_b { 4 } else { 3 },
            stride_b: 0,
            c: 0xc000,
            ldc: 3,
            stride_c: 6,
            batch: 5,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// Multiplies with cuBLAS's column-major conventions on host data, as the reference
    /// BLAS definition states them, so the argument mapping can be checked without a GPU.
    fn column_major_gemm(d: &ColumnMajor, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |x: &[f32], op: cublasOperation_t, ld: i32, i: i32, j: i32| match op {
            cublasOperation_t::CUBLAS_OP_N => x[(i + j * ld) as usize],
            _ => x[(j + i * ld) as usize],
        };
        for i in 0..d.m {
            for j in 0..d.n {
                let s: f32 = (0..d.k)
                    .map(|p| at(a, d.op_a, d.lda, i, p) * at(b, d.op_b, d.ldb, p, j))
                    .sum();
                c[(i + j * d.ldc) as usize] = s;
            }
        }
    }

    #[test]
    fn swapped_operands_give_the_row_major_product() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let g = desc(ta, tb);
            let d = ColumnMajor::from_row_major(&g).unwrap();
            assert_eq!((d.a, d.b, d.c), (g.b, g.a, g.c));
            assert_eq!((d.stride_a, d.stride_b, d.stride_c, d.batch), (0, 8, 6, 5));
            // Row-major A (m x k) and B (k x n), stored as the flags say.
            let a_val = |i: usize, p: usize| (i * 10 + p) as f32;
            let b_val = |p: usize, j: usize| (p as f32) - 2.0 * j as f32;
            let mut a = vec![0.0; 8];
            let mut b = vec![0.0; 12];
            for i in 0..2 {
                for p in 0..4 {
                    let idx = if ta { p * g.lda + i } else { i * g.lda + p };
                    a[idx] = a_val(i, p);
                }
            }
            for p in 0..4 {
                for j in 0..3 {
                    let idx = if tb { j * g.ldb + p } else { p * g.ldb + j };
                    b[idx] = b_val(p, j);
                }
            }
            let mut c = vec![0.0; 6];
            // cuBLAS's A is gradstep's B and vice versa.
            column_major_gemm(&d, &b, &a, &mut c);
            for i in 0..2 {
                for j in 0..3 {
                    let want: f32 = (0..4).map(|p| a_val(i, p) * b_val(p, j)).sum();
                    assert_eq!(
                        c[i * g.ldc + j],
                        want,
                        "trans_a={ta} trans_b={tb} C[{i}][{j}]"
                    );
                }
            }
        }
    }

    #[test]
    fn oversized_dimensions_are_an_error() {
        let mut g = desc(false, false);
        g.k = 1 << 40;
        assert!(matches!(
            ColumnMajor::from_row_major(&g),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
