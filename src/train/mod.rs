//! The quickstart training and test loops, checkpoints and plots.
//!
//! - [`run::train`] / [`run::eval`]: the whole `gradstep train` / `gradstep eval` runs.
//! - [`loops`]: `train_loop` and `test_loop`, printing PyTorch's exact lines ([`pyfmt`]).
//! - [`model`]: the quickstart `NeuralNetwork` with PyTorch's parameter names.
//! - [`checkpoint`]: model + optimizer + epoch + RNG in one safetensors file, written
//!   atomically ([`safetensors_io`]).
//! - [`plot`]: a PNG of the loss and accuracy curves.

pub mod checkpoint;
pub mod loops;
pub mod model;
pub mod plot;
pub mod progress;
pub mod pyfmt;
pub mod run;
pub mod safetensors_io;

pub use checkpoint::{Checkpoint, History};
pub use loops::{evaluate, test_loop, train_loop, LoopOptions, Report};
pub use model::{parse_impl, quickstart_model, OptimizerKind};
pub use run::{eval, load_model, train, EvalConfig, TrainConfig, TrainReport};
