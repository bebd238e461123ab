//! Benchmark results: one [`Record`] per measured case, a [`Report`] with the run's
//! metadata, its JSON form (the same keys as `scripts/torch_bench.py`) and a text table.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::{Error, Result};
use crate::cli::bench::timing::{CallCounts, Timing};

/// One measured case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What was measured: `copy`, `zero`, `step`, `train` or `clip`.
    pub bench: String,
    /// The parameter set's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The dtype (`f32`, `f16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// The optimizer (`sgd` = SGD with momentum 0.9, `adam`, `adamw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
    /// The implementation (`per_tensor`, `foreach`, `arena`, `set_to_none`, `forloop`,
    /// `fused`, ...).
    #[serde(rename = "impl", default, skip_serializing_if = "Option::is_none")]
    pub imp: Option<String>,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of elements over all tensors.
    pub numel: usize,
    /// Bytes that must move per call (each input read once, each output written once).
    pub bytes: u64,
    /// Floating-point operations per call (matrix products: `2 m k n`; 0 elsewhere).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flops: u64,
    /// Median seconds per call (None where only counts were taken, e.g. on the emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Effective bandwidth: `bytes / seconds`, in GB/s (10^9 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// `gbps` as a percentage of the copy bandwidth measured in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct_copy: Option<f64>,
    /// `flops / seconds`, in GFLOP/s (10^9 operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// Calls per second (the train benchmark's steps/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// The timing's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// What one call asked of the GPU device (None on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<CallCounts>,
    /// Why the case could not be measured, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A data-parallel step: its ranks, buckets, all-reduce time and overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddp: Option<DdpStats>,
}

/// What a data-parallel training step did, per step and rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DdpStats {
    /// Ranks.
    pub world_size: usize,
    /// Bucket all-reduces per step.
    pub buckets: usize,
    /// Bytes all-reduced per step.
    pub allreduce_bytes: u64,
    /// The buckets' all-reduces alone, seconds per step (timed devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_seconds: Option<f64>,
    /// The fraction of the all-reduce bytes issued while backward still had gradients to
    /// produce (counted from the bucket log).
    pub issued_in_backward: f64,
    /// The fraction of the all-reduce time hidden behind backward:
    /// `(plain step + all-reduce - DDP step) / all-reduce`, clamped to 0..1 (timed
    /// devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
}

impl Record {
    /// Fills `seconds`, `per_second`, `gbps` and (given the copy bandwidth) `pct_copy`
    /// from a timing.
    pub fn set_timing(&mut self, t: Timing, copy_gbps: Option<f64>) {
        self.seconds = Some(t.median);
        self.per_second = Some(1.0 / t.median);
        self.timing = Some(t);
        if self.bytes > 0 {
            let gbps = self.bytes as f64 / t.median / 1e9;
            self.gbps = Some(gbps);
            self.pct_copy = copy_gbps.filter(|c| *c > 0.0).map(|c| 100.0 * gbps / c);
        }
        if self.flops > 0 {
            self.gflops = Some(self.flops as f64 / t.median / 1e9);
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What the run was, for the reader of a JSON file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `gradstep`.
    pub tool: String,
    /// The crate's version.
    pub version: String,
    /// The device (`cpu`, `cuda:0`, `emu`).
    pub device: String,
    /// The device's name (the card, or the CPU model).
    pub device_name: String,
    /// CPU threads of the rayon pool.
    pub threads: usize,
    /// The vector instructions the CPU's matmul kernels use here (`avx512f`, `avx2+fma`,
    /// `neon`, `scalar`), chosen at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_isa: Option<String>,
    /// Copy bandwidth measured in the same run, GB/s (bytes read + written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_gbps: Option<f64>,
    /// The host's load average at the start (1, 5, 15 minutes), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadavg: Option<[f64; 3]>,
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What the run was.
    pub meta: Meta,
    /// The measurements, in order.
    pub results: Vec<Record>,
}

impl Report {
    /// The JSON text (pretty-printed).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid("bench", format!("JSON encoding: {e}")))
    }

    /// Writes the JSON text to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, (self.to_json()? + "\n").as_bytes())
    }

    /// A human-readable table: one line per record, times per call, effective GB/s, % of
    /// the copy bandwidth, GFLOP/s of matrix products, and per call where counted: kernel launches, memsets, graph
    /// launches, host syncs and driver allocations.
    pub fn table(&self) -> String {
        let m = &self.meta;
        let mut out = format!(
            "gradstep {} bench on {} ({}), {} CPU threads",
            m.version, m.device, m.device_name, m.threads
        );
        if let Some(isa) = &m.cpu_isa {
            let _ = write!(out, ", CPU kernels {isa}");
        }
        if let Some(c) = m.copy_gbps {
            let _ = write!(out, ", copy bandwidth {c:.1} GB/s");
        }
        if let Some(l) = m.loadavg {
            let _ = write!(out, ", load {:.2} {:.2} {:.2}", l[0], l[1], l[2]);
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<5} {:<6} {:<11} {:>7} {:>12} {:>8} {:>6} {:>8} {:>8} {:>7} {:>6} {:>5} {:>6}",
            "bench",
            "set",
            "dtype",
            "optim",
            "impl",
            "tensors",
            "time/call",
            "GB/s",
            "%copy",
            "GFLOP/s",
            "launches",
            "memsets",
            "graphs",
            "syncs",
            "allocs"
        );
        for r in self.results.iter().filter(|r| r.bench != "copy") {
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let counts = |f: fn(&CallCounts) -> u64| {
                r.counts.as_ref().map_or("-".into(), |c| f(c).to_string())
            };
            let _ = writeln!(
                out,
                "{:<6} {:<16} {:<5} {:<6} {:<11} {:>7} {:>12} {:>8} {:>6} {:>8} {:>8} {:>7} {:>6} {:>5} {:>6}",
                r.bench,
                opt(&r.set),
                opt(&r.dtype),
                opt(&r.optimizer),
                opt(&r.imp),
                r.tensors,
                match (&r.error, r.seconds) {
                    (Some(_), _) => "FAILED".into(),
                    (None, s) => s.map_or("-".into(), format_seconds),
                },
                r.gbps.map_or("-".into(), |g| format!("{g:.1}")),
                r.pct_copy.map_or("-".into(), |p| format!("{p:.0}%")),
                r.gflops.map_or("-".into(), |g| format!("{g:.1}")),
                counts(|c| c.launches),
                counts(|c| c.memsets),
                counts(|c| c.graph_launches),
                counts(|c| c.syncs),
                counts(|c| c.allocs),
            );
        }
        for r in self.results.iter() {
            let Some(d) = &r.ddp else { continue };
            let _ = writeln!(
                out,
                "ddp   {} ranks: {} all-reduce(s) per step, {:.2} MB, {:.0}% of the bytes issued \
                 during backward, all-reduce alone {}, overlap {}",
                d.world_size,
                d.buckets,
                d.allreduce_bytes as f64 / 1e6,
                100.0 * d.issued_in_backward,
                d.allreduce_seconds.map_or("-".into(), format_seconds),
                d.overlap
                    .map_or("-".into(), |o| format!("{:.0}%", 100.0 * o)),
            );
        }
        for r in self.results.iter().filter(|r| r.error.is_some()) {
            let what = [&r.set, &r.dtype, &r.optimizer, &r.imp]
                .iter()
                .filter_map(|x| x.as_deref())
                .collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "FAILED {} {}: {}",
                r.bench,
                what.join(" "),
                r.error.as_deref().unwrap_or_default()
            );
        }
        out
    }

    /// Number of failed cases.
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }
}

/// Seconds with a unit that keeps 3-4 significant digits: `12.3 us`, `4.56 ms`, `1.234 s`.
pub fn format_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "-".into();
    }
    let (v, unit) = if s < 1e-3 {
        (s * 1e6, "us")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    let digits = if v < 10.0 {
        3
    } else if v < 100.0 {
        2
    } else {
        1
    };
    format!("{v:.digits$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            bench: "step".into(),
            set: Some("mixed1000".into()),
            dtype: Some("f32".into()),
            optimizer: Some("adamw".into()),
            imp: Some("fused".into()),
            tensors: 1000,
            numel: 1_000_000,
            bytes: 28_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn timing_gives_bandwidth_and_percent() {
        let mut r = record();
        let t = Timing {
            median: 0.01,
            min: 0.009,
            max: 0.02,
            samples: 5,
            calls_per_sample: 1,
        };
        r.set_timing(t, Some(5.6));
        // 28 MB in 10 ms = 2.8 GB/s, half of 5.6 GB/s.
        assert!((r.gbps.unwrap() - 2.8).abs() < 1e-12);
        assert!((r.pct_copy.unwrap() - 50.0).abs() < 1e-9);
        assert!((r.per_second.unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn json_uses_the_torch_script_keys_and_round_trips() {
        let report = Report {
            meta: Meta {
                tool: "gradstep".into(),
                device: "emu".into(),
                ..Default::default()
            },
            results: vec![record()],
        };
        let text = report.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let r = &v["results"][0];
        assert_eq!(r["impl"], "fused");
        assert_eq!(r["optimizer"], "adamw");
        assert!(
            r.get("seconds").is_none(),
            "counts-only records have no time"
        );
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        let table = report.table();
        assert!(table.lines().nth(2).unwrap().contains("adamw"), "{table}");
    }

    #[test]
    fn seconds_pick_a_unit() {
        assert_eq!(format_seconds(12.34e-6), "12.34 us");
        assert_eq!(format_seconds(0.004567), "4.567 ms");
        assert_eq!(format_seconds(123.4e-3), "123.4 ms");
        assert_eq!(format_seconds(2.0), "2.000 s");
        assert_eq!(format_seconds(f64::NAN), "-");
    }
}
