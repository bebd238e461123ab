//! The vector instructions of the CPU kernels: the widest the CPU has, chosen at run time,
//! or capped by `GRADSTEP_CPU_ISA`.
//!
//! `GRADSTEP_CPU_ISA=avx2` runs the matrix products with AVX2+FMA kernels (the `gemm`
//! crate's 0.18 release, which has no AVX-512 kernels on stable Rust) on a CPU that has
//! AVX-512, to compare the two paths on one machine. `avx512` or unset: no cap. The other
//! CPU loops (optimizer updates, f16 conversion) use AVX2 and F16C at most either way.

use std::sync::OnceLock;

use crate::{Error, Result};

/// The environment variable that caps the CPU kernels' vector instructions.
pub const ISA_ENV: &str = "GRADSTEP_CPU_ISA";

/// A cap on the CPU kernels' vector instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cap {
    /// The widest the CPU has.
    None,
    /// AVX2 (+FMA) at most.
    Avx2,
}

/// Parses a value of [`ISA_ENV`] (unset or empty: no cap); the error says what is wrong.
fn parse(v: Option<&str>) -> std::result::Result<Cap, String> {
    match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("avx512") => Ok(Cap::None),
        Some("avx2") => Ok(Cap::Avx2),
        Some(other) => Err(format!(
            "{ISA_ENV} must be avx2 or avx512 (or unset), got {other:?}"
        )),
    }
}

/// The cap of this process's [`ISA_ENV`], read once; an unknown value is an error.
pub(crate) fn cap() -> Result<Cap> {
    static CAP: OnceLock<std::result::Result<Cap, String>> = OnceLock::new();
    CAP.get_or_init(|| parse(std::env::var(ISA_ENV).ok().as_deref()))
        .clone()
        .map_err(|msg| Error::invalid("cpu", msg))
}

/// The vector instructions the CPU matmul kernels use on this CPU: `avx512f`, `avx2+fma`,
/// `neon` or `scalar`, with `(capped)` when [`ISA_ENV`] lowered them. Recorded by
/// `gradstep bench`.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn vector_isa() -> String {
    let capped = matches!(cap(), Ok(Cap::Avx2));
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && !capped {
            return "avx512f".into();
        }
        if std::is_x86_feature_detected!("fma") {
            let was = std::is_x86_feature_detected!("avx512f");
            return if was { "avx2+fma (capped)" } else { "avx2+fma" }.into();
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return "neon".into();
    }
    let _ = capped;
    "scalar".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_an_unknown_one_is_named_in_the_error() {
        assert_eq!(parse(None).unwrap(), Cap::None);
        assert_eq!(parse(Some("")).unwrap(), Cap::None);
        assert_eq!(parse(Some(" AVX512 ")).unwrap(), Cap::None);
        assert_eq!(parse(Some("avx2")).unwrap(), Cap::Avx2);
        let e = parse(Some("sse9")).unwrap_err();
        assert!(e.contains(ISA_ENV) && e.contains("sse9"), "{e}");
    }
}
