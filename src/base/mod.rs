//! The bottom layer: element types, devices, layouts, storage and the error type.
//!
//! Nothing here imports anything above it; every other layer builds on these.

mod device;
mod dtype;
mod error;
mod layout;
mod memory;
mod rng;
mod storage;

pub use device::Device;
pub use dtype::{bf16_from_f64, f16_from_f64, DType, Element};
pub use error::{Error, Result};
pub use layout::{
    broadcast_shapes, checked_numel, contiguous_strides, normalize_dim, Layout, StridedIndex,
};
#[cfg(feature = "cli")]
pub use memory::host_backed_bytes;
pub use memory::{ensure_host_fits, try_vec_with_capacity};
pub use rng::Rng;
pub use storage::CpuStorage;
pub(crate) use storage::{lock_host, HostGuard, RawTensor, StorageCell};
#[cfg(gpu)]
pub(crate) use storage::{DeviceBuffer, DeviceMemory};
