//! Comparison of computed values with a case's expected values, and the text of a
//! failure: the worst element by `|got - want| / (atol + rtol*|want|)` (NaN worst), its
//! location, both values, `|diff|` and the tolerance.

use half::f16;

use super::json::Tolerance;
use crate::base::Error;
use crate::tensor::{DType, Device, Tensor};

/// Why a replay stopped before its end: a failure or a skip, with the text of its line.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// A compared value is wrong, or the implementation returned an error.
    Fail(String),
    /// gradstep cannot run this case (an op, dtype or device it does not support).
    Skip(String),
}

/// What a replay returns: `Ok(())` when every compared value passed.
pub type Replay = std::result::Result<(), Stop>;

impl From<Error> for Stop {
    /// [`Error::Unsupported`] is a skip; every other error fails the replay.
    fn from(e: Error) -> Stop {
        match e {
            Error::Unsupported { .. } => Stop::Skip(e.to_string()),
            e => Stop::Fail(format!("error: {e}")),
        }
    }
}

/// Prefixes the text of a stop with where it happened (`step 2: ...`).
pub fn within<T>(place: &str, r: std::result::Result<T, Stop>) -> std::result::Result<T, Stop> {
    r.map_err(|s| match s {
        Stop::Fail(m) => Stop::Fail(format!("{place}: {m}")),
        Stop::Skip(m) => Stop::Skip(format!("{place}: {m}")),
    })
}

/// Whether `got` passes against `want`: finite and `|got - want| <= atol + rtol*|want|`,
/// computed in f64.
/// A non-finite `want` (from a case's `"nan"`, `"inf"`, `"-inf"`) is matched exactly:
/// NaN by any NaN, an infinity by the same one; the tolerance does not apply.
pub fn within_tolerance(got: f64, want: f64, tol: Tolerance) -> bool {
    if !want.is_finite() {
        return non_finite_match(got, want);
    }
    got.is_finite() && (got - want).abs() <= tol.atol + tol.rtol * want.abs()
}

/// `got` is the non-finite `want`: both NaN, or the same infinity.
fn non_finite_match(got: f64, want: f64) -> bool {
    (want.is_nan() && got.is_nan()) || got == want
}

/// How far `got` is from `want` in units of the tolerance: `|got-want| / (atol +
/// rtol*|want|)`; infinite for a non-finite `got`.
pub fn tolerance_ratio(got: f64, want: f64, tol: Tolerance) -> f64 {
    if !want.is_finite() {
        return if non_finite_match(got, want) {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if !got.is_finite() {
        return f64::INFINITY;
    }
    let diff = (got - want).abs();
    let bound = tol.atol + tol.rtol * want.abs();
    if diff == 0.0 {
        0.0
    } else if bound > 0.0 {
        diff / bound
    } else {
        f64::INFINITY
    }
}

/// The element of largest [`tolerance_ratio`], NaN counting as worst (then infinity);
/// ties go to the first. `None` for empty slices.
pub fn worst_element(got: &[f64], want: &[f64], tol: Tolerance) -> Option<usize> {
    let key = |i: usize| {
        let missed = !within_tolerance(got[i], want[i], tol);
        (
            missed && got[i].is_nan(),
            tolerance_ratio(got[i], want[i], tol),
        )
    };
    let mut best: Option<(usize, (bool, f64))> = None;
    for i in 0..got.len().min(want.len()) {
        let k = key(i);
        if best.is_none_or(|(_, b)| k.0 & !b.0 || (k.0 == b.0 && k.1 > b.1)) {
            best = Some((i, k));
        }
    }
    best.map(|(i, _)| i)
}

/// Compares flat values of shape `got_shape` with the expected ones: shapes exactly, then
/// every value with the tolerance. `what` names the value (`step 2 params[1] "b0"`);
/// `dtype` decides how values are printed.
pub fn compare_values(
    what: &str,
    got_shape: &[usize],
    got: &[f64],
    want_shape: &[usize],
    want: &[f64],
    dtype: DType,
    tol: Tolerance,
) -> Replay {
    if got_shape != want_shape {
        return Err(Stop::Fail(format!(
            "{what}: shape {got_shape:?}, want {want_shape:?}"
        )));
    }
    if got.len() != want.len() {
        return Err(Stop::Fail(format!(
            "{what}: {} values, want {} (shape {want_shape:?})",
            got.len(),
            want.len()
        )));
    }
    if got
        .iter()
        .zip(want)
        .all(|(&g, &w)| within_tolerance(g, w, tol))
    {
        return Ok(());
    }
    let i = worst_element(got, want, tol).unwrap_or(0);
    Err(Stop::Fail(failure_text(
        what, i, got[i], want[i], dtype, tol,
    )))
}

/// The text of a failing element, e.g. `grads[0] [17]: got 0.51234 want 0.51236 |diff|
/// 2.0e-05 > 1.5e-06 (rtol 1e-06, atol 1e-06)`; without the `|diff|` part for a
/// non-finite `got`.
pub fn failure_text(
    what: &str,
    index: usize,
    got: f64,
    want: f64,
    dtype: DType,
    tol: Tolerance,
) -> String {
    let tail = format!(
        "(rtol {}, atol {})",
        fmt_plain(tol.rtol),
        fmt_plain(tol.atol)
    );
    let values = format!(
        "{what} [{index}]: got {} want {}",
        fmt_value(got, dtype),
        fmt_value(want, dtype)
    );
    if got.is_finite() {
        let diff = (got - want).abs();
        let bound = tol.atol + tol.rtol * want.abs();
        format!(
            "{values} |diff| {} > {} {tail}",
            fmt_sci(diff),
            fmt_sci(bound)
        )
    } else {
        format!("{values} {tail}")
    }
}

/// What every compared tensor of a replay must be: its dtype and device, and the
/// tolerance of its values.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The case's dtype.
    pub dtype: DType,
    /// The device the replay runs on.
    pub device: Device,
    /// The case's tolerance.
    pub tol: Tolerance,
}

/// Compares a tensor with expected `{shape, data}`: dtype and device exactly, then
/// [`compare_values`].
pub fn compare_tensor(
    what: &str,
    got: &Tensor,
    want_shape: &[usize],
    want: &[f64],
    e: &Expect,
) -> Replay {
    if got.dtype() != e.dtype {
        return Err(Stop::Fail(format!(
            "{what}: dtype {}, want {}",
            got.dtype(),
            e.dtype
        )));
    }
    if got.device() != e.device {
        return Err(Stop::Fail(format!(
            "{what}: on {}, want {}",
            got.device(),
            e.device
        )));
    }
    let values = got.to_vec_f64()?;
    compare_values(what, got.shape(), &values, want_shape, want, e.dtype, e.tol)
}

/// Compares a value that must match exactly (a step count, an integer).
pub fn compare_exact(what: &str, got: f64, want: f64) -> Replay {
    if got == want {
        Ok(())
    } else {
        Err(Stop::Fail(format!(
            "{what}: got {got} want {want} (compared exactly)"
        )))
    }
}

/// Compares the presence of a value: `got` and `want` say whether there is one.
/// `thing` names it (`a gradient`, `optimizer state`).
pub fn compare_presence(what: &str, thing: &str, got: bool, want: bool) -> Replay {
    match (got, want) {
        (true, false) => Err(Stop::Fail(format!("{what}: got {thing}, want null"))),
        (false, true) => Err(Stop::Fail(format!(
            "{what}: got null (no {thing}), want {thing}"
        ))),
        _ => Ok(()),
    }
}

/// A value of `dtype` in its shortest exact form (`NaN`, `inf`, `0.51234`, `1e-08`).
pub fn fmt_value(v: f64, dtype: DType) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    match dtype {
        DType::F16 => fmt_plain(shortest_in(v, |x| f16::from_f64(x).to_bits())),
        DType::BF16 => fmt_plain(shortest_in(v, |x| crate::base::bf16_from_f64(x).to_bits())),
        DType::F32 => fmt_shortest(v as f32, v),
        _ => fmt_shortest(v, v),
    }
}

/// The decimal with the fewest significant digits that rounds to the same float16 as `v`.
fn shortest_in(v: f64, bits: impl Fn(f64) -> u16) -> f64 {
    let h = bits(v);
    (0..17)
        .filter_map(|p| format!("{v:.p$e}").parse::<f64>().ok())
        .find(|&d| bits(d) == h)
        .unwrap_or(v)
}

/// A plain number as Python prints it: `0.01`, `1e-06`.
pub fn fmt_plain(v: f64) -> String {
    fmt_shortest(v, v)
}

/// `x` in shortest round-trip digits, in scientific notation with a two-digit exponent
/// when `|x| < 1e-4` or `|x| >= 1e16` (Python's repr).
fn fmt_shortest<T: std::fmt::Display + std::fmt::LowerExp>(x: T, magnitude: f64) -> String {
    let a = magnitude.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        pad_exponent(&format!("{x:e}"))
    } else {
        format!("{x}")
    }
}

/// `x` with two significant digits and a two-digit exponent: `2.0e-05`.
pub fn fmt_sci(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    pad_exponent(&format!("{x:.1e}"))
}

/// Rewrites Rust's exponent (`e-5`, `e3`) as `e-05`, `e+03`.
fn pad_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        rtol: 1e-6,
        atol: 1e-6,
    };

    #[test]
    fn tolerance_formula_is_atol_plus_rtol_times_want() {
        // bound at want = 2: 1e-6 + 2e-6 = 3e-6
        assert!(within_tolerance(2.0 + 2.9e-6, 2.0, TOL));
        assert!(!within_tolerance(2.0 + 3.1e-6, 2.0, TOL));
        // relative part uses |want|, not |got|
        assert!(within_tolerance(-2.0 - 2.9e-6, -2.0, TOL));
        assert!(!within_tolerance(f64::NAN, 0.0, TOL));
        assert!(!within_tolerance(f64::INFINITY, 1e300, TOL));
        assert!(within_tolerance(f64::NAN, f64::NAN, TOL));
        assert!(within_tolerance(f64::NEG_INFINITY, f64::NEG_INFINITY, TOL));
        assert!(!within_tolerance(f64::INFINITY, f64::NEG_INFINITY, TOL));
        assert!(!within_tolerance(1.0, f64::NAN, TOL));
        assert!(!within_tolerance(f64::NAN, f64::INFINITY, TOL));
        assert!((tolerance_ratio(1.0 + 4e-6, 1.0, TOL) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn worst_element_prefers_nan_then_largest_ratio() {
        let want = [1.0, 100.0, 0.0, 5.0];
        // element 0 is off by 1e-5 (ratio 5), element 1 by 1e-4 (ratio ~1), element 2 by 3e-6 (ratio 3)
        let got = [1.0 + 1e-5, 100.0 + 1e-4, 3e-6, 5.0];
        assert_eq!(worst_element(&got, &want, TOL), Some(0));
        let got_nan = [1.0 + 1e-5, f64::INFINITY, 3e-6, f64::NAN];
        assert_eq!(worst_element(&got_nan, &want, TOL), Some(3));
        let got_inf = [1.0 + 1e-5, f64::INFINITY, 3e-6, 5.0];
        assert_eq!(worst_element(&got_inf, &want, TOL), Some(1));
        assert_eq!(worst_element(&[], &[], TOL), None);
    }

    #[test]
    fn failure_line_names_worst_element_values_and_tolerance() {
        let want = [0.5, 0.51236, 0.25];
        let got = [0.5, 0.51234, 0.2500001];
        let err = compare_values(
            "step 2 params[1] \"b0\"",
            &[3],
            &got,
            &[3],
            &want,
            DType::F64,
            TOL,
        );
        assert_eq!(
            err,
            Err(Stop::Fail(
                "step 2 params[1] \"b0\" [1]: got 0.51234 want 0.51236 |diff| 2.0e-05 > 1.5e-06 (rtol 1e-06, atol 1e-06)"
                    .into()
            ))
        );
        let tol = Tolerance {
            rtol: 0.01,
            atol: 0.001,
        };
        let err = compare_values(
            "grads[0]",
            &[2],
            &[0.0, f64::NAN],
            &[2],
            &[1.0, 0.0123],
            DType::F16,
            tol,
        );
        let Err(Stop::Fail(msg)) = err else {
            panic!("expected a failure, got {err:?}")
        };
        assert_eq!(
            msg,
            "grads[0] [1]: got NaN want 0.0123 (rtol 0.01, atol 0.001)"
        );
    }

    #[test]
    fn values_print_in_their_dtype() {
        assert_eq!(fmt_value(0.10000000149011612, DType::F32), "0.1");
        assert_eq!(fmt_value(0.1, DType::F64), "0.1");
        assert_eq!(fmt_value(1e-8, DType::F64), "1e-08");
        assert_eq!(fmt_value(-2.5e20, DType::F64), "-2.5e+20");
        assert_eq!(fmt_value(f16::from_f64(0.1).to_f64(), DType::F16), "0.1");
        assert_eq!(fmt_value(65504.0, DType::F16), "65500");
        assert_eq!(fmt_value(f64::NEG_INFINITY, DType::F32), "-inf");
        assert_eq!(fmt_sci(2e-5), "2.0e-05");
        assert_eq!(fmt_sci(123.0), "1.2e+02");
    }

    #[test]
    fn passing_values_and_shape_and_presence_mismatches() {
        assert_eq!(
            compare_values(
                "x",
                &[2],
                &[1.0, 2.0],
                &[2],
                &[1.0, 2.0 + 1e-6],
                DType::F64,
                TOL
            ),
            Ok(())
        );
        let shape = compare_values(
            "x",
            &[2, 1],
            &[1.0, 2.0],
            &[2],
            &[1.0, 2.0],
            DType::F64,
            TOL,
        );
        assert_eq!(shape, Err(Stop::Fail("x: shape [2, 1], want [2]".into())));
        let present = compare_presence("grads[1]", "a gradient", true, false);
        assert_eq!(
            present,
            Err(Stop::Fail("grads[1]: got a gradient, want null".into()))
        );
        assert!(compare_presence("grads[1]", "a gradient", false, true).is_err());
        assert_eq!(
            compare_presence("grads[1]", "a gradient", false, false),
            Ok(())
        );
        assert!(compare_exact("step", 2.0, 1.0).is_err());
        assert_eq!(compare_exact("step", 3.0, 3.0), Ok(()));
    }

    #[test]
    fn unsupported_errors_skip_and_others_fail() {
        let unsupported = Error::Unsupported {
            op: "layer_norm",
            dtype: DType::F16,
            device: Device::Emu(0),
        };
        assert!(matches!(Stop::from(unsupported), Stop::Skip(_)));
        assert!(matches!(
            Stop::from(Error::invalid("x", "bad")),
            Stop::Fail(_)
        ));
    }
}
