//! Helpers shared by the integration tests: the PyTorch reference case files in
//! `tests/data`, reading their JSON values, tolerance checks and failure tallies.
//!

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The path of a file in `tests/data`.
pub fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Reads and parses the case file `tests/data/{name}` and asserts its `format`.
pub fn case_file(name: &str, format: &str) -> Value {
    let path = data_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (copy the oracle's case files into tests/data)",
            path.display()
        )
    });
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()));
    assert_eq!(v["format"], format, "{}", path.display());
    v
}

/// The numbers of a JSON list.
pub fn floats(v: &Value) -> Vec<f64> {
    list(v)
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// The non-negative integers of a JSON list (a shape).
pub fn usizes(v: &Value) -> Vec<usize> {
    list(v)
        .iter()
        .map(|x| x.as_u64().expect("a non-negative integer") as usize)
        .collect()
}

/// The integers of a JSON list (dims, a shape for `reshape`).
pub fn isizes(v: &Value) -> Vec<isize> {
    list(v)
        .iter()
        .map(|x| x.as_i64().expect("an integer") as isize)
        .collect()
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, found {v}"))
}

/// Whether `got` is finite and `|got - want| <= atol + rtol * |want|`.
pub fn within(got: f64, want: f64, rtol: f64, atol: f64) -> bool {
    got.is_finite() && (got - want).abs() <= atol + rtol * want.abs()
}

/// The first element of `got` not [`within`] the tolerance of `want` (or a length
/// mismatch), as a message naming `what`; `None` when all agree.
pub fn mismatch(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
    got.iter()
        .zip(want)
        .position(|(&g, &w)| !within(g, w, rtol, atol))
        .map(|i| {
            format!(
                "{what} [{i}]: got {} want {} (rtol {rtol}, atol {atol})",
                got[i], want[i]
            )
        })
}

/// Asserts that every element of `got` is [`within`] the tolerance of `want`.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    if let Some(m) = mismatch(what, got, want, rtol, atol) {
        panic!("{m}");
    }
}

/// Asserts that no replay failed, listing every failure.
pub fn assert_no_failures(passed: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} passed, {} failed:\n{}",
        passed,
        failures.len(),
        failures.join("\n")
    );
}

/// One `#[test]` per `name => file on device` row, each calling `run(file, device)`
/// (its result, if any, is dropped).
macro_rules! case_file_tests {
    ($run:ident: $($name:ident => $file:literal on $device:ident $(($ord:literal))?),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run($file, gradstep::Device::$device $(($ord))?);
            }
        )*
    };
}
pub(crate) use case_file_tests;

/// `bytes` gzip-compressed (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
