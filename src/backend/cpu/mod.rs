//! The CPU backend: reference semantics for every test and a real device, rayon-parallel.
//!
//! [`CpuBackend`] implements every primitive family of [`crate::backend::primitives`],
//! one file per family. Float kernels load f16 as f32, compute in f32 (f64 for f64) and
//! round once on store; reductions accumulate in that arithmetic type. Inputs may be any
//! strided view; outputs are new contiguous tensors.

mod copy;
mod dropout;
mod elem;
mod elementwise;
mod embedding;
pub(crate) mod f16conv;
mod matmul;
mod norm;
mod reduce;
mod softmax;
mod strided;
pub(crate) mod workers;

/// The CPU backend.
#[derive(Debug, Default)]
pub(crate) struct CpuBackend;

/// The vector instructions the CPU matmul kernels (the `gemm` crate, built with its
/// `x86-v4` kernels) choose on this CPU at run time: `avx512f`, `avx2+fma`, `neon` or
/// `scalar`. Recorded by `gradstep bench`.
#[allow(dead_code)]
pub(crate) fn vector_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return "neon";
    }
    "scalar"
}
