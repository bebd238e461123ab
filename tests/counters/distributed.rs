//! A data-parallel step on two emulated ranks: one all-reduce per bucket with the
//! bucket's bytes, and no host synchronisation in backward and step.

use std::time::Duration;

use gradstep::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
use gradstep::nn::{CrossEntropyLoss, Linear, Module, ReLU, Sequential};
use gradstep::optim::{AdamConfig, AdamW, Impl, Optimizer};
use gradstep::tensor::Rng;
use gradstep::{DType, Tensor};

use super::emu_lock;

#[test]
fn a_ddp_step_issues_one_all_reduce_per_bucket_and_no_host_sync() {
    let _guard = emu_lock();
    let groups = ProcessGroup::emulated(2, Duration::from_secs(60)).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = groups
            .into_iter()
            .map(|pg| {
                s.spawn(move || {
                    let dev = pg.device();
                    let mut rng = Rng::new(3);
                    let mut lin =
                        |i, o| Linear::new(i, o, true, &mut rng, DType::F32, dev).unwrap();
                    let (a, b) = (lin(64, 256), lin(256, 10));
                    let m = Sequential::new().add(a).add(ReLU::new()).add(b);
                    // Buckets of 64 KiB: the 64x256 weight (64 KiB) alone, the rest together.
                    let opts = DdpOptions {
                        bucket_cap_mb: 1.0 / 16.0,
                    };
                    let ddp = DistributedDataParallel::new(m.parameters(), pg, opts).unwrap();
                    let mut opt = AdamW::new(m.parameters(), AdamConfig::adamw(1e-3)).unwrap();
                    opt.set_impl(Impl::Fused);
                    let x = Tensor::ones(&[8, 64], DType::F32, dev).unwrap();
                    let y = Tensor::from_vec(vec![1i64; 8], &[8], dev).unwrap();
                    let mut step = || {
                        opt.zero_grad(true).unwrap();
                        let l = CrossEntropyLoss::new()
                            .forward(&m.forward(&x).unwrap(), &y)
                            .unwrap();
                        let before = dev.counters().unwrap();
                        l.backward().unwrap();
                        ddp.finish_reduction().unwrap();
                        opt.step().unwrap();
                        dev.counters().unwrap() - before
                    };
                    step(); // warm-up: the optimizer's state
                    (step(), ddp.buckets(), ddp.bucket_log())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (d, buckets, log) in results {
        assert_eq!(buckets, vec![vec![3, 2, 1], vec![0]]);
        assert_eq!((d.syncs, d.dtoh), (0, 0), "{d:?}");
        assert_eq!(d.collectives, 2, "{d:?}");
        let bytes: usize = log.iter().map(|b| b.bytes).sum();
        assert_eq!(d.collective_bytes, bytes as u64);
        // 10x256 weight, 10 and 256 biases (each view aligned to 64 floats) and 64x256.
        assert_eq!(bytes, (2560 + 64 + 256 + 64 * 256) * 4);
    }
}
