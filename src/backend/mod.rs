//! Backends: the CPU, CUDA, and the host emulation of CUDA, behind one dispatch layer.

pub mod cpu;
pub mod cuda;
pub mod dispatch;
pub mod emu;
pub mod gpu;
