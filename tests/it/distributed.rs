//! Process groups on emulated ranks: every collective against a CPU loop, the errors
//! of bad input, mismatched calls, a rank that leaves and one that never arrives, and
//! DistributedDataParallel against single-process gradients.

use std::time::{Duration, Instant};

use gradstep::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup, ReduceOp};
use gradstep::nn::{Linear, Module, ReLU, Sequential};
use gradstep::tensor::Rng;
use gradstep::{DType, Device, Tensor};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `f` on every rank of an emulated group of `world`, one thread each.
pub(crate) fn on_ranks<T: Send>(
    world: usize,
    timeout: Duration,
    f: impl Fn(ProcessGroup) -> gradstep::Result<T> + Sync,
) -> Vec<gradstep::Result<T>> {
    let groups = ProcessGroup::emulated(world, timeout).unwrap();
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = groups
            .into_iter()
            .map(|pg| s.spawn(move || f(pg)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn all_ok<T>(r: Vec<gradstep::Result<T>>) -> Vec<T> {
    r.into_iter().map(|x| x.unwrap()).collect()
}

/// Rank r's input: `n` values that differ per rank and per element.
fn input(rank: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((rank * 31 + i * 7) % 23) as f64 * 0.37 - 3.1 + rank as f64 * 1e-3)
        .collect()
}

/// A value rounded to `dtype` as the device stores it.
fn rounded(dtype: DType, v: &[f64]) -> Vec<f64> {
    Tensor::from_f64s(v, &[v.len()], dtype, Device::Cpu)
        .unwrap()
        .to_vec_f64()
        .unwrap()
}

#[test]
fn all_reduce_adds_in_rank_order_in_f32_for_every_dtype() {
    let world = 3;
    let n = 1000;
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for op in [ReduceOp::Sum, ReduceOp::Avg] {
            let got = all_ok(on_ranks(world, TIMEOUT, |pg| {
                let t = Tensor::from_f64s(&input(pg.rank(), n), &[10, 100], dtype, pg.device())?;
                pg.all_reduce(&t, op)?;
                t.to_vec_f64()
            }));
            let ins: Vec<Vec<f64>> = (0..world).map(|r| rounded(dtype, &input(r, n))).collect();
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    if dtype == DType::F64 {
                        let s: f64 = ins.iter().map(|v| v[i]).sum();
                        return if op == ReduceOp::Avg {
                            s / world as f64
                        } else {
                            s
                        };
                    }
                    let mut s = 0.0f32;
                    for v in &ins {
                        s += v[i] as f32;
                    }
                    if op == ReduceOp::Avg {
                        s /= world as f32;
                    }
                    s as f64
                })
                .collect();
            let want = rounded(dtype, &want);
            for (r, g) in got.iter().enumerate() {
                assert_eq!(g, &want, "{dtype} {op:?} rank {r}");
            }
        }
    }
}

#[test]
fn broadcast_all_gather_reduce_scatter_and_barrier() {
    let world = 3;
    let got = all_ok(on_ranks(world, TIMEOUT, |pg| {
        let r = pg.rank();
        let dev = pg.device();
        let b = Tensor::from_f64s(&input(r, 5), &[5], DType::F32, dev)?;
        pg.broadcast(&b, 2)?;
        let x = Tensor::from_f64s(&input(r, 4), &[2, 2], DType::F32, dev)?;
        let all = Tensor::zeros(&[world * 4], DType::F32, dev)?;
        pg.all_gather(&all, &x)?;
        let big = Tensor::from_f64s(&input(r, 6), &[6], DType::F32, dev)?;
        let mine = Tensor::zeros(&[2], DType::F32, dev)?;
        pg.reduce_scatter(&mine, &big, ReduceOp::Sum)?;
        pg.barrier()?;
        Ok((b.to_vec_f64()?, all.to_vec_f64()?, mine.to_vec_f64()?))
    }));
    let f32s = |v: Vec<f64>| rounded(DType::F32, &v);
    for (r, (b, all, mine)) in got.into_iter().enumerate() {
        assert_eq!(b, f32s(input(2, 5)), "broadcast on rank {r}");
        let gathered: Vec<f64> = (0..world).flat_map(|q| f32s(input(q, 4))).collect();
        assert_eq!(all, gathered, "all_gather on rank {r}");
        let want: Vec<f64> = (2 * r..2 * r + 2)
            .map(|i| (0..world).map(|q| f32s(input(q, 6))[i] as f32).sum::<f32>() as f64)
            .collect();
        assert_eq!(mine, want, "reduce_scatter on rank {r}");
    }
}

#[test]
fn collectives_refuse_bad_input_with_errors_that_name_it() {
    let errs = all_ok(on_ranks(2, TIMEOUT, |pg| {
        let dev = pg.device();
        let other = Device::Emu(1 - pg.rank());
        let mut e = Vec::new();
        let t = Tensor::zeros(&[4], DType::F32, other)?;
        e.push(pg.all_reduce(&t, ReduceOp::Sum).unwrap_err().to_string());
        let cpu = Tensor::zeros(&[4], DType::F32, Device::Cpu)?;
        e.push(pg.broadcast(&cpu, 0).unwrap_err().to_string());
        let m = Tensor::zeros(&[4, 4], DType::F32, dev)?.transpose(0, 1)?;
        e.push(pg.all_reduce(&m, ReduceOp::Sum).unwrap_err().to_string());
        let i = Tensor::zeros(&[4], DType::I64, dev)?;
        e.push(pg.all_reduce(&i, ReduceOp::Avg).unwrap_err().to_string());
        let x = Tensor::zeros(&[4], DType::F32, dev)?;
        e.push(pg.broadcast(&x, 2).unwrap_err().to_string());
        let small = Tensor::zeros(&[7], DType::F32, dev)?;
        e.push(pg.all_gather(&small, &x).unwrap_err().to_string());
        let odd = Tensor::zeros(&[5], DType::F32, dev)?;
        e.push(
            pg.reduce_scatter(&small, &odd, ReduceOp::Sum)
                .unwrap_err()
                .to_string(),
        );
        let half = Tensor::zeros(&[8], DType::F16, dev)?;
        e.push(pg.all_gather(&half, &x).unwrap_err().to_string());
        // Nothing reached the clique: the group still works.
        pg.all_reduce(&x, ReduceOp::Sum)?;
        Ok(e)
    }));
    for e in &errs {
        let want = [
            "is on emu",
            "is on cpu",
            "contiguous",
            "avg needs a floating-point tensor",
            "root rank 2 in a group of 2",
            "need 8",
            "does not split over 2 ranks",
            "the output is f16 and the input f32",
        ];
        for (got, w) in e.iter().zip(want) {
            assert!(got.contains(w), "{got:?} should say {w:?}");
        }
    }
    assert!(ProcessGroup::emulated(0, TIMEOUT).is_err());
    assert!(ProcessGroup::emulated(2, Duration::ZERO).is_err());
}

#[test]
fn ranks_that_call_different_collectives_all_fail_naming_both_calls() {
    let got = on_ranks(2, TIMEOUT, |pg| {
        let t = Tensor::zeros(&[3], DType::F32, pg.device())?;
        if pg.rank() == 0 {
            pg.all_reduce(&t, ReduceOp::Sum)
        } else {
            pg.broadcast(&t, 0)
        }
    });
    for r in got {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("rank 1 called broadcast") && e.contains("rank 0 called all_reduce"),
            "{e}"
        );
    }
}

#[test]
fn a_rank_that_leaves_early_fails_the_others_at_once_naming_it() {
    let start = Instant::now();
    let got = on_ranks(3, TIMEOUT, |pg| {
        let t = Tensor::ones(&[8], DType::F32, pg.device())?;
        pg.all_reduce(&t, ReduceOp::Sum)?;
        if pg.rank() == 1 {
            return Ok(()); // drops its group: leaves before the second all-reduce
        }
        pg.all_reduce(&t, ReduceOp::Sum)
    });
    assert!(
        start.elapsed() < TIMEOUT / 2,
        "the others waited for the timeout"
    );
    assert!(got[1].is_ok());
    for r in [0, 2] {
        let e = got[r].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("rank 1 left the group") && e.contains("collective #1"),
            "rank {r}: {e}"
        );
    }
}

#[test]
fn a_rank_that_never_arrives_fails_the_others_within_the_timeout() {
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let rank0_done = std::sync::Barrier::new(2);
    let got = on_ranks(2, timeout, |pg| {
        if pg.rank() == 1 {
            // Alive but busy elsewhere until rank 0 has given up.
            rank0_done.wait();
            return Ok(());
        }
        let t = Tensor::ones(&[8], DType::F32, pg.device())?;
        let r = pg.all_reduce(&t, ReduceOp::Sum);
        rank0_done.wait();
        r
    });
    let e = got[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("rank(s) [1] did not join collective #0") && e.contains("within 0.3 s"),
        "{e}"
    );
    assert!(start.elapsed() >= timeout);
}

/// The quickstart-shaped MLP (smaller), seeded.
fn mlp(device: Device) -> Sequential {
    let mut rng = Rng::new(7);
    let mut linear = |i, o| Linear::new(i, o, true, &mut rng, DType::F32, device).unwrap();
    let (l1, l2, l3) = (linear(12, 16), linear(16, 16), linear(16, 5));
    Sequential::new()
        .add(l1)
        .add(ReLU::new())
        .add(l2)
        .add(ReLU::new())
        .add(l3)
}

/// Inputs and targets of samples `lo..hi` of a fixed data set.
fn samples(lo: usize, hi: usize, device: Device) -> (Tensor, Tensor) {
    let x: Vec<f64> = (lo * 12..hi * 12)
        .map(|i| ((i * 37) % 19) as f64 / 9.0 - 1.0)
        .collect();
    let y: Vec<i64> = (lo..hi).map(|i| (i * 3 % 5) as i64).collect();
    (
        Tensor::from_f64s(&x, &[hi - lo, 12], DType::F32, device).unwrap(),
        Tensor::from_vec(y, &[hi - lo], device).unwrap(),
    )
}

fn loss_of(model: &mut Sequential, lo: usize, hi: usize, device: Device) -> Tensor {
    let (x, y) = samples(lo, hi, device);
    let logits = model.forward(&x).unwrap();
    gradstep::nn::CrossEntropyLoss::new()
        .forward(&logits, &y)
        .unwrap()
}

fn grads(params: &[Tensor]) -> Vec<Vec<f64>> {
    params
        .iter()
        .map(|p| p.grad().unwrap().to_vec_f64().unwrap())
        .collect()
}

fn close(a: &[Vec<f64>], b: &[Vec<f64>], what: &str) {
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-6 + 1e-5 * v.abs(), "{what}: {u} vs {v}");
        }
    }
}

#[test]
fn ddp_averages_the_gradients_of_the_shards_as_one_batch_does_issued_during_backward() {
    // One process, the whole batch of 16.
    let mut whole = mlp(Device::Emu(0));
    loss_of(&mut whole, 0, 16, Device::Emu(0))
        .backward()
        .unwrap();
    let want = grads(&whole.parameters());
    // Two ranks, 8 samples each. Buckets of at most 340 bytes: the last layer's weight
    // (320 bytes) and bias (20) share one, every other parameter has its own.
    let opts = DdpOptions {
        bucket_cap_mb: 340.0 / (1024.0 * 1024.0),
    };
    let got = all_ok(on_ranks(2, TIMEOUT, |pg| {
        let dev = pg.device();
        let rank = pg.rank();
        let mut model = mlp(dev);
        let ddp = DistributedDataParallel::new(model.parameters(), pg, opts)?;
        let lo = rank * 8;
        loss_of(&mut model, lo, lo + 8, dev).backward()?;
        ddp.finish_reduction()?;
        Ok((grads(&model.parameters()), ddp.bucket_log(), ddp.buckets()))
    }));
    for (g, log, buckets) in &got {
        close(g, &want, "ddp grads against one batch");
        // Reverse registration order: the last layer's parameters come first.
        assert_eq!(buckets, &[vec![5, 4], vec![3], vec![2], vec![1], vec![0]]);
        // Each layer's node delivers its weight and bias together; each bucket is issued
        // in that node's hook, while the earlier layers' grads are still to come.
        let pending: Vec<usize> = log.iter().map(|b| b.grads_pending).collect();
        assert_eq!(pending, [4, 2, 2, 0, 0], "{log:?}");
    }
    assert_eq!(got[0].0, got[1].0, "the ranks' grads differ");
}

#[test]
fn ddp_broadcasts_rank_zeros_parameters_and_no_sync_accumulates_like_a_double_batch() {
    // One process, one batch of 16 (mean loss over 16).
    let mut whole = mlp(Device::Emu(0));
    loss_of(&mut whole, 0, 16, Device::Emu(0))
        .backward()
        .unwrap();
    let want = grads(&whole.parameters());
    let got = all_ok(on_ranks(2, TIMEOUT, |pg| {
        let dev = pg.device();
        let rank = pg.rank();
        let mut model = mlp(dev);
        if rank == 1 {
            // A different initialisation on rank 1: the broadcast replaces it.
            let _g = gradstep::autograd::no_grad();
            model.parameters()[0].fill_(9.0)?;
        }
        let ddp = DistributedDataParallel::new(model.parameters(), pg, DdpOptions::default())?;
        // Two micro-batches of 4 per rank; each loss halved (the mean over 8 per rank).
        {
            let _local = ddp.no_sync();
            let lo = rank * 8;
            loss_of(&mut model, lo, lo + 4, dev)
                .mul_scalar(0.5)?
                .backward()?;
        }
        assert_eq!(ddp.reductions(), 0);
        let lo = rank * 8 + 4;
        loss_of(&mut model, lo, lo + 4, dev)
            .mul_scalar(0.5)?
            .backward()?;
        ddp.finish_reduction()?;
        assert_eq!(ddp.reductions(), 1);
        Ok(grads(&model.parameters()))
    }));
    for g in &got {
        close(g, &want, "no_sync accumulation against one batch");
    }
}

#[test]
fn ddp_refuses_bad_parameters_and_reports_an_unreduced_bucket() {
    let solo = || ProcessGroup::emulated(1, TIMEOUT).unwrap().pop().unwrap();
    let dev = Device::Emu(0);
    let a = Tensor::ones(&[3], DType::F32, dev)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let cpu = Tensor::ones(&[3], DType::F32, Device::Cpu)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let frozen = Tensor::ones(&[3], DType::F32, dev).unwrap();
    let cases = [
        (vec![cpu], DdpOptions::default(), "is on cpu"),
        (vec![frozen], DdpOptions::default(), "requires grad"),
        (
            vec![a.clone(), a.clone()],
            DdpOptions::default(),
            "listed twice",
        ),
        (
            vec![a.clone()],
            DdpOptions { bucket_cap_mb: 0.0 },
            "bucket_cap_mb",
        ),
    ];
    for (params, opts, want) in cases {
        let e = DistributedDataParallel::new(params, solo(), opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
    let errs = on_ranks(2, TIMEOUT, |pg| {
        let dev = pg.device();
        let a = Tensor::ones(&[3], DType::F32, dev)?.requires_grad_(true)?;
        let b = Tensor::ones(&[3], DType::F32, dev)?.requires_grad_(true)?;
        // One bucket per parameter; b gets no gradient.
        let tiny = DdpOptions {
            bucket_cap_mb: 1e-6,
        };
        let ddp = DistributedDataParallel::new(vec![a.clone(), b], pg, tiny)?;
        a.mul_scalar(2.0)?.sum_all()?.backward()?;
        ddp.finish_reduction()
    });
    for e in errs {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("parameters [1] got no gradient"), "{e}");
    }
}

mod rendezvous {
    use std::time::{Duration, Instant};

    use gradstep::distributed::rendezvous::{fetch, RankEnv, Server};

    const LOOPBACK: &str = "127.0.0.1";

    #[test]
    fn rank_zero_serves_every_peer_over_loopback() {
        let server = Server::bind(LOOPBACK, 0).unwrap();
        let port = server.port().unwrap();
        let blob: Vec<u8> = (0..128).map(|i| (i * 7) as u8).collect();
        let t = Duration::from_secs(20);
        let got = std::thread::scope(|s| {
            let peers: Vec<_> = (1..4)
                .map(|r| s.spawn(move || fetch(LOOPBACK, port, r, 4, t)))
                .collect();
            server.serve(4, &blob, t).unwrap();
            peers
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(got.iter().all(|b| b == &blob));
    }

    #[test]
    fn a_peer_that_never_comes_is_named_within_the_timeout() {
        let server = Server::bind(LOOPBACK, 0).unwrap();
        let port = server.port().unwrap();
        let t = Duration::from_millis(400);
        let start = Instant::now();
        let e = std::thread::scope(|s| {
            let peer = s.spawn(move || fetch(LOOPBACK, port, 1, 3, Duration::from_secs(20)));
            let e = server.serve(3, b"id", t).unwrap_err().to_string();
            assert_eq!(peer.join().unwrap().unwrap(), b"id");
            e
        });
        assert!(e.contains("rank(s) [2] of 3 did not reach rank 0"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_peer_gives_up_on_an_absent_rank_zero_after_bounded_retries() {
        // A port nobody listens on: bind one, note it, close it.
        let port = Server::bind(LOOPBACK, 0).unwrap().port().unwrap();
        let start = Instant::now();
        let e = fetch(LOOPBACK, port, 1, 2, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rank 1 could not reach rank 0 at 127.0.0.1:"),
            "{e}"
        );
        assert!(e.contains("attempts"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn mismatched_world_sizes_and_taken_ranks_are_refused() {
        let server = Server::bind(LOOPBACK, 0).unwrap();
        let port = server.port().unwrap();
        let t = Duration::from_secs(20);
        let e = std::thread::scope(|s| {
            let peer = s.spawn(move || fetch(LOOPBACK, port, 1, 5, t));
            let e = server.serve(2, b"id", t).unwrap_err().to_string();
            let _ = peer.join().unwrap(); // the peer sees the connection closed
            e
        });
        assert!(e.contains("rank 1 says WORLD_SIZE=5, rank 0 has 2"), "{e}");
    }

    #[test]
    fn torchrun_variables_are_read_and_checked() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(RankEnv::from_lookup(env(&[])).unwrap(), None);
        let r = RankEnv::from_lookup(env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            r,
            RankEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                master_addr: "127.0.0.1".into(),
                master_port: 29500
            }
        );
        let bad: [(&'static [(&'static str, &'static str)], &str); 5] = [
            (&[("WORLD_SIZE", "two")], "WORLD_SIZE=`two`"),
            (&[("WORLD_SIZE", "2")], "RANK is not"),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "2")],
                "RANK=2 with WORLD_SIZE=2",
            ),
            (&[("WORLD_SIZE", "0"), ("RANK", "0")], "WORLD_SIZE=0"),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")],
                "MASTER_PORT=`70000`",
            ),
        ];
        for (vars, want) in bad {
            let e = RankEnv::from_lookup(env(vars)).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }
}
