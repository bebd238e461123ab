//! Compiles `kernels/*.cu` to PTX through NVRTC.

use std::path::{Path, PathBuf};

use crate::kernels::Module;

/// The PTX file of every module (placeholder: empty PTX until NVRTC is wired in).
pub fn ptx_for_modules(_root: &Path, out: &Path, modules: &[Module]) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for m in modules {
        let p = out.join(format!("{}.ptx", m.name));
        std::fs::write(&p, "").map_err(|e| e.to_string())?;
        paths.push(p);
    }
    Ok(paths)
}
