//! The raw API against the optimizers: host slices (f32, f16) and emulated device
//! buffers give the values of the tensor-level optimizers.

use gradstep::backend::gpu::{self, GpuDevice};
use gradstep::optim::raw::{
    step_device, step_host, zero_device, zero_host, DeviceParam, HostParam,
};
use gradstep::optim::{Adam, AdamConfig, Hyper, Impl, Optimizer, SgdConfig, SGD};
use gradstep::{DType, Device, Tensor};
use half::f16;
use std::sync::Arc;

mod common;
use common::assert_close;

fn values(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * k + 0.3).sin()).collect()
}

/// `steps` updates of one parameter through the tensor-level optimizer (for-loop form).
fn reference(hyper: Hyper, init: &[f32], grads: &[Vec<f32>], dtype: DType) -> Vec<f64> {
    let p = Tensor::from_vec(init.to_vec(), &[init.len()], Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    p.requires_grad_(true).unwrap();
    let mut opt: Box<dyn Optimizer> = match hyper {
        Hyper::Sgd(c) => Box::new(SGD::new(vec![p.clone()], c).unwrap()),
        Hyper::Adam { cfg, .. } => Box::new(Adam::new(vec![p.clone()], cfg).unwrap()),
    };
    opt.set_impl(Impl::ForLoop);
    for g in grads {
        let g = Tensor::from_vec(g.clone(), &[g.len()], Device::Cpu).unwrap();
        p.set_grad(Some(g.to_dtype(dtype).unwrap())).unwrap();
        opt.step().unwrap();
    }
    p.to_vec_f64().unwrap()
}

fn cases() -> Vec<Hyper> {
    vec![
        Hyper::Sgd(SgdConfig::new(0.1).momentum(0.9).nesterov(true)),
        Hyper::Adam {
            cfg: AdamConfig::new(0.01).weight_decay(0.05).amsgrad(true),
            decoupled: false,
        },
    ]
}

#[test]
fn host_steps_match_the_optimizers_f32_and_f16() {
    let n = 37;
    let init = values(n, 0.7);
    let grads: Vec<Vec<f32>> = (1..4).map(|s| values(n, 0.2 * s as f32)).collect();
    for hyper in cases() {
        let k = hyper.buffer_names().len();
        let want = reference(hyper, &init, &grads, DType::F32);
        let (mut p, mut st) = (init.clone(), vec![vec![0.0f32; n]; k]);
        for (s, g) in grads.iter().enumerate() {
            let state = st.iter_mut().map(|b| &mut b[..]).collect();
            let mut ps = [HostParam {
                param: &mut p,
                grad: g,
                state,
            }];
            step_host(&hyper, s as u64 + 1, &mut ps).unwrap();
        }
        let got: Vec<f64> = p.iter().map(|&x| f64::from(x)).collect();
        assert_close(&format!("f32 host step {hyper:?}"), &got, &want, 1e-6, 1e-6);
        assert_ne!(got, init.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());

        let want = reference(hyper, &init, &grads, DType::F16);
        let mut p: Vec<f16> = init.iter().map(|&x| f16::from_f32(x)).collect();
        let mut st = vec![vec![f16::ZERO; n]; k];
        for (s, g) in grads.iter().enumerate() {
            let g: Vec<f16> = g.iter().map(|&x| f16::from_f32(x)).collect();
            let state = st.iter_mut().map(|b| &mut b[..]).collect();
            let mut ps = [HostParam {
                param: &mut p,
                grad: &g,
                state,
            }];
            step_host(&hyper, s as u64 + 1, &mut ps).unwrap();
        }
        let got: Vec<f64> = p.iter().map(|x| f64::from(x.to_f32())).collect();
        assert_close(&format!("f16 host step {hyper:?}"), &got, &want, 1e-3, 1e-3);
    }
}

#[test]
fn host_step_rejects_bad_buffers() {
    let hyper = cases()[1];
    let (mut p, g, mut m) = (vec![0.0f32; 3], vec![0.0f32; 3], vec![0.0f32; 3]);
    let mut ps = [HostParam {
        param: &mut p,
        grad: &g,
        state: vec![&mut m],
    }];
    assert!(step_host(&hyper, 1, &mut ps).is_err());
    let mut z = [vec![1.0f32; 4], vec![2.0; 0]];
    zero_host(&mut z.iter_mut().map(|v| &mut v[..]).collect::<Vec<_>>());
    assert_eq!(z[0], vec![0.0; 4]);
}

fn upload(dev: &Arc<GpuDevice>, v: &[f32]) -> gradstep::backend::gpu::DeviceBuffer {
    let b = dev.alloc((v.len() * 4).max(4)).unwrap();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    dev.htod(&bytes, b.ptr()).unwrap();
    b
}

fn download(dev: &GpuDevice, ptr: u64, n: usize) -> Vec<f64> {
    let mut out = vec![0u8; n * 4];
    dev.dtoh(ptr, &mut out).unwrap();
    out.chunks_exact(4)
        .map(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

#[test]
fn device_steps_and_zero_match_the_optimizers_on_the_emulator() {
    let dev = gpu::get(Device::Emu).unwrap();
    let sizes = [0usize, 5, 70_001];
    for hyper in cases() {
        let k = hyper.buffer_names().len();
        let inits: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 0.01)).collect();
        let grads: Vec<Vec<Vec<f32>>> = sizes
            .iter()
            .map(|&n| (1..4).map(|s| values(n, 0.003 * s as f32)).collect())
            .collect();
        let bufs: Vec<_> = inits.iter().map(|v| upload(&dev, v)).collect();
        let gbufs: Vec<_> = sizes
            .iter()
            .map(|&n| dev.alloc((n * 4).max(4)).unwrap())
            .collect();
        let state: Vec<Vec<_>> = sizes
            .iter()
            .map(|&n| {
                (0..k)
                    .map(|_| dev.alloc_zeroed((n * 4).max(4)).unwrap())
                    .collect()
            })
            .collect();
        let steps: Vec<_> = sizes.iter().map(|_| dev.alloc_zeroed(4).unwrap()).collect();
        let params: Vec<DeviceParam> = (0..sizes.len())
            .map(|i| {
                let mut s = [0u64; 3];
                for (j, b) in state[i].iter().enumerate() {
                    s[j] = b.ptr();
                }
                DeviceParam {
                    param: bufs[i].ptr(),
                    grad: gbufs[i].ptr(),
                    state: s,
                    step: if hyper.has_step() { steps[i].ptr() } else { 0 },
                    numel: sizes[i] as u64,
                }
            })
            .collect();
        for s in 0..3 {
            for (g, buf) in grads.iter().zip(&gbufs) {
                let b: Vec<u8> = g[s].iter().flat_map(|x| x.to_ne_bytes()).collect();
                dev.htod(&b, buf.ptr()).unwrap();
            }
            // SAFETY: live allocations of `dev` of the stated sizes, none shared.
            unsafe { step_device(&dev, DType::F32, &hyper, &params, s == 0).unwrap() };
        }
        for i in 0..sizes.len() {
            let want = reference(hyper, &inits[i], &grads[i], DType::F32);
            let got = download(&dev, bufs[i].ptr(), sizes[i]);
            assert_close(&format!("device param {i}"), &got, &want, 1e-5, 1e-5);
        }
        let ranges: Vec<(u64, u64)> = (0..sizes.len())
            .map(|i| (gbufs[i].ptr(), sizes[i] as u64 * 4))
            .collect();
        // SAFETY: the grad buffers are live allocations of `dev` of these sizes.
        unsafe { zero_device(&dev, &ranges).unwrap() };
        for i in 0..sizes.len() {
            assert!(download(&dev, gbufs[i].ptr(), sizes[i])
                .iter()
                .all(|&x| x == 0.0));
        }
        // A missing state buffer is an error, not a launch.
        let mut bad = params[1];
        bad.state[0] = 0;
        assert!(unsafe { step_device(&dev, DType::F32, &hyper, &[bad], false) }.is_err());
    }
}
