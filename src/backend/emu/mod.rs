//! Host emulation of the CUDA backend: the unchanged `kernels/*.cu`, compiled for the host.

use std::ffi::c_void;

use crate::backend::gpu::{DeviceApi, KernelId, LaunchConfig};
use crate::error::{Error, Result};

/// The emulated device.
pub struct EmuApi {}

impl EmuApi {
    /// Creates the emulated device.
    pub fn new() -> Result<Self> {
        Ok(EmuApi {})
    }
}

fn todo() -> Error {
    Error::invalid("emu", "not implemented yet")
}

impl DeviceApi for EmuApi {
    fn name(&self) -> String {
        "host emulation".into()
    }
    fn alloc(&self, _bytes: usize) -> Result<u64> {
        Err(todo())
    }
    unsafe fn free(&self, _ptr: u64) {}
    fn memset_zero(&self, _ptr: u64, _bytes: usize) -> Result<()> {
        Err(todo())
    }
    fn htod(&self, _src: &[u8], _dst: u64) -> Result<()> {
        Err(todo())
    }
    fn dtoh(&self, _src: u64, _dst: &mut [u8]) -> Result<()> {
        Err(todo())
    }
    fn dtod(&self, _src: u64, _dst: u64, _bytes: usize) -> Result<()> {
        Err(todo())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    unsafe fn launch(&self, _k: KernelId, _cfg: &LaunchConfig, _p: &mut [*mut c_void]) -> Result<()> {
        Err(todo())
    }
}
