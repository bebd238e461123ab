//! The quickstart, end to end: the model, the training and test loops, checkpoints.
//!
//! - [`train`] / [`eval`]: the whole `gradstep train` / `gradstep eval` runs.
//! - [`train_loop`] and [`test_loop`]: one epoch, printing PyTorch's exact lines.
//! - [`quickstart_model`]: the quickstart `NeuralNetwork` with PyTorch's parameter names.
//! - [`Checkpoint`]: model + optimizer + epoch + RNG in one safetensors file, written
//!   atomically ([`crate::io`]).

mod checkpoint;
mod loops;
mod model;
mod progress;
pub(crate) mod pyfmt;
mod run;
mod schedule;

pub use checkpoint::{Checkpoint, CheckpointMeta, History, RunSettings, MAX_EPOCHS};
pub use loops::{
    evaluate, test_loop, train_loop, EpochStats, GraphedStep, LoopOptions, Report, Trainee,
};
pub use model::{
    parse_impl, quickstart_model, OptimizerKind, QUICKSTART_CLASSES, QUICKSTART_HIDDEN,
    QUICKSTART_INPUTS,
};
pub use run::{eval, load_model, train, EvalConfig, ResumeOverrides, TrainConfig, TrainReport};

/// Runs a closure on the rayon pool with its other workers polling for jobs (CPU training).
pub use crate::backend::cpu::workers::with_spinning_workers;
pub use schedule::LrSchedule;
