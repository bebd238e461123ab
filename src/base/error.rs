//! The crate's one error type.

use std::path::PathBuf;

use super::{DType, Device};

/// Every fallible gradstep call returns this error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must agree (or broadcast) do not.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// Two tensors of one op have different dtypes.
    #[error("{op}: dtype mismatch: {lhs} vs {rhs}")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    /// Two tensors of one op live on different devices.
    #[error("{op}: device mismatch: {lhs} vs {rhs}")]
    DeviceMismatch {
        op: &'static str,
        lhs: Device,
        rhs: Device,
    },
    /// An op does not support this dtype on this device.
    #[error("{op}: dtype {dtype} is not supported on {device}")]
    Unsupported {
        op: &'static str,
        dtype: DType,
        device: Device,
    },
    /// An argument is out of range or otherwise invalid.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// libcuda could not be loaded.
    #[error("no CUDA driver: libcuda could not be loaded (use --device cpu, or emu to run the CUDA kernels on the host)")]
    NoCudaDriver,
    /// The driver is present but the requested ordinal does not exist.
    #[error("no CUDA device {ordinal}: {count} device(s) found")]
    NoSuchDevice { ordinal: usize, count: usize },
    /// A CUDA driver, NVRTC or cuBLAS call failed.
    #[error("CUDA: {context}: {msg}")]
    Cuda { context: String, msg: String },
    /// A kernel could not be found, loaded or launched.
    #[error("kernel {kernel}: {msg}")]
    Kernel { kernel: String, msg: String },
    /// A device allocation failed.
    #[error("out of memory on {device}: {bytes} bytes requested")]
    OutOfMemory { device: Device, bytes: usize },
    /// Misuse of the autograd graph (backward twice, non-scalar output, ...).
    #[error("autograd: {0}")]
    Autograd(String),
    /// Invalid optimizer configuration or state.
    #[error("optimizer: {0}")]
    Optim(String),
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file whose content is not what was expected.
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    /// The device exists in the API but this build of gradstep left its backend out.
    #[error("{device}: gradstep was built without its `{feature}` feature")]
    NotBuilt {
        device: Device,
        feature: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
