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
pub(crate) mod isa;
mod matmul;
mod norm;
mod reduce;
mod softmax;
mod strided;
pub(crate) mod workers;

/// The CPU backend.
#[derive(Debug, Default)]
pub(crate) struct CpuBackend;

#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub(crate) use isa::vector_isa;
