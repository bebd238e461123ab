//! PTX modules loaded once per device, and one `CUfunction` per kernel, found once.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::CUfunction;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::error;
use crate::backend::gpu::kernels::{MODULES, PTX};
use crate::backend::gpu::KernelId;
use crate::base::Result;

/// The kernels of one context. A module is loaded (JIT-compiled by the driver) on the
/// first launch of one of its kernels; after that a launch is an index into `functions`.
pub(super) struct KernelCache {
    modules: Vec<OnceLock<Arc<CudaModule>>>,
    functions: Vec<OnceLock<CudaFunction>>,
    /// Serialises loading so that a module is loaded only once.
    loading: Mutex<()>,
}

impl KernelCache {
    /// An empty cache for every module and kernel of the generated table.
    pub(super) fn new() -> Self {
        KernelCache {
            modules: MODULES.iter().map(|_| OnceLock::new()).collect(),
            functions: KernelId::all().map(|_| OnceLock::new()).collect(),
            loading: Mutex::new(()),
        }
    }

    /// The function of `kernel`, loading its module on first use.
    pub(super) fn function(&self, ctx: &Arc<CudaContext>, kernel: KernelId) -> Result<CUfunction> {
        let slot = &self.functions[kernel.0 as usize];
        if let Some(f) = slot.get() {
            return Ok(f.cu_function());
        }
        let _guard = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = slot.get() {
            return Ok(f.cu_function());
        }
        let module = self.module(ctx, kernel)?;
        let f = module
            .load_function(kernel.name())
            .map_err(|e| error::kernel(kernel.name(), "cuModuleGetFunction", e))?;
        let raw = f.cu_function();
        let _ = slot.set(f);
        Ok(raw)
    }

    /// The module that defines `kernel`; called with `loading` held.
    fn module(&self, ctx: &Arc<CudaContext>, kernel: KernelId) -> Result<Arc<CudaModule>> {
        let index = kernel.module();
        if let Some(m) = self.modules[index].get() {
            return Ok(m.clone());
        }
        let (name, ptx) = (MODULES[index].0, PTX[index]);
        let m = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
            error::kernel(
                kernel.name(),
                &format!("loading the PTX of module {name}"),
                e,
            )
        })?;
        let _ = self.modules[index].set(m.clone());
        Ok(m)
    }
}
