//! Zeroing time against tensor count (the sweep over the first N mixed tensors), as a PNG.

use std::path::Path;

use crate::bench::report::Report;
use crate::error::{Error, Result};

/// One line of the plot: an implementation and its `(tensor count, seconds)` points,
/// sorted by count.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The implementation (`per_tensor`, `foreach`, `arena`).
    pub name: String,
    /// `(tensors, median seconds per call)`.
    pub points: Vec<(usize, f64)>,
}

/// The zeroing series of `report` for `dtype`: every timed `zero` record over a `mixedN`
/// set, grouped by implementation (per_tensor, foreach, arena, in that order).
pub fn zero_sweep(report: &Report, dtype: &str) -> Vec<Series> {
    ["per_tensor", "foreach", "arena"]
        .iter()
        .map(|&name| {
            let mut points: Vec<(usize, f64)> = report
                .results
                .iter()
                .filter(|r| {
                    r.bench == "zero"
                        && r.imp.as_deref() == Some(name)
                        && r.dtype.as_deref() == Some(dtype)
                })
                .filter(|r| r.set.as_deref().is_some_and(|s| s.starts_with("mixed")))
                .filter_map(|r| r.seconds.map(|s| (r.tensors, s)))
                .collect();
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            Series {
                name: name.into(),
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Draws the zeroing sweep of `report` for `dtype` (log-log: tensors against time per
/// call) into a PNG at `path`.
pub fn plot_zero_sweep(report: &Report, dtype: &str, path: &Path) -> Result<()> {
    let series = zero_sweep(report, dtype);
    if series.is_empty() {
        return Err(Error::invalid(
            "bench",
            format!("{}: no timed zeroing sweep to plot", path.display()),
        ));
    }
    Err(Error::invalid(
        "bench",
        format!(
            "{}: PNG plots are not available in this build",
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Record;

    fn rec(imp: &str, n: usize, s: Option<f64>) -> Record {
        Record {
            bench: "zero".into(),
            set: Some(format!("mixed{n}")),
            dtype: Some("f32".into()),
            imp: Some(imp.into()),
            tensors: n,
            seconds: s,
            ..Default::default()
        }
    }

    #[test]
    fn sweep_groups_and_sorts() {
        let report = Report {
            results: vec![
                rec("foreach", 10, Some(2.0)),
                rec("foreach", 1, Some(1.0)),
                rec("per_tensor", 1, Some(3.0)),
                rec("set_to_none", 1, Some(0.1)),
                rec("arena", 1, None),
            ],
            ..Default::default()
        };
        let s = zero_sweep(&report, "f32");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "per_tensor");
        assert_eq!(s[1].points, vec![(1, 1.0), (10, 2.0)]);
        assert!(zero_sweep(&report, "f16").is_empty());
        assert!(plot_zero_sweep(&report, "f16", Path::new("x.png")).is_err());
    }
}
