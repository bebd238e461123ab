//! Build script: finds the kernels in `kernels/*.cu` and generates the kernel table; with
//! the `cuda` feature it takes their PTX (committed, or compiled through NVRTC), with the
//! `emu` feature it compiles them for the host emulator. Without either it does nothing.
//! It writes into the source tree only when asked (`GRADSTEP_UPDATE_PTX=1`, what
//! `scripts/update-ptx` sets).

#[cfg(feature = "emu")]
#[path = "build/emu.rs"]
mod emu;
#[cfg(any(feature = "cuda", feature = "emu"))]
#[path = "build/kernels.rs"]
mod kernels;
#[cfg(feature = "cuda")]
#[path = "build/nvrtc.rs"]
mod nvrtc;

fn main() {
    println!("cargo::rerun-if-changed=build");
    // `cfg(gpu)`: the GPU launch path is built (for CUDA, the emulator, or both).
    println!("cargo::rustc-check-cfg=cfg(gpu)");
    if cfg!(any(feature = "cuda", feature = "emu")) {
        println!("cargo::rustc-cfg=gpu");
    }
    #[cfg(any(feature = "cuda", feature = "emu"))]
    if let Err(e) = kernel_build() {
        println!("cargo::error={e}");
    }
}

#[cfg(any(feature = "cuda", feature = "emu"))]
fn kernel_build() -> Result<(), String> {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    // The whole folder (cargo scans it recursively), so new kernel files are found too.
    println!("cargo::rerun-if-changed=kernels");
    let modules =
        kernels::scan(&root.join("kernels")).map_err(|e| format!("scanning kernels/: {e}"))?;
    #[cfg(feature = "cuda")]
    let ptx = Some(nvrtc::ptx_for_modules(&root, &out, &modules)?);
    #[cfg(not(feature = "cuda"))]
    let ptx: Option<Vec<std::path::PathBuf>> = None;
    kernels::write_table(&out, &modules, ptx.as_deref())
        .map_err(|e| format!("writing the kernel table: {e}"))?;
    #[cfg(feature = "emu")]
    emu::compile(&root, &out, &modules)
        .map_err(|e| format!("compiling the kernels for host emulation: {e}"))?;
    Ok(())
}
