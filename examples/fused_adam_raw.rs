//! Adam through the raw API: once on host slices, once on raw buffers of the emulated
//! GPU, and checks that both give the same weights.

use gradstep::backend::gpu;
use gradstep::optim::raw::{step_device, step_host, DeviceParam, HostParam};
use gradstep::optim::{AdamConfig, Hyper};
use gradstep::{Device, Result};

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn main() -> Result<()> {
    let hyper = Hyper::Adam {
        cfg: AdamConfig::new(0.01).weight_decay(0.1),
        decoupled: false,
    };
    let n = 1000;
    let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
    let grad_at = |step: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + step * 13) as f32 * 0.05).cos())
            .collect()
    };
    let steps = 5;

    // Host slices.
    let (mut p, mut m, mut v) = (init.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    for s in 1..=steps {
        let g = grad_at(s);
        let mut params = [HostParam {
            param: &mut p,
            grad: &g,
            state: vec![&mut m, &mut v],
        }];
        step_host(&hyper, s as u64, &mut params)?;
    }

    // Raw buffers on the emulated GPU.
    let dev = gpu::get(Device::Emu)?;
    let pd = dev.alloc(n * 4)?;
    dev.htod(&bytes(&init), pd.ptr())?;
    let (gd, md, vd) = (
        dev.alloc(n * 4)?,
        dev.alloc_zeroed(n * 4)?,
        dev.alloc_zeroed(n * 4)?,
    );
    let step_count = dev.alloc_zeroed(4)?;
    let param = DeviceParam {
        param: pd.ptr(),
        grad: gd.ptr(),
        state: [md.ptr(), vd.ptr(), 0],
        step: step_count.ptr(),
        numel: n as u64,
    };
    for s in 1..=steps {
        dev.htod(&bytes(&grad_at(s)), gd.ptr())?;
        // SAFETY: every pointer is a live allocation of `dev` holding `n` f32s (the step
        // count one f32), and no buffer is shared.
        unsafe { step_device(&dev, gradstep::DType::F32, &hyper, &[param], false)? };
    }
    let mut out = vec![0u8; n * 4];
    dev.dtoh(pd.ptr(), &mut out)?;
    let pe: Vec<f32> = out
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();

    let max_diff = p
        .iter()
        .zip(&pe)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let moved = p
        .iter()
        .zip(&init)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{steps} Adam steps on {n} weights: largest move {moved:.3e}");
    println!("host slices vs emulated device buffers: largest difference {max_diff:.3e}");
    if max_diff > 1e-5 {
        return Err(gradstep::Error::Optim(format!(
            "host and device disagree by {max_diff}"
        )));
    }
    println!("both agree");
    Ok(())
}
