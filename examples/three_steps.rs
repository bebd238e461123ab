//! The three steps of a training loop on a small MLP: zero_grad, backward, step.
//!
//! Runs on the GPU when there is one, else on the CPU:
//!
//!     cargo run --release --example three_steps

use gradstep::nn::{CrossEntropyLoss, Linear, Module, ReLU, Sequential};
use gradstep::optim::{Optimizer, SgdConfig, SGD};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Tensor};

fn main() -> gradstep::Result<()> {
    let device = Device::cuda_if_available(0);
    let mut rng = Rng::new(0);
    let model = Sequential::new()
        .add(Linear::new(784, 512, true, &mut rng, DType::F32, device)?)
        .add(ReLU)
        .add(Linear::new(512, 10, true, &mut rng, DType::F32, device)?);
    let mut opt = SGD::new(model.parameters(), SgdConfig::new(1e-2))?;
    let loss_fn = CrossEntropyLoss::new();
    let x = Tensor::rand(&[64, 784], 1, DType::F32, device)?;
    let y = Tensor::from_vec((0..64).map(|i| i % 10).collect::<Vec<i64>>(), &[64], device)?;
    for step in 0..5 {
        let loss = loss_fn.forward(&model.forward(&x)?, &y)?;
        opt.zero_grad(true)?;
        loss.backward()?;
        opt.step()?;
        println!("step {step}: loss {:.6} on {device}", loss.item()?);
    }
    Ok(())
}
