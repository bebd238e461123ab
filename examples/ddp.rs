//! Data-parallel training on emulated ranks: two `emu` devices, one thread each, train a
//! linear model on their halves of each batch through `DistributedDataParallel`; the
//! result is checked against one rank training on the whole batches on the CPU, and the
//! example fails if they differ.
//!
//! `cargo run --release --example ddp` (needs the `emu` feature)

use std::time::Duration;

use gradstep::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
use gradstep::nn::{Linear, MSELoss, Module};
use gradstep::optim::{Optimizer, SgdConfig, SGD};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Error, Result, Tensor};

const BATCH: usize = 16;
const STEPS: usize = 10;

/// Samples `lo..hi` of step `step`: inputs of 4 features, targets of a fixed linear map.
fn batch(step: usize, lo: usize, hi: usize, device: Device) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (lo * 4..hi * 4)
        .map(|i| (((i + step * 64) * 37) % 29) as f32 / 14.0 - 1.0)
        .collect();
    let y: Vec<f32> = x
        .chunks(4)
        .map(|r| r[0] - 2.0 * r[1] + 0.5 * r[3])
        .collect();
    Ok((
        Tensor::from_vec(x, &[hi - lo, 4], device)?,
        Tensor::from_vec(y, &[hi - lo, 1], device)?,
    ))
}

/// Trains on `device`; with a group, on its rank's half of each batch through DDP.
fn train(device: Device, pg: Option<ProcessGroup>) -> Result<Vec<f32>> {
    let model = Linear::new(4, 1, true, &mut Rng::new(5), DType::F32, device)?;
    let (lo, hi) = match &pg {
        Some(pg) => (pg.rank() * BATCH / 2, (pg.rank() + 1) * BATCH / 2),
        None => (0, BATCH),
    };
    let ddp = pg
        .map(|pg| DistributedDataParallel::new(model.parameters(), pg, DdpOptions::default()))
        .transpose()?;
    let mut opt = SGD::new(model.parameters(), SgdConfig::new(0.1))?;
    for step in 0..STEPS {
        let (x, y) = batch(step, lo, hi, device)?;
        opt.zero_grad(true)?;
        MSELoss::new()
            .forward(&model.forward(&x)?, &y)?
            .backward()?;
        if let Some(d) = &ddp {
            d.finish_reduction()?;
        }
        opt.step()?;
    }
    let p = model.parameters();
    Ok([p[0].to_vec::<f32>()?, p[1].to_vec::<f32>()?].concat())
}

fn main() -> Result<()> {
    let want = train(Device::Cpu, None)?;
    let groups = ProcessGroup::emulated(2, Duration::from_secs(60))?;
    let ranks: Vec<Result<Vec<f32>>> = std::thread::scope(|s| {
        let hs: Vec<_> = groups
            .into_iter()
            .map(|pg| s.spawn(move || train(pg.device(), Some(pg))))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("ddp", "a rank panicked")))
            })
            .collect()
    });
    for (r, got) in ranks.into_iter().enumerate() {
        let got = got?;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        println!("rank {r}: {got:?} (largest difference from one rank on the CPU: {worst:e})");
        if worst > 1e-5 {
            return Err(Error::invalid(
                "ddp",
                "the ranks did not train like one rank",
            ));
        }
    }
    Ok(())
}
