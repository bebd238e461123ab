//! The CUDA backend (cudarc): context, stream, module cache, launches, cuBLAS.

use std::ffi::c_void;

use crate::backend::gpu::{DeviceApi, KernelId, LaunchConfig};
use crate::error::{Error, Result};

/// Number of CUDA devices; an error when no driver is present. Never panics.
pub fn device_count() -> Result<usize> {
    Err(Error::NoCudaDriver)
}

/// A CUDA device.
pub struct CudaApi {}

impl CudaApi {
    /// Opens device `ordinal`.
    pub fn new(_ordinal: usize) -> Result<Self> {
        device_count()?;
        Err(Error::NoCudaDriver)
    }
}

impl DeviceApi for CudaApi {
    fn name(&self) -> String {
        "cuda".into()
    }
    fn alloc(&self, _bytes: usize) -> Result<u64> {
        Err(Error::NoCudaDriver)
    }
    unsafe fn free(&self, _ptr: u64) {}
    fn memset_zero(&self, _ptr: u64, _bytes: usize) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
    fn htod(&self, _src: &[u8], _dst: u64) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
    fn dtoh(&self, _src: u64, _dst: &mut [u8]) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
    fn dtod(&self, _src: u64, _dst: u64, _bytes: usize) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
    fn synchronize(&self) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
    unsafe fn launch(&self, _k: KernelId, _cfg: &LaunchConfig, _p: &mut [*mut c_void]) -> Result<()> {
        Err(Error::NoCudaDriver)
    }
}
