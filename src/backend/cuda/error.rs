//! Conversions of driver and cuBLAS errors into [`Error`].

use cudarc::cublas::result::CublasError;
use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;

use crate::base::Device;
use crate::base::Error;

/// `CUDA_ERROR_NAME: description` of a driver error.
pub(super) fn describe(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned());
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned());
    match (name, text) {
        (Ok(n), Ok(t)) => format!("{n}: {t}"),
        (Ok(n), Err(_)) => n,
        _ => format!("{:?}", e.0),
    }
}

/// A failed driver call: [`Error::Cuda`] with the call named.
pub(super) fn cuda(context: impl Into<String>, e: DriverError) -> Error {
    Error::Cuda {
        context: context.into(),
        msg: describe(&e),
    }
}

/// A failed allocation: [`Error::OutOfMemory`] when the device is full, else [`Error::Cuda`].
pub(super) fn alloc(device: Device, bytes: usize, e: DriverError) -> Error {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory { device, bytes }
    } else {
        cuda(format!("allocating {bytes} bytes on {device}"), e)
    }
}

/// A kernel that could not be loaded or launched: [`Error::Kernel`] naming it.
pub(super) fn kernel(name: &str, what: &str, e: DriverError) -> Error {
    let mut msg = format!("{what}: {}", describe(&e));
    if matches!(
        e.0,
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION | CUresult::CUDA_ERROR_INVALID_PTX
    ) {
        msg.push_str(" (the PTX needs a CUDA 13.0 driver, 580 or newer)");
    }
    Error::Kernel {
        kernel: name.to_string(),
        msg,
    }
}

/// A failed cuBLAS call: [`Error::Cuda`].
pub(super) fn cublas(context: impl Into<String>, e: CublasError) -> Error {
    Error::Cuda {
        context: context.into(),
        msg: format!("{:?}", e.0),
    }
}
