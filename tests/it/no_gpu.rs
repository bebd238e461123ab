//! The CUDA backend on a machine without a driver (the CI machine): every entry point
//! returns an error instead of panicking. Where a driver is installed, the same calls
//! must agree with what the driver reports.

use gradstep::{DType, Device, Error, Tensor};

/// Whether libcuda can be opened, found independently of the backend's own probe.
fn driver_installed() -> bool {
    ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        .iter()
        .any(|name| {
            // SAFETY: opening the driver library runs only its initialisers.
            unsafe { libloading::Library::new(name) }.is_ok()
        })
}

#[test]
fn device_count_reports_a_missing_driver() {
    match Device::cuda_device_count() {
        Err(Error::NoCudaDriver) => assert!(!driver_installed()),
        Ok(_) => assert!(driver_installed()),
        Err(e) => assert!(driver_installed(), "unexpected error without a driver: {e}"),
    }
}

#[test]
fn cuda_if_available_falls_back_to_the_cpu() {
    let want = match Device::cuda_device_count() {
        Ok(n) if n > 0 => Device::Cuda(0),
        _ => Device::Cpu,
    };
    assert_eq!(Device::cuda_if_available(0), want);
    if !driver_installed() {
        assert_eq!(Device::cuda_if_available(0), Device::Cpu);
        assert_eq!(Device::cuda_if_available(7), Device::Cpu);
        assert_eq!(Device::parse("auto").unwrap(), Device::Cpu);
    }
}

#[test]
fn cuda_tensor_without_a_driver_is_an_error() {
    if driver_installed() {
        return;
    }
    let r = Tensor::zeros(&[2], DType::F32, Device::Cuda(0));
    assert!(matches!(r, Err(Error::NoCudaDriver)), "got {r:?}");
    // A second attempt (the device cache must not have stored a half-made device).
    let r = Tensor::zeros(&[3], DType::F16, Device::Cuda(1));
    assert!(matches!(r, Err(Error::NoCudaDriver)), "got {r:?}");
    let msg = Error::NoCudaDriver.to_string();
    assert!(msg.contains("libcuda"), "{msg}");
}

#[test]
fn device_parse_accepts_the_documented_forms() {
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert_eq!(Device::parse("emu").unwrap(), Device::Emu(0));
    assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
    assert_eq!(Device::parse("cuda:3").unwrap(), Device::Cuda(3));
}

#[test]
fn device_parse_rejects_junk() {
    for junk in [
        "", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:1.5", "cuda0", " cpu",
    ] {
        match Device::parse(junk) {
            Err(Error::InvalidArgument { msg, .. }) => {
                assert!(msg.contains(&format!("'{junk}'")), "{junk:?}: {msg}")
            }
            other => panic!("{junk:?} parsed as {other:?}"),
        }
    }
}
