//! Parity checks of the optim kernels (`kernels/optim.cu`, `kernels/foreach.cu`) against
//! the CPU implementation.
//!
//! Each check builds the same parameters, gradients and optimizer on the CPU and on the
//! GPU device, runs a few steps on both and compares parameters and state. Sizes are odd,
//! include empty tensors, more tensors than one zero launch holds and a tensor of several
//! multi-tensor chunks.

use super::Check;
use crate::base::{Error, Result};
use crate::optim::multi_tensor::{CHUNK, ZERO_MAX};
use crate::optim::{Adam, AdamConfig, AdamW, GradScaler, Impl, Optimizer, SgdConfig, SGD};
use crate::tensor::{DType, Device, Tensor};

/// The optimizer configurations under test.
#[derive(Clone, Copy, Debug)]
enum Kind {
    SgdMomentum,
    SgdNesterov,
    Adam,
    AdamWAmsgrad,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::SgdMomentum,
        Kind::SgdNesterov,
        Kind::Adam,
        Kind::AdamWAmsgrad,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::SgdMomentum => "sgd_momentum",
            Kind::SgdNesterov => "sgd_nesterov",
            Kind::Adam => "adam",
            Kind::AdamWAmsgrad => "adamw_amsgrad",
        }
    }

    /// The optimizer over `params` with the chosen implementation.
    fn build(self, params: Vec<Tensor>, imp: Impl) -> Result<Box<dyn Optimizer>> {
        let mut o: Box<dyn Optimizer> = match self {
            Kind::SgdMomentum => Box::new(SGD::new(
                params,
                SgdConfig::new(0.05)
                    .momentum(0.9)
                    .dampening(0.1)
                    .weight_decay(0.01),
            )?),
            Kind::SgdNesterov => Box::new(SGD::new(
                params,
                SgdConfig::new(0.05).momentum(0.8).nesterov(true),
            )?),
            Kind::Adam => Box::new(Adam::new(params, AdamConfig::new(0.01).weight_decay(0.02))?),
            Kind::AdamWAmsgrad => Box::new(AdamW::new(
                params,
                AdamConfig::adamw(0.01).weight_decay(0.1).amsgrad(true),
            )?),
        };
        o.set_impl(imp);
        Ok(o)
    }
}

/// Tolerance `(rtol, atol)` of a GPU result against the CPU's in `dtype`.
fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (4e-3, 4e-3),
        DType::BF16 => (1.6e-2, 1.6e-2),
        DType::F32 => (2e-5, 2e-6),
        _ => (1e-12, 1e-14),
    }
}

/// Compares a device tensor with its CPU counterpart element by element.
fn close(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    if got.shape() != want.shape() {
        return Err(Error::Optim(format!(
            "{what}: shape {:?} vs {:?}",
            got.shape(),
            want.shape()
        )));
    }
    let (rtol, atol) = tol(want.dtype());
    let (g, w) = (got.to_vec_f64()?, want.to_vec_f64()?);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if !(a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs()) {
            return Err(Error::Optim(format!(
                "{what}: element {i}: device {a} vs cpu {b}"
            )));
        }
    }
    Ok(())
}

/// The same leaf parameters on the CPU and on `device`.
fn leaves(sizes: &[usize], dtype: DType, device: Device, seed: u64) -> Result<Vec<[Tensor; 2]>> {
    let mut out = Vec::with_capacity(sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        let c = Tensor::randn(&[n], seed + i as u64, dtype, Device::Cpu)?;
        let d = c.to_device(device)?;
        c.requires_grad_(true)?;
        d.requires_grad_(true)?;
        out.push([c, d]);
    }
    Ok(out)
}

/// Gives each pair the same fresh gradient (scaled by `scale`) on both sides.
fn set_grads(ps: &[[Tensor; 2]], seed: u64, scale: f64) -> Result<()> {
    for (i, [c, d]) in ps.iter().enumerate() {
        let v: Vec<f64> =
            Tensor::randn(c.shape(), seed * 7919 + i as u64, DType::F64, Device::Cpu)?
                .to_vec_f64()?
                .into_iter()
                .map(|x| x * scale)
                .collect();
        let g = Tensor::from_f64s(&v, c.shape(), c.dtype(), Device::Cpu)?;
        d.set_grad(Some(g.to_device(d.device())?))?;
        c.set_grad(Some(g))?;
    }
    Ok(())
}

/// Compares every parameter and its state buffers.
fn compare(ps: &[[Tensor; 2]], cpu: &dyn Optimizer, dev: &dyn Optimizer) -> Result<()> {
    for (i, [c, d]) in ps.iter().enumerate() {
        close(&format!("param {i}"), d, c)?;
        match (cpu.param_state(i)?, dev.param_state(i)?) {
            (Some(sc), Some(sd)) => {
                if sc.step != sd.step {
                    return Err(Error::Optim(format!(
                        "param {i}: step {:?} vs cpu {:?}",
                        sd.step, sc.step
                    )));
                }
                for (name, want) in &sc.buffers {
                    let got = sd
                        .buffer(name)
                        .ok_or_else(|| Error::Optim(format!("param {i}: no {name} on device")))?;
                    close(&format!("param {i} {name}"), got, want)?;
                }
            }
            (None, None) => {}
            _ => return Err(Error::Optim(format!("param {i}: state on one side only"))),
        }
    }
    Ok(())
}

/// Three steps of `kind` with `imp` on the CPU and on `device`.
fn step_parity(device: Device, kind: Kind, imp: Impl, dtype: DType, sizes: &[usize]) -> Result<()> {
    let ps = leaves(sizes, dtype, device, 11)?;
    let mut cpu = kind.build(ps.iter().map(|p| p[0].clone()).collect(), imp)?;
    let mut dev = kind.build(ps.iter().map(|p| p[1].clone()).collect(), imp)?;
    for s in 0..3 {
        set_grads(&ps, s + 1, 1.0)?;
        cpu.step()?;
        dev.step()?;
        compare(&ps, cpu.as_ref(), dev.as_ref())?;
    }
    Ok(())
}

/// Odd sizes, an empty tensor and a tensor of several chunks (not a chunk multiple).
fn odd_sizes() -> Vec<usize> {
    vec![0, 1, 7, 1023, 4099, 2 * CHUNK as usize + 17, 31]
}

/// More tensors than a zero launch holds, some empty.
fn many_sizes() -> Vec<usize> {
    (0..ZERO_MAX + 50).map(|i| (i * 37) % 129).collect()
}

/// `foreach_zero` over more tensors than one launch holds, f32 and f16, then set_to_none.
fn zero_parity(device: Device) -> Result<()> {
    let mut sizes = many_sizes();
    sizes.push(CHUNK as usize + 3);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let ps = leaves(&sizes, dtype, device, 5)?;
        set_grads(&ps, 3, 1.0)?;
        let dev_params: Vec<Tensor> = ps.iter().map(|p| p[1].clone()).collect();
        let mut opt = SGD::new(dev_params, SgdConfig::new(0.1))?;
        let grads: Vec<Tensor> = ps.iter().filter_map(|p| p[1].grad()).collect();
        opt.zero_grad(false)?;
        for (i, [_, d]) in ps.iter().enumerate() {
            let g = d
                .grad()
                .ok_or_else(|| Error::Optim(format!("grad {i} vanished")))?;
            if !g.shares_storage(&grads[i]) {
                return Err(Error::Optim(format!("grad {i}: zeroing replaced it")));
            }
            if let Some(x) = g.to_vec_f64()?.iter().find(|&&x| x != 0.0) {
                return Err(Error::Optim(format!("grad {i}: {x} after zero_grad")));
            }
        }
        opt.zero_grad(true)?;
        if ps.iter().any(|p| p[1].grad().is_some()) {
            return Err(Error::Optim("set_to_none left a grad".into()));
        }
    }
    Ok(())
}

/// `clip_grad_norm_` of every order, `clip_grad_value_`, and the scaler's `unscale_` over
/// f16, bf16, f32 and f64 grads of odd sizes, against the CPU (`foreach` on or off).
fn clip_parity(device: Device, foreach: bool) -> Result<()> {
    let mut ps = Vec::new();
    for (k, dtype) in [DType::F16, DType::BF16, DType::F32, DType::F64]
        .into_iter()
        .enumerate()
    {
        let sizes: Vec<usize> = odd_sizes().into_iter().filter(|&n| n > 0).collect();
        ps.extend(leaves(&sizes, dtype, device, 60 + k as u64)?);
    }
    let side = |i: usize| -> Vec<Tensor> { ps.iter().map(|p| p[i].clone()).collect() };
    let (cpu, dev) = (side(0), side(1));
    // With `in_f32` the grads are compared in f32 (at most): a coefficient computed from
    // f32 grads' norms scales the f64 grads too.
    let grads_close = |what: &str, in_f32: bool| -> Result<()> {
        for (i, [c, d]) in ps.iter().enumerate() {
            if let (Some(gc), Some(gd)) = (c.grad(), d.grad()) {
                let (gc, gd) = if in_f32 && gc.dtype() == DType::F64 {
                    (gc.to_dtype(DType::F32)?, gd.to_dtype(DType::F32)?)
                } else {
                    (gc, gd)
                };
                close(&format!("{what}: grad {i}"), &gd, &gc)?;
            }
        }
        Ok(())
    };
    let per = ps.len() / 4;
    for (s, norm_type) in [2.0, 1.0, f64::INFINITY, 3.0, 0.0].into_iter().enumerate() {
        // All four dtypes at once (an f64 total), then each dtype's grads alone.
        for part in [0..ps.len(), 0..per, per..2 * per, 2 * per..3 * per] {
            set_grads(&ps, 70 + s as u64, 1.0)?;
            let what = format!("clip_grad_norm_ order {norm_type} over {part:?}");
            let (c, d) = (&cpu[part.clone()], &dev[part]);
            let tc = crate::optim::clip_grad_norm_(c, 0.5, norm_type, false, Some(foreach))?;
            let td = crate::optim::clip_grad_norm_(d, 0.5, norm_type, false, Some(foreach))?;
            // Compared in f32: the f32 grads' norms are summed in f32 on the device.
            let f32 = |t: &Tensor| t.to_device(Device::Cpu)?.to_dtype(DType::F32);
            close(&format!("{what}: total"), &f32(&td)?, &f32(&tc)?)?;
            grads_close(&what, true)?;
        }
    }
    set_grads(&ps, 80, 1.0)?;
    crate::optim::clip_grad_value_(&cpu, 0.3, Some(foreach))?;
    crate::optim::clip_grad_value_(&dev, 0.3, Some(foreach))?;
    grads_close("clip_grad_value_", false)?;
    set_grads(&ps, 81, 512.0)?;
    let mut oc = SGD::new(cpu, SgdConfig::new(0.1))?;
    let mut od = SGD::new(dev, SgdConfig::new(0.1))?;
    let mut sc = GradScaler::with_options(Device::Cpu, 512.0, 2.0, 0.5, 2)?;
    let mut sd = GradScaler::with_options(device, 512.0, 2.0, 0.5, 2)?;
    sc.unscale_(&mut oc)?;
    sd.unscale_(&mut od)?;
    grads_close("unscale_", false)?;
    if sc.found_inf()? || sd.found_inf()? {
        return Err(Error::Optim("unscale_: found_inf on finite grads".into()));
    }
    Ok(())
}

/// The gradient scaler on f16, bf16, f32 and f64 params: unscaled step parity, a skipped
/// step on an inf, and the scale updates (growth after the interval, backoff on inf).
fn scaler_parity(device: Device, imp: Impl) -> Result<()> {
    let mut ps = Vec::new();
    for (k, dtype) in [DType::F16, DType::F32, DType::F64, DType::BF16]
        .into_iter()
        .enumerate()
    {
        ps.extend(leaves(
            &[0, 5, 1029, CHUNK as usize + 9],
            dtype,
            device,
            40 + k as u64,
        )?);
    }
    let mut cpu = Kind::AdamWAmsgrad.build(ps.iter().map(|p| p[0].clone()).collect(), imp)?;
    let mut dev = Kind::AdamWAmsgrad.build(ps.iter().map(|p| p[1].clone()).collect(), imp)?;
    let mut sc = GradScaler::with_options(Device::Cpu, 256.0, 2.0, 0.5, 2)?;
    let mut sd = GradScaler::with_options(device, 256.0, 2.0, 0.5, 2)?;
    for s in 0..4u64 {
        let scale = sc.scale_tensor().item()?;
        set_grads(&ps, s + 20, scale)?;
        if s == 2 {
            // An inf in the f32 grads: the step is skipped and the scale backs off.
            for [c, d] in &ps[5..6] {
                let mut v = c.grad().map_or(Ok(Vec::new()), |g| g.to_vec_f64())?;
                v[0] = f64::INFINITY;
                let g = Tensor::from_f64s(&v, c.shape(), c.dtype(), Device::Cpu)?;
                d.set_grad(Some(g.to_device(device)?))?;
                c.set_grad(Some(g))?;
            }
        }
        sc.step(cpu.as_mut())?;
        sd.step(dev.as_mut())?;
        if sc.found_inf()? != sd.found_inf()? || sd.found_inf()? != (s == 2) {
            return Err(Error::Optim(format!(
                "step {s}: found_inf device {} cpu {}",
                sd.found_inf()?,
                sc.found_inf()?
            )));
        }
        compare(&ps, cpu.as_ref(), dev.as_ref())?;
        for (i, [c, d]) in ps.iter().enumerate() {
            if let (Some(gc), Some(gd)) = (c.grad(), d.grad()) {
                close(&format!("unscaled grad {i}"), &gd, &gc)?;
            }
        }
        sc.update()?;
        sd.update()?;
        close("scale", sd.scale_tensor(), sc.scale_tensor())?;
    }
    Ok(())
}

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    let mut v = Vec::new();
    let imps = [
        (Impl::ForLoop, "forloop"),
        (Impl::Foreach, "foreach"),
        (Impl::Fused, "fused"),
    ];
    for kind in Kind::ALL {
        for (imp, iname) in imps {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                v.push(Check {
                    name: format!("optim/step/{}/{iname}/{dtype}/odd", kind.name()),
                    run: Box::new(move |d| step_parity(d, kind, imp, dtype, &odd_sizes())),
                });
            }
            v.push(Check {
                name: format!("optim/step/{}/{iname}/f32/many", kind.name()),
                run: Box::new(move |d| step_parity(d, kind, imp, DType::F32, &many_sizes())),
            });
        }
        v.push(Check {
            name: format!("optim/step/{}/fused/f64/odd", kind.name()),
            run: Box::new(move |d| step_parity(d, kind, Impl::Fused, DType::F64, &odd_sizes())),
        });
    }
    v.push(Check {
        name: "optim/zero_grad/many".into(),
        run: Box::new(zero_parity),
    });
    for (imp, iname) in imps {
        v.push(Check {
            name: format!("optim/scaler/{iname}"),
            run: Box::new(move |d| scaler_parity(d, imp)),
        });
    }
    for (foreach, name) in [(true, "foreach"), (false, "for_loop")] {
        v.push(Check {
            name: format!("optim/clip/{name}"),
            run: Box::new(move |d| clip_parity(d, foreach)),
        });
    }
    v
}
