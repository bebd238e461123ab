//! gradstep's fused Adam on buffers another crate owns, on that crate's own stream.
//!
//! With a CUDA GPU (the `cuda` feature and a device): the parameters, grads and Adam
//! moments are cudarc `CudaSlice`s on a stream the example creates; gradstep steps them
//! on that stream (`RawStream::from_cu_stream`), copying nothing. Without one: the same
//! API over buffers of the emulated GPU (the `emu` feature). Either way the weights are
//! checked against gradstep's CPU optimizer, and the example fails if they differ.
//!
//! `cargo run --release --example raw_step`

use gradstep::optim::raw::{step_device, DeviceParam, RawStream};
use gradstep::optim::{Adam, AdamConfig, Hyper, Impl, Optimizer};
use gradstep::{DType, Device, Error, Result, Tensor};

const N: usize = 1000;
const STEPS: usize = 5;

fn init() -> Vec<f32> {
    (0..N).map(|i| (i as f32 * 0.1).sin()).collect()
}

fn grad_at(step: usize) -> Vec<f32> {
    (0..N)
        .map(|i| ((i * 7 + step * 13) as f32 * 0.05).cos())
        .collect()
}

fn config() -> AdamConfig {
    AdamConfig::new(0.01).weight_decay(0.1)
}

/// The same steps through the tensor-level optimizer on the CPU.
fn reference() -> Result<Vec<f32>> {
    let p = Tensor::from_vec(init(), &[N], Device::Cpu)?.requires_grad_(true)?;
    let mut opt = Adam::new(vec![p.clone()], config())?;
    opt.set_impl(Impl::ForLoop);
    for s in 1..=STEPS {
        p.set_grad(Some(Tensor::from_vec(grad_at(s), &[N], Device::Cpu)?))?;
        opt.step()?;
    }
    p.to_vec::<f32>()
}

/// The steps on buffers of the emulated GPU, through the raw API.
fn on_emulator() -> Result<Vec<f32>> {
    let device = Device::Emu(0);
    let buffer = |v: Vec<f32>| Tensor::from_vec(v, &[N], device);
    let (p, g) = (buffer(init())?, buffer(vec![0.0; N])?);
    let (m, v) = (buffer(vec![0.0; N])?, buffer(vec![0.0; N])?);
    let step = Tensor::zeros(&[], DType::F32, device)?;
    let param = DeviceParam {
        param: p.device_ptr()?,
        grad: g.device_ptr()?,
        state: [m.device_ptr()?, v.device_ptr()?, 0],
        step: step.device_ptr()?,
        numel: N as u64,
    };
    let hyper = Hyper::Adam {
        cfg: config(),
        decoupled: false,
    };
    for s in 1..=STEPS {
        g.copy_(&buffer(grad_at(s))?)?;
        // SAFETY: every address is a live emulated buffer of N f32s (the step count one
        // f32) that nothing else uses during the call.
        unsafe { step_device(device, RawStream::OWN, DType::F32, &hyper, &[param], false)? };
    }
    p.to_vec::<f32>()
}

/// The steps on cudarc buffers and a cudarc stream of device `ordinal`.
#[cfg(feature = "cuda")]
fn on_cuda(ordinal: usize) -> Result<Vec<f32>> {
    use cudarc::driver::{CudaContext, DevicePtr};
    let cuda = |e: cudarc::driver::DriverError| Error::Cuda {
        context: "the example's cudarc calls".into(),
        msg: format!("{e:?}"),
    };
    let ctx = CudaContext::new(ordinal).map_err(cuda)?;
    let stream = ctx.new_stream().map_err(cuda)?;
    let p = stream.clone_htod(&init()).map_err(cuda)?;
    let m = stream.alloc_zeros::<f32>(N).map_err(cuda)?;
    let v = stream.alloc_zeros::<f32>(N).map_err(cuda)?;
    let count = stream.alloc_zeros::<f32>(1).map_err(cuda)?;
    let hyper = Hyper::Adam {
        cfg: config(),
        decoupled: false,
    };
    for s in 1..=STEPS {
        let g = stream.clone_htod(&grad_at(s)).map_err(cuda)?;
        let (pp, _p) = p.device_ptr(&stream);
        let (gp, _g) = g.device_ptr(&stream);
        let (mp, _m) = m.device_ptr(&stream);
        let (vp, _v) = v.device_ptr(&stream);
        let (cp, _c) = count.device_ptr(&stream);
        let param = DeviceParam {
            param: pp,
            grad: gp,
            state: [mp, vp, 0],
            step: cp,
            numel: N as u64,
        };
        // SAFETY: the stream belongs to the device's primary context (cudarc retains it)
        // and lives past the call; every address is a cudarc allocation of N f32s (the
        // count one f32) used by nothing else until the stream has run the step.
        unsafe {
            let raw = RawStream::from_cu_stream(stream.cu_stream() as *mut std::ffi::c_void);
            step_device(
                Device::Cuda(ordinal),
                raw,
                DType::F32,
                &hyper,
                &[param],
                false,
            )?;
        }
    }
    stream.clone_dtoh(&p).map_err(cuda)
}

fn main() -> Result<()> {
    let want = reference()?;
    let (device, got) = match Device::cuda_if_available(0) {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => (format!("cudarc buffers on cuda:{n}"), on_cuda(n)?),
        _ => ("emulated device buffers".to_string(), on_emulator()?),
    };
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let moved = want
        .iter()
        .zip(init())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{STEPS} Adam steps on {N} weights: largest move {moved:.3e}");
    println!("{device} vs the CPU optimizer: largest difference {diff:.3e}");
    if diff > 1e-5 || moved == 0.0 {
        return Err(Error::Optim(format!("the raw step disagrees by {diff}")));
    }
    println!("both agree");
    Ok(())
}
