//! The lower-level API: multi-tensor zero and fused optimizer steps over buffers that
//! another crate owns (plain host slices, cudarc `CudaSlice`s, the device pointer of a
//! candle or burn tensor).
//!
//! Both sides reuse the optimizers' own code: the CPU loops of the fused CPU step, and
//! the kernels of `kernels/optim.cu` / `kernels/foreach.cu` through the multi-tensor
//! tables of the GPU step.
//!
//! - Host slices: [`zero_host`] and [`step_host`] over `&mut [E]` parameters and state
//!   and `&[E]` gradients (read in place, never copied), `E` one of `f32`, `f64`,
//!   `half::f16` (f16 computes in f32).
//! - Device buffers: [`zero_device`] and [`step_device`] over device addresses and
//!   element counts on a [`Device`] (CUDA, or the emulator with the `emu` feature). The
//!   caller's stream is joined both ways with events: gradstep's work starts after the
//!   work already queued on the caller's stream and the caller's later work starts after
//!   gradstep's, with no host synchronisation and no copy of any buffer.
//!
//! The update is chosen with a [`Hyper`]: `Hyper::Sgd(SgdConfig)` or
//! `Hyper::Adam { cfg, decoupled }` (AdamW when `decoupled`). State buffers come in
//! [`Hyper::buffer_names`] order: `momentum_buffer` (SGD with momentum), or `exp_avg`,
//! `exp_avg_sq` and, with amsgrad, `max_exp_avg_sq`; they start zeroed.
//!
//! ```
//! use gradstep::optim::raw::{step_host, HostParam};
//! use gradstep::optim::{AdamConfig, Hyper};
//! # fn main() -> gradstep::Result<()> {
//! let hyper = Hyper::Adam { cfg: AdamConfig::new(0.1), decoupled: false };
//! let (mut p, g) = (vec![1.0f32, -1.0], vec![0.5f32, -0.5]);
//! let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
//! let mut params = [HostParam { param: &mut p, grad: &g, state: vec![&mut m, &mut v] }];
//! step_host(&hyper, 1, &mut params)?;
//! // Adam's first step moves each weight by lr against the sign of its gradient.
//! assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 0.9).abs() < 1e-6);
//! # Ok(()) }
//! ```
//!
//! The device functions write through raw addresses, so they are `unsafe`:
//!
//! ```compile_fail
//! use gradstep::optim::raw::{step_device, DeviceParam, RawStream};
//! use gradstep::optim::{Hyper, SgdConfig};
//! use gradstep::{DType, Device};
//! let p = DeviceParam { param: 0x1000, grad: 0x2000, numel: 4, ..Default::default() };
//! let hyper = Hyper::Sgd(SgdConfig::new(0.1));
//! // error[E0133]: call to unsafe function requires an unsafe block
//! step_device(Device::Emu(0), RawStream::OWN, DType::F32, &hyper, &[p], true);
//! ```

use crate::base::{DType, Device, Error, Result};
use crate::optim::config::Hyper;
use crate::optim::core::scalars;
use crate::optim::loops::{self, Elem, GradLane, Lanes, Real};

/// One parameter on the host: its values, gradient and state buffers.
pub struct HostParam<'a, E: Elem> {
    /// The parameter, updated in place.
    pub param: &'a mut [E],
    /// Its gradient, of the same length (read, not copied).
    pub grad: &'a [E],
    /// The state buffers in [`Hyper::buffer_names`] order, each of the same length.
    pub state: Vec<&'a mut [E]>,
}

/// Zeroes host buffers (the multi-tensor zero of the CPU).
///
/// ```
/// let (mut a, mut b) = (vec![1.0f32; 3], vec![2.0f32; 5]);
/// gradstep::optim::raw::zero_host(&mut [&mut a[..], &mut b[..]]);
/// assert!(a.iter().chain(&b).all(|&x| x == 0.0));
/// ```
pub fn zero_host<E: Elem>(bufs: &mut [&mut [E]]) {
    let zero = E::store(<E::R as Real>::of(0.0));
    bufs.iter_mut().for_each(|b| b.fill(zero));
}

/// Checks a buffer count against what `hyper` needs.
fn check_state_count(hyper: &Hyper, i: usize, have: usize) -> Result<()> {
    let want = hyper.buffer_names().len();
    if have != want {
        return Err(Error::Optim(format!(
            "raw step: param {i} has {have} state buffers, {hyper:?} needs {want} ({:?})",
            hyper.buffer_names()
        )));
    }
    Ok(())
}

/// One fused update of every host parameter (the CPU fused form of the optimizers).
///
/// `step` is the number of this update, starting at 1: Adam's bias corrections use it,
/// and SGD's momentum buffer takes the gradient as is when it is 1. Every length and the
/// number of state buffers are checked before anything changes.
pub fn step_host<E: Elem>(hyper: &Hyper, step: u64, params: &mut [HostParam<'_, E>]) -> Result<()> {
    hyper.validate()?;
    if step == 0 {
        return Err(Error::Optim("raw step: step numbers start at 1".into()));
    }
    for (i, p) in params.iter().enumerate() {
        check_state_count(hyper, i, p.state.len())?;
        let n = p.param.len();
        if p.grad.len() != n || p.state.iter().any(|s| s.len() != n) {
            return Err(Error::Optim(format!(
                "raw step: param {i} has {n} elements but its grad or a state buffer differs"
            )));
        }
    }
    let job = scalars::<E::R>(hyper, step as f64, step == 1, None);
    for p in params.iter_mut() {
        let mut st = p.state.iter_mut();
        let lanes = Lanes {
            p: &mut *p.param,
            g: GradLane::Read(p.grad),
            b0: st.next().map_or(&mut [][..], |s| &mut **s),
            b1: st.next().map_or(&mut [][..], |s| &mut **s),
            b2: st.next().map_or(&mut [][..], |s| &mut **s),
            master: &mut [],
        };
        loops::run_fused(&job, lanes);
    }
    Ok(())
}

/// The stream a raw device call is ordered with: the device's own stream, or a stream
/// that another library created in the device's primary context (a `CUstream`, such as
/// cudarc's `CudaStream::cu_stream()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStream(u64);

impl RawStream {
    /// gradstep's own stream of the device (the only stream of the emulator).
    pub const OWN: RawStream = RawStream(0);

    /// A caller's CUDA stream; null is [`Self::OWN`].
    ///
    /// # Safety
    /// `stream` is a `CUstream` of the primary context of the device it is used with, and
    /// lives until the calls given it return.
    pub unsafe fn from_cu_stream(stream: *mut std::ffi::c_void) -> RawStream {
        RawStream(stream as u64)
    }
}

/// One parameter on a device: addresses of buffers of `numel` elements of the step's
/// dtype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceParam {
    /// The parameter.
    pub param: u64,
    /// Its gradient.
    pub grad: u64,
    /// State buffers in [`Hyper::buffer_names`] order; unused slots are 0.
    pub state: [u64; 3],
    /// Adam/AdamW: a device `f32` of this parameter alone holding the number of updates
    /// so far (starts at 0, the kernel advances it); 0 for SGD.
    pub step: u64,
    /// Elements.
    pub numel: u64,
}

/// Checks that no two of the byte ranges `(start, len)` overlap (`what` names them).
fn disjoint(mut ranges: Vec<(u64, u64, String)>) -> Result<()> {
    ranges.retain(|r| r.1 > 0);
    ranges.sort_by_key(|r| r.0);
    for w in ranges.windows(2) {
        if w[0].0.checked_add(w[0].1).is_none_or(|end| end > w[1].0) {
            return Err(Error::Optim(format!(
                "raw step: {} and {} overlap (each tensor needs its own buffers, and Adam a \
                 step counter of its own)",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}

/// Zeroes device ranges `(address, bytes)` with one multi-tensor launch per
/// [`ZERO_TENSORS_PER_LAUNCH`] ranges, ordered with `stream` (see the module docs).
///
/// # Safety
/// Each range is memory of `device` valid for writes, not used by other work meanwhile;
/// `stream` is a stream of `device`.
pub unsafe fn zero_device(device: Device, stream: RawStream, ranges: &[(u64, u64)]) -> Result<()> {
    if ranges.iter().any(|r| r.0 == 0 && r.1 > 0) {
        return Err(Error::Optim("raw zero: a null device pointer".into()));
    }
    #[cfg(gpu)]
    // SAFETY: forwarded contract.
    return unsafe { device_side::zero(device, stream, ranges) };
    #[cfg(not(gpu))]
    {
        let _ = stream;
        Err(crate::backend::not_built(device))
    }
}

/// Ranges one zero launch holds.
pub const ZERO_TENSORS_PER_LAUNCH: usize = 200;

/// One fused update of every device parameter: one launch of `optim_step_{dtype}` for all
/// of them, ordered with `stream` (see the module docs). The table of pointers is
/// uploaded once per call; no host synchronisation.
///
/// `first` tells SGD that the momentum buffers are new (they take the gradient as is);
/// Adam reads and advances each parameter's own device step count instead. Before
/// anything is queued, every buffer of every parameter is checked not to overlap any
/// other (and, on the emulator, to lie inside an allocation).
///
/// ```
/// use gradstep::optim::raw::{step_device, DeviceParam, RawStream};
/// use gradstep::optim::{Hyper, SgdConfig};
/// use gradstep::{DType, Device, Tensor};
/// # fn main() -> gradstep::Result<()> {
/// let device = Device::Emu(0); // or a Device::Cuda(n) with buffers of its own
/// let p = Tensor::from_vec(vec![1.0f32, 2.0], &[2], device)?;
/// let g = Tensor::from_vec(vec![0.5f32, -0.5], &[2], device)?;
/// let param = DeviceParam {
///     param: p.device_ptr()?,
///     grad: g.device_ptr()?,
///     numel: 2,
///     ..Default::default()
/// };
/// let hyper = Hyper::Sgd(SgdConfig::new(0.1));
/// // SAFETY: both addresses hold two f32s of `device`; nothing else uses them meanwhile.
/// unsafe { step_device(device, RawStream::OWN, DType::F32, &hyper, &[param], true)? };
/// assert_eq!(p.to_vec::<f32>()?, vec![0.95, 2.05]);
/// # Ok(()) }
/// ```
///
/// # Safety
/// Every address holds `numel` elements of `dtype` (the step count one `f32`) in memory
/// of `device` that no other work uses meanwhile; `stream` is a stream of `device`.
pub unsafe fn step_device(
    device: Device,
    stream: RawStream,
    dtype: DType,
    hyper: &Hyper,
    params: &[DeviceParam],
    first: bool,
) -> Result<()> {
    hyper.validate()?;
    if !dtype.is_float() {
        return Err(Error::Optim(format!(
            "raw step: can't optimize {dtype} buffers"
        )));
    }
    let want = hyper.buffer_names().len();
    let size = dtype.size_in_bytes() as u64;
    let mut ranges = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if p.numel > 0 {
            let have = p.state.iter().take_while(|&&s| s != 0).count();
            check_state_count(hyper, i, have)?;
        }
        if p.state[want..].iter().any(|&s| s != 0) {
            return Err(Error::Optim(format!(
                "raw step: param {i} has state pointers beyond the {want} {hyper:?} uses"
            )));
        }
        let null = p.param == 0 || p.grad == 0 || p.state[..want].contains(&0);
        if (null && p.numel > 0) || (hyper.has_step() && p.step == 0) {
            return Err(Error::Optim(format!(
                "raw step: param {i} has a null param, grad, state or (Adam) step pointer"
            )));
        }
        let bytes = p.numel.checked_mul(size).ok_or_else(|| {
            Error::Optim(format!("raw step: param {i}: numel {} overflows", p.numel))
        })?;
        ranges.push((p.param, bytes, format!("param {i}")));
        ranges.push((p.grad, bytes, format!("the grad of param {i}")));
        for (k, &s) in p.state[..want].iter().enumerate() {
            ranges.push((s, bytes, format!("state buffer {k} of param {i}")));
        }
        if hyper.has_step() {
            ranges.push((p.step, 4, format!("the step count of param {i}")));
        }
    }
    #[cfg(gpu)]
    device_side::check_emulated(device, &ranges)?;
    disjoint(ranges)?;
    if params.is_empty() {
        return Ok(());
    }
    #[cfg(gpu)]
    {
        let host = device_side::entries(hyper, params, first);
        // SAFETY: forwarded contract; the buffers were checked not to overlap.
        unsafe { device_side::step(device, stream, dtype, hyper, host) }
    }
    #[cfg(not(gpu))]
    {
        let _ = (stream, first);
        Err(crate::backend::not_built(device))
    }
}

/// The device half of the raw API: tables, launches and the stream handshake.
#[cfg(gpu)]
mod device_side {
    use super::{DeviceParam, RawStream};
    use crate::backend::gpu::{self, Stream};
    use crate::base::{DType, Device, Result};
    use crate::optim::config::Hyper;
    use crate::optim::launch::opt_args;
    use crate::optim::multi_tensor::{launch_zero, DeviceTable, MtTensor, Phase, FLAG_FIRST};

    /// Runs `work` on the device's own stream between the two halves of the handshake
    /// with `stream`.
    ///
    /// # Safety
    /// `stream` is a stream of `device`.
    unsafe fn joined(
        device: Device,
        stream: RawStream,
        work: impl FnOnce(&gpu::GpuDevice) -> Result<()>,
    ) -> Result<()> {
        let dev = gpu::get(device)?;
        let theirs = match stream.0 {
            0 => Stream::Own,
            s => Stream::Foreign(s),
        };
        // SAFETY: the caller's contract for a foreign stream.
        unsafe { dev.stream_wait(Stream::Own, theirs)? };
        work(&dev)?;
        // SAFETY: as above.
        unsafe { dev.stream_wait(theirs, Stream::Own) }
    }

    /// Checks, on the emulator, that every range lies inside an allocation.
    pub(super) fn check_emulated(device: Device, ranges: &[(u64, u64, String)]) -> Result<()> {
        #[cfg(feature = "emu")]
        if device.is_emu() {
            for (ptr, bytes, what) in ranges {
                if *bytes > 0 && !crate::backend::emu::holds(*ptr, *bytes as usize) {
                    return Err(crate::Error::Optim(format!(
                        "raw step: {what} ({bytes} bytes at {ptr:#x}) is not inside one \
                         emulated allocation"
                    )));
                }
            }
        }
        let _ = (device, ranges);
        Ok(())
    }

    /// See [`super::zero_device`].
    pub(super) unsafe fn zero(
        device: Device,
        stream: RawStream,
        ranges: &[(u64, u64)],
    ) -> Result<()> {
        let named: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.0, r.1, format!("range {i}")))
            .collect();
        check_emulated(device, &named)?;
        // SAFETY: forwarded contract.
        unsafe { joined(device, stream, |dev| launch_zero(dev, ranges)) }
    }

    /// The table entry of each parameter.
    pub(super) fn entries(hyper: &Hyper, params: &[DeviceParam], first: bool) -> Vec<MtTensor> {
        let flags = if first && matches!(hyper, Hyper::Sgd(_)) {
            FLAG_FIRST
        } else {
            0
        };
        params
            .iter()
            .map(|p| MtTensor {
                p: p.param,
                g: p.grad,
                b0: p.state[0],
                b1: p.state[1],
                b2: p.state[2],
                step: if hyper.has_step() { p.step } else { 0 },
                numel: p.numel,
                flags,
                ..Default::default()
            })
            .collect()
    }

    /// Uploads the table and launches the fused step over it. See [`super::step_device`].
    pub(super) unsafe fn step(
        device: Device,
        stream: RawStream,
        dtype: DType,
        hyper: &Hyper,
        host: Vec<MtTensor>,
    ) -> Result<()> {
        let n = host.len();
        // SAFETY: forwarded contract.
        unsafe {
            joined(device, stream, |dev| {
                let table = DeviceTable::upload(dev, host)?;
                table.launch(dev, dtype, 0, n, opt_args(hyper, Phase::All), 0, 0)
            })
        }
    }
}
