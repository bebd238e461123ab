//! The lower-level API: multi-tensor zero and fused optimizer steps over raw buffers,
//! for crates that keep their own parameter storage.
//!
//! Two back ends, both reusing the optimizers' own code (the CPU loops of
//! [`crate::optim::cpu`] and the kernels of `kernels/optim.cu` / `kernels/foreach.cu`
//! through the multi-tensor tables of [`crate::optim::multi_tensor`]):
//!
//! - host slices: [`zero_host`] and [`step_host`] over `&mut [E]` parameters and state,
//!   `&[E]` gradients, `E` one of `f32`, `f64`, `half::f16` (f16 computes in f32);
//! - device buffers: [`zero_device`] and [`step_device`] over device pointers and element
//!   counts on a [`GpuDevice`] (CUDA or the emulator). A cudarc `CudaSlice` is covered by
//!   passing its device pointer and length with the [`GpuDevice`] of its CUDA device.
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

use std::sync::Arc;

use crate::backend::gpu::GpuDevice;
use crate::error::{Error, Result};
use crate::optim::config::Hyper;
use crate::optim::core::scalars;
use crate::optim::cpu::{self, Elem, Lanes, Real};
use crate::optim::gpu::opt_args;
use crate::optim::multi_tensor::{launch_zero, DeviceTable, MtTensor, Phase, FLAG_FIRST};
use crate::tensor::DType;

/// One parameter on the host: its values, gradient and state buffers.
pub struct HostParam<'a, E: Elem> {
    /// The parameter, updated in place.
    pub param: &'a mut [E],
    /// Its gradient, of the same length.
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
        // The loops write the gradient only when unscaling; they take it mutable.
        let mut g = p.grad.to_vec();
        let mut st = p.state.iter_mut();
        let lanes = Lanes {
            p: &mut *p.param,
            g: &mut g,
            b0: st.next().map_or(&mut [][..], |s| &mut **s),
            b1: st.next().map_or(&mut [][..], |s| &mut **s),
            b2: st.next().map_or(&mut [][..], |s| &mut **s),
            master: &mut [],
        };
        cpu::run_fused(&job, lanes);
    }
    Ok(())
}

/// One parameter on a device: pointers to buffers of `numel` elements of the step's
/// dtype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceParam {
    /// The parameter.
    pub param: u64,
    /// Its gradient.
    pub grad: u64,
    /// State buffers in [`Hyper::buffer_names`] order; unused slots are 0.
    pub state: [u64; 3],
    /// Adam/AdamW: a device `f32` holding the number of updates so far (starts at 0, the
    /// kernel advances it); 0 for SGD.
    pub step: u64,
    /// Elements.
    pub numel: u64,
}

/// Zeroes device ranges `(pointer, bytes)` with one `foreach_zero` launch per
/// [`crate::optim::multi_tensor::ZERO_MAX`] ranges.
///
/// # Safety
/// Each range must be memory of `dev` that is valid for writes.
pub unsafe fn zero_device(dev: &Arc<GpuDevice>, ranges: &[(u64, u64)]) -> Result<()> {
    if ranges.iter().any(|r| r.0 == 0 && r.1 > 0) {
        return Err(Error::Optim("raw zero: a null device pointer".into()));
    }
    launch_zero(dev, ranges)
}

/// One fused update of every device parameter: one launch of `optim_step_{dtype}` for
/// all of them (the table is uploaded once per call; no host synchronisation).
///
/// `first` tells SGD that the momentum buffers are new (they take the gradient as is);
/// Adam reads and advances each parameter's device step count instead.
///
/// ```
/// use gradstep::optim::raw::{step_device, DeviceParam};
/// use gradstep::optim::{Hyper, SgdConfig};
/// use gradstep::{backend::gpu, DType, Device};
/// # fn main() -> gradstep::Result<()> {
/// let dev = gpu::get(Device::Emu)?; // or Device::Cuda(0)
/// let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
/// let (p, g) = (dev.alloc(8)?, dev.alloc(8)?);
/// dev.htod(&f32s(&[1.0, 2.0]), p.ptr())?;
/// dev.htod(&f32s(&[0.5, -0.5]), g.ptr())?;
/// let param = DeviceParam { param: p.ptr(), grad: g.ptr(), numel: 2, ..Default::default() };
/// let hyper = Hyper::Sgd(SgdConfig::new(0.1));
/// // SAFETY: both pointers hold two f32s of `dev`; nothing else uses them.
/// unsafe { step_device(&dev, DType::F32, &hyper, &[param], true)? };
/// let mut out = [0u8; 8];
/// dev.dtoh(p.ptr(), &mut out)?;
/// assert_eq!(out.to_vec(), f32s(&[0.95, 2.05]));
/// # Ok(()) }
/// ```
///
/// # Safety
/// Every pointer must address `numel` elements of `dtype` (the step count one `f32`) in
/// memory of `dev`, and no two parameters may share a buffer.
pub unsafe fn step_device(
    dev: &Arc<GpuDevice>,
    dtype: DType,
    hyper: &Hyper,
    params: &[DeviceParam],
    first: bool,
) -> Result<()> {
    hyper.validate()?;
    crate::optim::multi_tensor::step_kernel(dtype)?;
    let want = hyper.buffer_names().len();
    let mut host = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let have = p.state.iter().take_while(|&&s| s != 0).count();
        check_state_count(hyper, i, have)?;
        if p.state[want..].iter().any(|&s| s != 0) {
            return Err(Error::Optim(format!(
                "raw step: param {i} has state pointers beyond the {want} {hyper:?} uses"
            )));
        }
        if p.param == 0 || p.grad == 0 || (hyper.has_step() && p.step == 0) {
            return Err(Error::Optim(format!(
                "raw step: param {i} has a null param, grad or (Adam) step pointer"
            )));
        }
        host.push(MtTensor {
            p: p.param,
            g: p.grad,
            b0: p.state[0],
            b1: p.state[1],
            b2: p.state[2],
            step: if hyper.has_step() { p.step } else { 0 },
            numel: p.numel,
            flags: if first && matches!(hyper, Hyper::Sgd(_)) {
                FLAG_FIRST
            } else {
                0
            },
            ..Default::default()
        });
    }
    if host.is_empty() {
        return Ok(());
    }
    let n = host.len();
    let table = DeviceTable::upload(dev, host)?;
    table.launch(dev, dtype, 0, n, opt_args(hyper, Phase::All), 0, 0)
}
