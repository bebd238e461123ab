//! The embedded PTX: present for every module, loadable by a CUDA 13.0 driver (ISA at
//! most 9.0), built for the expected target, and defining every kernel of the table.

use crate::backend::gpu::kernels::{KERNEL_MODULE, KERNEL_NAMES, MODULES, PTX};

/// The `.target` the build compiled for (`sm_80` unless GRADSTEP_CUDA_ARCH overrides it).
const TARGET: &str = env!("GRADSTEP_PTX_TARGET");

/// The value of the first `<directive> value` line.
fn directive<'a>(ptx: &'a str, name: &str) -> Option<&'a str> {
    ptx.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim())
}

/// Names of the `.entry` functions of a PTX module.
fn entries(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|l| {
            let rest = l.split(".entry ").nth(1)?;
            rest.split(|c: char| c == '(' || c.is_whitespace()).next()
        })
        .collect()
}

#[test]
fn every_module_has_ptx_for_a_cuda_13_0_driver() {
    assert!(!MODULES.is_empty());
    for ((name, source), ptx) in MODULES.iter().zip(PTX) {
        assert!(!ptx.trim().is_empty(), "module {name} has empty PTX");
        assert!(!source.trim().is_empty(), "module {name} has no source");
        let version = directive(ptx, ".version ").unwrap_or_else(|| panic!("{name}: no .version"));
        let (major, minor) = version.split_once('.').unwrap();
        let isa = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
        assert!(
            isa <= (9, 0),
            "module {name}: PTX ISA {version} is above 9.0"
        );
        assert_eq!(directive(ptx, ".target "), Some(TARGET), "module {name}");
        assert_eq!(
            directive(ptx, ".address_size "),
            Some("64"),
            "module {name}"
        );
    }
}

#[test]
fn every_kernel_is_an_entry_of_its_module() {
    assert_eq!(KERNEL_NAMES.len(), KERNEL_MODULE.len());
    for (kernel, &module) in KERNEL_NAMES.iter().zip(KERNEL_MODULE) {
        let (name, ptx) = (MODULES[module as usize].0, PTX[module as usize]);
        assert!(
            entries(ptx).contains(kernel),
            "{kernel} is not an .entry of module {name}"
        );
    }
}

#[test]
fn every_entry_is_in_the_kernel_table() {
    // A `__global__` function the table misses (not `extern "C"`, or declared in a form
    // the scanner does not read) could never be launched.
    for ((name, _), ptx) in MODULES.iter().zip(PTX) {
        for entry in entries(ptx) {
            assert!(
                KERNEL_NAMES.contains(&entry),
                "module {name}: .entry {entry} is not in KERNEL_NAMES"
            );
        }
    }
}

#[test]
fn entry_parsing_reads_names() {
    let ptx = ".version 9.0\n.target sm_80\n.visible .entry fill_f32(\n\t.param .u64 p\n)\n";
    assert_eq!(entries(ptx), ["fill_f32"]);
    assert_eq!(directive(ptx, ".target "), Some("sm_80"));
}
