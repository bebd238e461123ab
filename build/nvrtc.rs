//! Compiles `kernels/*.cu` to PTX through NVRTC, and keeps the committed PTX current.
//!
//! NVRTC 13.0 comes from a CUDA toolkit (`CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda`) or
//! from the pinned PyPI wheels that `scripts/install-nvrtc` puts in `<root>/.nvrtc`. Its
//! libraries are opened by absolute path; no environment variable is needed.
//!
//! `kernels/ptx/` holds the PTX of every module, a manifest with the SHA-256 of what
//! determines each PTX file (source, included headers, arch, NVRTC version, options), and
//! the ptxas report (registers and spills per kernel for sm_90). Modes:
//! - The committed files are current: use them (NVRTC or not).
//! - They are stale and NVRTC is present: compile everything into `OUT_DIR` and say so in
//!   a cargo warning; the source tree is not touched.
//! - `GRADSTEP_UPDATE_PTX=1` (what `scripts/update-ptx` sets): NVRTC must be present;
//!   compile everything and refresh `kernels/ptx/` when it differs. The only mode that
//!   writes into the source tree.
//! - `GRADSTEP_REQUIRE_NVRTC=1` (CI): NVRTC must be present; compile everything and fail
//!   when `kernels/ptx/` differs from the result, or when a kernel spills.
//! - No NVRTC: use the committed PTX when its manifest entry matches, else fail naming
//!   the module.
//! - `GRADSTEP_CUDA_ARCH=compute_XX`: compile for that virtual arch (NVRTC required); the
//!   committed files, which are for compute_80, are neither used nor touched.

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::kernels::Module;

/// The virtual architecture of the committed PTX (runs on A100 and H100).
const DEFAULT_ARCH: &str = "compute_80";
/// The NVRTC release whose PTX (ISA 9.0) driver 580 / CUDA 13.0 accepts.
const NVRTC_VERSION: (i32, i32) = (13, 0);
/// The highest PTX ISA version the build accepts.
const MAX_PTX_ISA: (u32, u32) = (9, 0);
/// Options besides the arch and include paths; part of the manifest hash.
const OPTIONS: &[&str] = &["-std=c++17"];
/// Real architectures compiled for the ptxas report.
const REPORT_ARCHS: &[&str] = &["sm_90"];
/// Tag of the manifest hash scheme; bump when the hashed inputs change.
const HASH_SCHEME: &str = "gradstep-ptx-v1";

const ENV_REQUIRE: &str = "GRADSTEP_REQUIRE_NVRTC";
const ENV_UPDATE: &str = "GRADSTEP_UPDATE_PTX";
const ENV_ARCH: &str = "GRADSTEP_CUDA_ARCH";
const FIX_HINT: &str =
    "install NVRTC 13.0 with scripts/install-nvrtc, then run scripts/update-ptx to refresh kernels/ptx";

/// Returns the path of one PTX file per module (in `out`), compiling with NVRTC or
/// taking the committed PTX as described in the module docs.
pub fn ptx_for_modules(
    root: &Path,
    out: &Path,
    modules: &[Module],
) -> Result<Vec<PathBuf>, String> {
    for var in [ENV_REQUIRE, ENV_UPDATE, ENV_ARCH, "CUDA_PATH", "CUDA_HOME"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let require = std::env::var(ENV_REQUIRE).is_ok_and(|v| v == "1");
    let update = std::env::var(ENV_UPDATE).is_ok_and(|v| v == "1");
    let arch = arch_from_env()?;
    println!(
        "cargo::rustc-env=GRADSTEP_PTX_TARGET={}",
        arch.replace("compute_", "sm_")
    );
    let kernels_dir = root.join("kernels");
    let committed = Committed::new(&kernels_dir.join("ptx"));
    let hashes = modules
        .iter()
        .map(|m| input_hash(&kernels_dir, m, &arch))
        .collect::<Result<Vec<_>, _>>()?;
    let nvrtc = Nvrtc::find(root);

    let ptx: Vec<String> = if arch != DEFAULT_ARCH {
        let nv = nvrtc.map_err(|why| format!("{ENV_ARCH}={arch} needs NVRTC 13.0: {why}"))?;
        let c = compile_all(&nv, &kernels_dir, modules, &arch)?;
        report_spills(&c.report, require)?;
        c.ptx
    } else if require || update {
        let why = if update { ENV_UPDATE } else { ENV_REQUIRE };
        let nv = nvrtc.map_err(|e| format!("{why}=1 but NVRTC 13.0 is missing: {e}"))?;
        let c = compile_all(&nv, &kernels_dir, modules, &arch)?;
        report_spills(&c.report, true)?;
        let want = Committed::render(modules, &hashes, &c);
        let stale = committed.differences(&want);
        if update {
            committed.write(&want)?;
            if !stale.is_empty() {
                println!(
                    "cargo::warning=refreshed kernels/ptx ({}) with NVRTC {}.{}; commit it",
                    stale.join(", "),
                    nv.version.0,
                    nv.version.1
                );
            }
        } else if !stale.is_empty() {
            return Err(format!(
                "kernels/ptx is not current ({}): run scripts/update-ptx to refresh \
                 kernels/ptx, and commit it",
                stale.join(", ")
            ));
        }
        c.ptx
    } else if let Some(ptx) = committed
        .current(modules, &hashes)
        .filter(|_| nvrtc.is_err() || committed.lists_exactly(modules))
    {
        ptx
    } else {
        match nvrtc {
            Ok(nv) => {
                let c = compile_all(&nv, &kernels_dir, modules, &arch)?;
                report_spills(&c.report, false)?;
                let want = Committed::render(modules, &hashes, &c);
                println!(
                    "cargo::warning=kernels/ptx is stale ({}): built with PTX from NVRTC {}.{} \
                     in OUT_DIR; run scripts/update-ptx to refresh it",
                    committed.differences(&want).join(", "),
                    nv.version.0,
                    nv.version.1
                );
                c.ptx
            }
            Err(why) => return Err(committed.stale_error(modules, &hashes, &why)),
        }
    };

    let mut paths = Vec::new();
    for (m, text) in modules.iter().zip(&ptx) {
        check_ptx_version(&m.name, text)?;
        let p = out.join(format!("{}.ptx", m.name));
        write_if_changed(&p, text.as_bytes())?;
        paths.push(p);
    }
    Ok(paths)
}

/// The virtual arch from `GRADSTEP_CUDA_ARCH` (`compute_90`, `sm_90` or `90`), or the default.
fn arch_from_env() -> Result<String, String> {
    let Ok(v) = std::env::var(ENV_ARCH) else {
        return Ok(DEFAULT_ARCH.to_string());
    };
    let digits = v
        .trim()
        .trim_start_matches("compute_")
        .trim_start_matches("sm_");
    match digits.parse::<u32>() {
        Ok(n) if n >= 75 => Ok(format!("compute_{n}")),
        _ => Err(format!(
            "{ENV_ARCH}='{v}' is not a CUDA architecture NVRTC 13 accepts (e.g. compute_90)"
        )),
    }
}

/// SHA-256 of everything that determines a module's PTX.
fn input_hash(kernels_dir: &Path, m: &Module, arch: &str) -> Result<String, String> {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.replace("\r\n", "\n").as_bytes());
        h.update([0]);
    };
    field("scheme", HASH_SCHEME);
    field("nvrtc", &format!("{}.{}", NVRTC_VERSION.0, NVRTC_VERSION.1));
    field("arch", arch);
    field("options", &OPTIONS.join(" "));
    field("module", &m.name);
    field("source", &m.source);
    for header in local_includes(kernels_dir, &m.source)? {
        let text = std::fs::read_to_string(kernels_dir.join(&header))
            .map_err(|e| format!("reading kernels/{header}: {e}"))?;
        field("header", &header);
        field("text", &text);
    }
    Ok(hex(&h.finalize()))
}

/// Names of the files in `kernels_dir` that `source` includes with `#include "..."`,
/// directly or through other such headers, sorted.
fn local_includes(kernels_dir: &Path, source: &str) -> Result<BTreeSet<String>, String> {
    let mut found = BTreeSet::new();
    let mut todo = quoted_includes(source);
    while let Some(name) = todo.pop() {
        let path = kernels_dir.join(&name);
        if !path.is_file() || !found.insert(name.clone()) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("reading kernels/{name}: {e}"))?;
        todo.extend(quoted_includes(&text));
    }
    Ok(found)
}

fn quoted_includes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l
                .trim_start()
                .strip_prefix('#')?
                .trim_start()
                .strip_prefix("include")?;
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    // Write a temporary file and rename it, so that a build running at the same time in
    // the same tree never reads a half-written file.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Fails when the PTX ISA version is above what driver 580 accepts.
fn check_ptx_version(module: &str, ptx: &str) -> Result<(), String> {
    let v = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .ok_or_else(|| format!("PTX of {module} has no .version line"))?;
    let parsed = v
        .trim()
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some(isa) if isa <= MAX_PTX_ISA => Ok(()),
        _ => Err(format!(
            "PTX of {module} has ISA version {v}, above {}.{} (CUDA 13.0 drivers reject it): \
             use NVRTC 13.0 (scripts/install-nvrtc)",
            MAX_PTX_ISA.0, MAX_PTX_ISA.1
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Compilation and the ptxas report

/// The PTX of every module and the ptxas report lines, from one NVRTC run.
struct Compiled {
    ptx: Vec<String>,
    report: Vec<KernelUsage>,
}

/// What ptxas reported for one kernel on one real arch.
#[derive(Clone, Debug, Default, PartialEq)]
struct KernelUsage {
    module: String,
    kernel: String,
    arch: String,
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

fn compile_all(
    nv: &Nvrtc,
    kernels_dir: &Path,
    modules: &[Module],
    arch: &str,
) -> Result<Compiled, String> {
    let mut ptx = Vec::new();
    let mut report = Vec::new();
    for m in modules {
        ptx.push(nv.compile(kernels_dir, m, arch, false)?.0);
        for real in REPORT_ARCHS {
            let (_, log) = nv.compile(kernels_dir, m, real, true)?;
            let mut usage = parse_ptxas_log(&m.name, real, &log);
            // ptxas reports in no useful order; list kernels as the source defines them.
            usage.sort_by_key(|k| m.kernels.iter().position(|n| *n == k.kernel));
            report.extend(usage);
        }
    }
    Ok(Compiled { ptx, report })
}

/// Parses ptxas's `-v` output: `Compiling entry function 'K'`, `N bytes stack frame, N
/// bytes spill stores, N bytes spill loads`, `Used N registers`.
fn parse_ptxas_log(module: &str, arch: &str, log: &str) -> Vec<KernelUsage> {
    let mut out: Vec<KernelUsage> = Vec::new();
    let number_before = |line: &str, word: &str| -> u32 {
        let Some(pos) = line.find(word) else { return 0 };
        line[..pos]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelUsage {
                module: module.to_string(),
                kernel,
                arch: arch.to_string(),
                ..Default::default()
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes spill stores") {
                k.stack = number_before(line, "bytes stack frame");
                k.spill_stores = number_before(line, "bytes spill stores");
                k.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used ") && line.contains(" registers") {
                k.registers = number_before(line, "registers");
            }
        }
    }
    out
}

/// Spills are an error in CI mode and a warning otherwise.
fn report_spills(report: &[KernelUsage], fatal: bool) -> Result<(), String> {
    let spills: Vec<String> = report
        .iter()
        .filter(|k| k.spill_stores > 0 || k.spill_loads > 0)
        .map(|k| {
            format!(
                "{} ({}, {}): {} bytes spill stores, {} bytes spill loads",
                k.kernel, k.module, k.arch, k.spill_stores, k.spill_loads
            )
        })
        .collect();
    if spills.is_empty() {
        return Ok(());
    }
    if fatal {
        return Err(format!("kernels spill registers: {}", spills.join("; ")));
    }
    for s in spills {
        println!("cargo::warning=register spill in {s}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The committed files

/// `kernels/ptx/`: one PTX file per module, `manifest.txt`, `ptxas-report.txt`.
struct Committed {
    dir: PathBuf,
}

/// The full content of `kernels/ptx/` as it should be: (file name, text).
type Files = Vec<(String, String)>;

const MANIFEST: &str = "manifest.txt";
const REPORT: &str = "ptxas-report.txt";

impl Committed {
    fn new(dir: &Path) -> Self {
        Committed {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    /// `module -> (inputs hash, PTX hash)` from the manifest.
    fn manifest(&self) -> Vec<(String, String, String)> {
        let text = self.read(MANIFEST).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// Why module `m` (with inputs hash `hash`) cannot use the committed PTX, if it can't.
    fn problem(&self, m: &Module, hash: &str) -> Option<String> {
        let manifest = self.manifest();
        let Some((_, inputs, ptx_hash)) = manifest.iter().find(|(name, _, _)| *name == m.name)
        else {
            return Some(format!("kernels/ptx has no PTX for module {}", m.name));
        };
        if inputs != hash {
            return Some(format!(
                "the committed PTX of module {} is stale (kernels/{}.cu or a header it includes \
                 changed)",
                m.name, m.name
            ));
        }
        match std::fs::read(self.dir.join(format!("{}.ptx", m.name))) {
            Ok(bytes) if sha256_hex(&bytes) == *ptx_hash => None,
            Ok(_) => Some(format!(
                "kernels/ptx/{}.ptx does not match its manifest entry",
                m.name
            )),
            Err(_) => Some(format!("kernels/ptx/{}.ptx is missing", m.name)),
        }
    }

    /// The committed PTX of every module when all of it is current.
    fn current(&self, modules: &[Module], hashes: &[String]) -> Option<Vec<String>> {
        self.read(REPORT)?;
        modules
            .iter()
            .zip(hashes)
            .map(|(m, h)| match self.problem(m, h) {
                None => self.read(&format!("{}.ptx", m.name)),
                Some(_) => None,
            })
            .collect()
    }

    /// Whether the manifest and the PTX files name exactly these modules (no leftovers of
    /// a deleted module).
    fn lists_exactly(&self, modules: &[Module]) -> bool {
        let listed: Vec<String> = self
            .manifest()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        let want: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
        let files: Files = modules
            .iter()
            .map(|m| (format!("{}.ptx", m.name), String::new()))
            .collect();
        listed == want && self.extra_ptx(&files).is_empty()
    }

    /// The error when the committed PTX cannot be used and NVRTC is missing.
    fn stale_error(&self, modules: &[Module], hashes: &[String], why: &str) -> String {
        let problems: Vec<String> = modules
            .iter()
            .zip(hashes)
            .filter_map(|(m, h)| self.problem(m, h))
            .collect();
        let what = if problems.is_empty() {
            "kernels/ptx/ptxas-report.txt is missing".to_string()
        } else {
            problems.join("; ")
        };
        format!("{what}, and NVRTC 13.0 was not found ({why}): {FIX_HINT}")
    }

    /// The files `kernels/ptx/` should hold for this compilation.
    fn render(modules: &[Module], hashes: &[String], c: &Compiled) -> Files {
        let mut files = Files::new();
        let mut manifest = String::from(
            "# Generated by build.rs (build/nvrtc.rs); do not edit. Any cargo build with NVRTC\n\
             # 13.0 refreshes it. Per module: SHA-256 of the inputs (source, included headers,\n\
             # arch, NVRTC version, options), SHA-256 of the PTX.\n",
        );
        for ((m, h), ptx) in modules.iter().zip(hashes).zip(&c.ptx) {
            let _ = writeln!(manifest, "{} {} {}", m.name, h, sha256_hex(ptx.as_bytes()));
            files.push((format!("{}.ptx", m.name), ptx.clone()));
        }
        files.push((MANIFEST.to_string(), manifest));
        files.push((REPORT.to_string(), render_report(&c.report)));
        files
    }

    /// Names of the files that differ from `want` (or are extra PTX files).
    fn differences(&self, want: &Files) -> Vec<String> {
        let mut diff: Vec<String> = want
            .iter()
            .filter(|(name, text)| self.read(name).as_deref() != Some(text.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        diff.extend(self.extra_ptx(want));
        diff
    }

    /// PTX files of modules that no longer exist.
    fn extra_ptx(&self, want: &Files) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".ptx") && !want.iter().any(|(w, _)| w == n))
            .collect()
    }

    /// Replaces the content of `kernels/ptx/` with `want`.
    fn write(&self, want: &Files) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        for name in self.extra_ptx(want) {
            let p = self.dir.join(name);
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
        for (name, text) in want {
            write_if_changed(&self.dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }
}

fn render_report(report: &[KernelUsage]) -> String {
    let mut s = format!(
        "# ptxas report (NVRTC {}.{}, --ptxas-options=-v), generated by build.rs; do not edit.\n\
         # Registers per thread, stack frame and spill bytes of every kernel.\n",
        NVRTC_VERSION.0, NVRTC_VERSION.1
    );
    let _ = writeln!(
        s,
        "{:<14} {:<40} {:<6} {:>9} {:>6} {:>12} {:>11}",
        "module", "kernel", "arch", "registers", "stack", "spill_stores", "spill_loads"
    );
    for k in report {
        let _ = writeln!(
            s,
            "{:<14} {:<40} {:<6} {:>9} {:>6} {:>12} {:>11}",
            k.module, k.kernel, k.arch, k.registers, k.stack, k.spill_stores, k.spill_loads
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// NVRTC through libloading

type Program = *mut c_void;
const NVRTC_SUCCESS: c_int = 0;

/// A loaded NVRTC 13.0 and the include directory holding `cuda_fp16.h`.
struct Nvrtc {
    lib: libloading::Library,
    /// Kept loaded so that libnvrtc's own dlopen of its builtins finds it by SONAME.
    _builtins: libloading::Library,
    include: PathBuf,
    version: (i32, i32),
}

/// Where one NVRTC installation keeps its files.
struct Install {
    nvrtc: PathBuf,
    builtins: PathBuf,
    include: PathBuf,
}

impl Install {
    /// Looks for `libnvrtc.so.13`, its builtins and `cuda_fp16.h` under a toolkit or wheel root.
    fn at(dir: &Path) -> Option<Install> {
        let lib_dirs = [
            "lib64",
            "lib",
            "targets/x86_64-linux/lib",
            "targets/sbsa-linux/lib",
        ];
        let inc_dirs = [
            "include",
            "targets/x86_64-linux/include",
            "targets/sbsa-linux/include",
        ];
        let lib = lib_dirs
            .iter()
            .map(|d| dir.join(d))
            .find(|d| d.join("libnvrtc.so.13").is_file())?;
        let builtins = ["libnvrtc-builtins.so.13.0"]
            .iter()
            .map(|n| lib.join(n))
            .find(|p| p.is_file())
            .or_else(|| {
                std::fs::read_dir(&lib)
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("libnvrtc-builtins.so.13."))
                    })
            })?;
        let include = inc_dirs
            .iter()
            .map(|d| dir.join(d))
            .find(|d| d.join("cuda_fp16.h").is_file())?;
        Some(Install {
            nvrtc: lib.join("libnvrtc.so.13"),
            builtins,
            include,
        })
    }
}

impl Nvrtc {
    /// The first NVRTC 13.0 among `CUDA_PATH`, `CUDA_HOME`, `<root>/.nvrtc` and
    /// `/usr/local/cuda`; `Err(why)` when there is none.
    fn find(root: &Path) -> Result<Nvrtc, String> {
        let mut dirs: Vec<PathBuf> = ["CUDA_PATH", "CUDA_HOME"]
            .iter()
            .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
            .collect();
        dirs.push(root.join(".nvrtc/nvidia/cu13"));
        dirs.push(PathBuf::from("/usr/local/cuda"));
        let mut rejected = Vec::new();
        for dir in dirs {
            let Some(install) = Install::at(&dir) else {
                continue;
            };
            match Nvrtc::open(&install) {
                Ok(nv) if nv.version == NVRTC_VERSION => return Ok(nv),
                Ok(nv) => rejected.push(format!(
                    "{} is NVRTC {}.{}, gradstep needs {}.{} (PTX ISA <= {}.{})",
                    install.nvrtc.display(),
                    nv.version.0,
                    nv.version.1,
                    NVRTC_VERSION.0,
                    NVRTC_VERSION.1,
                    MAX_PTX_ISA.0,
                    MAX_PTX_ISA.1
                )),
                Err(e) => rejected.push(e),
            }
        }
        if rejected.is_empty() {
            Err("no libnvrtc.so.13 in CUDA_PATH, CUDA_HOME, .nvrtc or /usr/local/cuda".into())
        } else {
            Err(rejected.join("; "))
        }
    }

    fn open(install: &Install) -> Result<Nvrtc, String> {
        let load = |p: &Path| {
            // SAFETY: loading NVRTC runs only its own initialisers.
            unsafe { libloading::Library::new(p) }
                .map_err(|e| format!("loading {}: {e}", p.display()))
        };
        let builtins = load(&install.builtins)?;
        let lib = load(&install.nvrtc)?;
        let mut nv = Nvrtc {
            lib,
            _builtins: builtins,
            include: install.include.clone(),
            version: (0, 0),
        };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints.
        let r = unsafe {
            let f =
                nv.sym::<unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int>(b"nvrtcVersion\0")?;
            f(&mut major, &mut minor)
        };
        nv.check(r, "nvrtcVersion")?;
        nv.version = (major, minor);
        Ok(nv)
    }

    /// Looks up an NVRTC function.
    ///
    /// # Safety
    /// `T` must be the function's C signature.
    unsafe fn sym<T: Copy>(&self, name: &[u8]) -> Result<T, String> {
        self.lib
            .get::<T>(name)
            .map(|s| *s)
            .map_err(|e| format!("NVRTC has no {}: {e}", String::from_utf8_lossy(name)))
    }

    fn check(&self, r: c_int, what: &str) -> Result<(), String> {
        if r == NVRTC_SUCCESS {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static C string.
        let msg = unsafe {
            self.sym::<unsafe extern "C" fn(c_int) -> *const c_char>(b"nvrtcGetErrorString\0")
                .ok()
                .map(|f| f(r))
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        Err(format!(
            "{what} failed: {}",
            msg.unwrap_or_else(|| format!("NVRTC error {r}"))
        ))
    }

    /// Compiles a module for `arch`; returns the PTX (empty for a real arch) and the log.
    /// A compile error prints NVRTC's log as cargo errors.
    fn compile(
        &self,
        kernels_dir: &Path,
        m: &Module,
        arch: &str,
        verbose: bool,
    ) -> Result<(String, String), String> {
        let mut opts = vec![
            format!("--gpu-architecture={arch}"),
            format!("--include-path={}", kernels_dir.display()),
            format!("--include-path={}", self.include.display()),
        ];
        opts.extend(OPTIONS.iter().map(|o| o.to_string()));
        if verbose {
            opts.push("--ptxas-options=-v".into());
        }
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let src = cstr(&m.source)?;
        let name = cstr(&format!("kernels/{}.cu", m.name))?;
        let copts = opts
            .iter()
            .map(|o| cstr(o))
            .collect::<Result<Vec<_>, _>>()?;
        let opt_ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();

        type Create = unsafe extern "C" fn(
            *mut Program,
            *const c_char,
            *const c_char,
            c_int,
            *const *const c_char,
            *const *const c_char,
        ) -> c_int;
        type Compile = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
        type Size = unsafe extern "C" fn(Program, *mut usize) -> c_int;
        type Get = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
        type Destroy = unsafe extern "C" fn(*mut Program) -> c_int;

        // SAFETY: each symbol is declared with its nvrtc.h signature; every buffer passed
        // is sized by the matching *Size call; the program is destroyed exactly once.
        unsafe {
            let create = self.sym::<Create>(b"nvrtcCreateProgram\0")?;
            let compile = self.sym::<Compile>(b"nvrtcCompileProgram\0")?;
            let log_size = self.sym::<Size>(b"nvrtcGetProgramLogSize\0")?;
            let get_log = self.sym::<Get>(b"nvrtcGetProgramLog\0")?;
            let ptx_size = self.sym::<Size>(b"nvrtcGetPTXSize\0")?;
            let get_ptx = self.sym::<Get>(b"nvrtcGetPTX\0")?;
            let destroy = self.sym::<Destroy>(b"nvrtcDestroyProgram\0")?;

            let mut prog: Program = std::ptr::null_mut();
            let r = create(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            self.check(r, "nvrtcCreateProgram")?;
            let read = |size: Size, get: Get| -> Result<String, String> {
                let mut n = 0usize;
                self.check(size(prog, &mut n), "nvrtc size query")?;
                let mut buf = vec![0u8; n.max(1)];
                self.check(get(prog, buf.as_mut_ptr().cast()), "nvrtc output query")?;
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                buf.truncate(end);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            };
            let compiled = compile(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
            let log = read(log_size, get_log);
            let ptx = if compiled == NVRTC_SUCCESS && !verbose {
                read(ptx_size, get_ptx)
            } else {
                Ok(String::new())
            };
            destroy(&mut prog);
            let log = log?;
            if compiled != NVRTC_SUCCESS {
                for line in log.lines().filter(|l| !l.trim().is_empty()) {
                    println!("cargo::error={line}");
                }
                return Err(format!(
                    "NVRTC failed to compile kernels/{}.cu for {arch} (log above)",
                    m.name
                ));
            }
            Ok((ptx?, log))
        }
    }
}
