//! Finds `extern "C" __global__` entry points in `kernels/*.cu` and writes the kernel
//! table that both GPU backends index.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `kernels/*.cu` file and its entry points, in source order.
pub struct Module {
    /// File stem, e.g. `elementwise`.
    pub name: String,
    /// Path of the source.
    pub path: PathBuf,
    /// The source text.
    #[allow(dead_code)]
    pub source: String,
    /// `extern "C" __global__` function names.
    pub kernels: Vec<String>,
}

/// Every `.cu` file of `dir`, sorted by name.
pub fn scan(dir: &Path) -> std::io::Result<Vec<Module>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let source = std::fs::read_to_string(&path)?;
        let kernels = entry_points(&source);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push(Module {
            name,
            path,
            source,
            kernels,
        });
    }
    Ok(out)
}

/// Names of `extern "C" __global__ void NAME(` definitions (the marker and the name
/// may be separated by `__launch_bounds__(...)`).
pub fn entry_points(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    let marker = "extern \"C\" __global__";
    let mut rest = src;
    while let Some(pos) = rest.find(marker) {
        rest = &rest[pos + marker.len()..];
        let open = match rest.find('(') {
            Some(o) => o,
            None => break,
        };
        let mut head = &rest[..open];
        // Skip `__launch_bounds__(` by taking the identifier before the first '(' that
        // follows `void`.
        if head.contains("__launch_bounds__") {
            let close = rest.find(')').unwrap_or(open);
            let after = &rest[close + 1..];
            let open2 = after.find('(').unwrap_or(0);
            head = &after[..open2];
        }
        if let Some(name) = head.split_whitespace().last() {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Writes `kernel_table.rs` into `out`: names, module of each kernel, the source of each
/// module, its PTX when there is some (`ptx[i]` is the path of module i's PTX file), and
/// a constant per kernel.
pub fn write_table(out: &Path, modules: &[Module], ptx: Option<&[PathBuf]>) -> std::io::Result<()> {
    let mut s = String::new();
    let all: Vec<(usize, &String)> = modules
        .iter()
        .enumerate()
        .flat_map(|(m, md)| md.kernels.iter().map(move |k| (m, k)))
        .collect();
    writeln!(
        s,
        "/// `extern \"C\"` names of every kernel, in table order."
    )
    .unwrap();
    writeln!(s, "pub const KERNEL_NAMES: &[&str] = &[").unwrap();
    for (_, k) in &all {
        writeln!(s, "    {k:?},").unwrap();
    }
    writeln!(s, "];").unwrap();
    writeln!(s, "/// Index into [`MODULES`] of each kernel.").unwrap();
    writeln!(s, "#[allow(dead_code)]").unwrap();
    writeln!(s, "pub const KERNEL_MODULE: &[u16] = &[").unwrap();
    for (m, _) in &all {
        writeln!(s, "    {m},").unwrap();
    }
    writeln!(s, "];").unwrap();
    writeln!(
        s,
        "/// `(file stem, CUDA source)` of every `kernels/*.cu` file."
    )
    .unwrap();
    writeln!(s, "#[allow(dead_code)]").unwrap();
    writeln!(s, "pub const MODULES: &[(&str, &str)] = &[").unwrap();
    for md in modules {
        writeln!(
            s,
            "    ({:?}, include_str!({:?})),",
            md.name,
            md.path.display().to_string()
        )
        .unwrap();
    }
    writeln!(s, "];").unwrap();
    if let Some(ptx) = ptx {
        writeln!(s, "/// The PTX of every module, in [`MODULES`] order.").unwrap();
        writeln!(s, "#[allow(dead_code)]").unwrap();
        writeln!(s, "pub const PTX: &[&str] = &[").unwrap();
        for p in ptx {
            writeln!(s, "    include_str!({:?}),", p.display().to_string()).unwrap();
        }
        writeln!(s, "];").unwrap();
    }
    writeln!(
        s,
        "/// One constant per kernel, named after it in upper case."
    )
    .unwrap();
    writeln!(s, "#[allow(dead_code)]").unwrap();
    writeln!(s, "pub mod k {{").unwrap();
    writeln!(s, "    use super::KernelId;").unwrap();
    for (i, (_, k)) in all.iter().enumerate() {
        writeln!(s, "    /// `{k}`").unwrap();
        writeln!(
            s,
            "    pub const {}: KernelId = KernelId({i});",
            k.to_uppercase()
        )
        .unwrap();
    }
    // The f16, bf16, f32 and f64 variants of a kernel family, in that order: `k::UNARY`
    // for `unary_f16`, `unary_bf16`, `unary_f32`, `unary_f64`.
    for (_, name) in &all {
        let Some(family) = name.strip_suffix("_f16") else {
            continue;
        };
        let has = |suffix: &str| all.iter().any(|(_, k)| **k == format!("{family}_{suffix}"));
        if has("bf16") && has("f32") && has("f64") {
            let up = family.to_uppercase();
            writeln!(
                s,
                "    /// The f16, bf16, f32 and f64 kernels `{family}_*`."
            )
            .unwrap();
            writeln!(
                s,
                "    pub const {up}: [KernelId; 4] = [{up}_F16, {up}_BF16, {up}_F32, {up}_F64];"
            )
            .unwrap();
        }
    }
    writeln!(s, "}}").unwrap();
    std::fs::write(out.join("kernel_table.rs"), s)
}
