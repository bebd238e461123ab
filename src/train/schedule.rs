//! `--lr-schedule`: the learning-rate schedules `gradstep train` steps after every batch.

use crate::base::{Error, Result};
use crate::optim::{CosineAnnealingLR, LinearLR, LrScheduler, Optimizer, StepLR};

/// A learning-rate schedule over optimizer steps, as `gradstep train --lr-schedule`
/// spells it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `step:SIZE:GAMMA`: [`StepLR`], the lr times `GAMMA` every `SIZE` steps.
    Step {
        /// Steps between decays.
        size: u64,
        /// The decay factor.
        gamma: f64,
    },
    /// `cosine:T_MAX`: [`CosineAnnealingLR`] from the base lr to 0 over `T_MAX` steps.
    Cosine {
        /// The half period, in steps.
        t_max: u64,
    },
    /// `linear:START:END:ITERS`: [`LinearLR`], the base lr scaled from `START` to `END`
    /// over `ITERS` steps.
    Linear {
        /// The first factor, in (0, 1].
        start: f64,
        /// The last factor, in [0, 1].
        end: f64,
        /// Steps from `start` to `end`.
        iters: u64,
    },
}

impl LrSchedule {
    /// Parses `step:SIZE:GAMMA`, `cosine:T_MAX` or `linear:START:END:ITERS`.
    pub fn parse(s: &str) -> Result<LrSchedule> {
        let bad = |why: String| {
            Error::invalid(
                "lr-schedule",
                format!(
                    "'{s}': {why} (expected step:SIZE:GAMMA, cosine:T_MAX or \
                     linear:START:END:ITERS)"
                ),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let int = |i: usize, name: &str| -> Result<u64> {
            match parts[i].parse::<u64>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(bad(format!(
                    "{name} must be a positive integer, not '{}'",
                    parts[i]
                ))),
            }
        };
        let real = |i: usize, name: &str| -> Result<f64> {
            match parts[i].parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(bad(format!(
                    "{name} must be a finite number, not '{}'",
                    parts[i]
                ))),
            }
        };
        let schedule = match (parts[0], parts.len()) {
            ("step", 3) => LrSchedule::Step {
                size: int(1, "SIZE")?,
                gamma: real(2, "GAMMA")?,
            },
            ("cosine", 2) => LrSchedule::Cosine {
                t_max: int(1, "T_MAX")?,
            },
            ("linear", 4) => LrSchedule::Linear {
                start: real(1, "START")?,
                end: real(2, "END")?,
                iters: int(3, "ITERS")?,
            },
            ("step" | "cosine" | "linear", n) => {
                return Err(bad(format!("{} fields after '{}'", n - 1, parts[0])))
            }
            (kind, _) => return Err(bad(format!("unknown schedule '{kind}'"))),
        };
        if let LrSchedule::Linear { start, end, .. } = schedule {
            if !(start > 0.0 && start <= 1.0 && (0.0..=1.0).contains(&end)) {
                return Err(bad("START must be in (0, 1] and END in [0, 1]".into()));
            }
        }
        Ok(schedule)
    }

    /// The scheduler over `opt`, whose current lrs are the base lrs (build it before
    /// loading a checkpoint, whose lrs are scheduled ones, then step it past the steps
    /// already taken).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<Box<dyn LrScheduler>> {
        Ok(match self {
            LrSchedule::Step { size, gamma } => Box::new(StepLR::new(opt, size, gamma)?),
            LrSchedule::Cosine { t_max } => Box::new(CosineAnnealingLR::new(opt, t_max, 0.0)?),
            LrSchedule::Linear { start, end, iters } => {
                Box::new(LinearLR::new(opt, start, end, iters)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms_and_names_what_is_wrong() {
        assert_eq!(
            LrSchedule::parse("step:10:0.5").unwrap(),
            LrSchedule::Step {
                size: 10,
                gamma: 0.5
            }
        );
        assert_eq!(
            LrSchedule::parse("cosine:100").unwrap(),
            LrSchedule::Cosine { t_max: 100 }
        );
        assert_eq!(
            LrSchedule::parse("linear:0.25:1:40").unwrap(),
            LrSchedule::Linear {
                start: 0.25,
                end: 1.0,
                iters: 40
            }
        );
        for (bad, says) in [
            ("step:0:0.5", "SIZE"),
            ("step:10", "1 fields"),
            ("cosine:x", "T_MAX"),
            ("linear:0:1:5", "START"),
            ("linear:0.5:1:5:6", "4 fields"),
            ("exp:0.9", "unknown schedule 'exp'"),
            ("step:3:nan", "GAMMA"),
        ] {
            let e = LrSchedule::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }
}
