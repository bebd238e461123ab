//! The raw API against the optimizers: host slices (f32, f16) and emulated device
//! buffers give the values of the tensor-level optimizers.

use gradstep::optim::raw::{
    step_device, step_host, zero_device, zero_host, DeviceParam, HostParam, RawStream,
};
use gradstep::optim::{Adam, AdamConfig, Hyper, Impl, Optimizer, SgdConfig, SGD};
use gradstep::{DType, Device, Tensor};
use half::f16;

use crate::common::assert_close;

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

/// An emulated f32 buffer holding `v` (a tensor: its device address is the buffer).
fn on_emu(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], Device::Emu(0)).unwrap()
}

fn addr(t: &Tensor) -> u64 {
    t.device_ptr().unwrap()
}

/// Buffers of one parameter for a raw device step: param, grad, state, step count.
struct Buffers {
    param: Tensor,
    grad: Tensor,
    state: Vec<Tensor>,
    step: Tensor,
}

impl Buffers {
    fn new(init: &[f32], hyper: &Hyper) -> Buffers {
        let n = init.len();
        Buffers {
            param: on_emu(init),
            grad: on_emu(&vec![0.0; n]),
            state: (0..hyper.buffer_names().len())
                .map(|_| on_emu(&vec![0.0; n]))
                .collect(),
            step: Tensor::zeros(&[], DType::F32, Device::Emu(0)).unwrap(),
        }
    }

    fn param(&self, hyper: &Hyper) -> DeviceParam {
        let mut state = [0u64; 3];
        for (j, b) in self.state.iter().enumerate() {
            state[j] = addr(b);
        }
        DeviceParam {
            param: addr(&self.param),
            grad: addr(&self.grad),
            state,
            step: if hyper.has_step() {
                addr(&self.step)
            } else {
                0
            },
            numel: self.param.numel() as u64,
        }
    }
}

#[test]
fn device_steps_and_zero_match_the_optimizers_on_the_emulator() {
    let sizes = [0usize, 5, 70_001];
    for hyper in cases() {
        let inits: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 0.01)).collect();
        let grads: Vec<Vec<Vec<f32>>> = sizes
            .iter()
            .map(|&n| (1..4).map(|s| values(n, 0.003 * s as f32)).collect())
            .collect();
        let bufs: Vec<Buffers> = inits.iter().map(|v| Buffers::new(v, &hyper)).collect();
        let params: Vec<DeviceParam> = bufs.iter().map(|b| b.param(&hyper)).collect();
        for s in 0..3 {
            for (g, b) in grads.iter().zip(&bufs) {
                b.grad.copy_(&on_emu(&g[s])).unwrap();
            }
            // SAFETY: the buffers are live emulated tensors of the stated sizes, none
            // shared, and nothing else uses them during the call.
            unsafe {
                step_device(
                    Device::Emu(0),
                    RawStream::OWN,
                    DType::F32,
                    &hyper,
                    &params,
                    s == 0,
                )
                .unwrap()
            };
        }
        for (i, b) in bufs.iter().enumerate() {
            let want = reference(hyper, &inits[i], &grads[i], DType::F32);
            let got = b.param.to_vec_f64().unwrap();
            assert_close(&format!("device param {i}"), &got, &want, 1e-5, 1e-5);
        }
        let ranges: Vec<(u64, u64)> = bufs
            .iter()
            .map(|b| (addr(&b.grad), b.grad.numel() as u64 * 4))
            .collect();
        // SAFETY: the grad tensors are live emulated buffers of these sizes.
        unsafe { zero_device(Device::Emu(0), RawStream::OWN, &ranges).unwrap() };
        for b in &bufs {
            assert!(b.grad.to_vec_f64().unwrap().iter().all(|&x| x == 0.0));
        }
        // A missing state buffer is an error, not a launch.
        let mut bad = params[1];
        bad.state[0] = 0;
        let step = |ps: &[DeviceParam]| unsafe {
            step_device(
                Device::Emu(0),
                RawStream::OWN,
                DType::F32,
                &hyper,
                ps,
                false,
            )
        };
        assert!(step(&[bad]).is_err());
        // Two parameters sharing a buffer, or Adam's step counter, are refused.
        let mut shared = params[2];
        shared.grad = params[2].param;
        let err = step(&[params[1], shared]).unwrap_err().to_string();
        assert!(err.contains("overlap"), "{err}");
        if hyper.has_step() {
            let mut same_step = params[2];
            same_step.step = params[1].step;
            // (params[1] and params[2] are otherwise disjoint)
            let err = step(&[params[1], same_step]).unwrap_err().to_string();
            assert!(err.contains("step count"), "{err}");
        }
        // A buffer reaching past its allocation is refused on the emulator.
        let mut long = params[1];
        long.numel = 100_000;
        let err = step(&[long]).unwrap_err().to_string();
        assert!(err.contains("not inside"), "{err}");
    }
}
