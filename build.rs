//! Build script: finds the kernels in `kernels/*.cu`, generates the kernel table, compiles
//! the kernels to PTX through NVRTC (or uses the committed PTX), and compiles them for
//! the host emulator.

#[path = "build/emu.rs"]
mod emu;
#[path = "build/kernels.rs"]
mod kernels;
#[path = "build/nvrtc.rs"]
mod nvrtc;

fn main() {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed=build");
    // The whole folder (cargo scans it recursively), so new kernel files are found too.
    println!("cargo::rerun-if-changed=kernels");
    let modules = match kernels::scan(&root.join("kernels")) {
        Ok(m) => m,
        Err(e) => {
            println!("cargo::error=scanning kernels/: {e}");
            return;
        }
    };
    let ptx = match nvrtc::ptx_for_modules(&root, &out, &modules) {
        Ok(p) => p,
        Err(e) => {
            println!("cargo::error={e}");
            return;
        }
    };
    if let Err(e) = kernels::write_table(&out, &modules, &ptx) {
        println!("cargo::error=writing the kernel table: {e}");
        return;
    }
    if let Err(e) = emu::compile(&root, &out, &modules) {
        println!("cargo::error=compiling the kernels for host emulation: {e}");
    }
}
