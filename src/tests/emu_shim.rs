//! The host emulator's shim and scheduler: barriers, warp shuffles and votes, atomics
//! across blocks, static and dynamic shared memory with blocks in parallel, half
//! conversions, the random schedule catching a missing `__syncthreads`, deadlock and
//! launch-error reporting, and a real kernel of `kernels/*.cu` end to end.

use std::sync::Arc;

use crate::backend::emu::{self, EmuApi, Schedule};
use crate::backend::gpu::{
    self, kernels::k, DeviceApi, GpuDevice, KernelArgs, KernelId, LaunchConfig,
};
use crate::base::DeviceBuffer;
use crate::{DType, Device, Tensor};

const SCHEDULES: [Schedule; 3] = [
    Schedule::RoundRobin,
    Schedule::Random(1),
    Schedule::Random(0xdead_beef),
];

fn dev() -> Arc<GpuDevice> {
    gpu::get(Device::Emu(0)).expect("emulated device")
}

fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain-old-data element types only (integers and floats).
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// A device buffer holding a copy of `v`.
fn upload<T: Copy>(v: &[T]) -> DeviceBuffer {
    let b = dev().alloc(std::mem::size_of_val(v)).unwrap();
    dev().htod(bytes_of(v), b.ptr()).unwrap();
    b
}

/// A zeroed device buffer of `n` elements of `T`.
fn zeros<T: Copy>(n: usize) -> DeviceBuffer {
    dev().alloc_zeroed(n * std::mem::size_of::<T>()).unwrap()
}

fn download<T: Copy + Default>(b: &DeviceBuffer, n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    // SAFETY: plain-old-data element types; the slice covers exactly `n` elements.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(&v[..]))
    };
    dev().dtoh(b.ptr(), bytes).unwrap();
    v
}

fn launch(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared: u32,
    args: &mut KernelArgs,
    s: Schedule,
) -> crate::Result<()> {
    let cfg = LaunchConfig {
        grid,
        block,
        shared_bytes: shared,
    };
    // SAFETY: every caller passes the test kernel's parameters with buffers of the sizes it uses.
    unsafe { emu::launch_host_test_kernel(name, &cfg, args, s) }
}

/// Kernel arguments: the device pointers of `bufs`, in order.
fn ptr_args(bufs: &[&DeviceBuffer]) -> KernelArgs {
    let mut args = KernelArgs::new();
    for b in bufs {
        args.push(b.ptr());
    }
    args
}

/// Launches `name` over `blocks` blocks of `threads` threads (1-D, no dynamic shared
/// memory) and expects it to run.
fn launch_1d(name: &str, blocks: usize, threads: usize, args: &mut KernelArgs, s: Schedule) {
    launch(
        name,
        (blocks as u32, 1, 1),
        (threads as u32, 1, 1),
        0,
        args,
        s,
    )
    .unwrap();
}

/// Small pseudo-random integers in [0, 1000).
fn ints(n: usize, seed: u64) -> Vec<i32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 1000) as i32
        })
        .collect()
}

#[test]
fn kernel_table_matches_kernel_ids() {
    assert_eq!(emu::kernel_names(), gpu::kernels::KERNEL_NAMES);
    assert!(emu::host_test_kernel_names().contains(&"emu_test_block_sum"));
}

#[test]
fn barriers_separate_phases_in_3d_blocks() {
    let (grid, block) = ((3u32, 2u32, 1u32), (8u32, 4u32, 2u32));
    let (nb, n) = (6usize, 64usize);
    let mut expected = vec![0i32; nb * n];
    for b in 0..nb {
        for t in 0..n {
            let s = |i: usize, p: i32| (i as i32 * 3 + 1) * (p + 1) + b as i32;
            expected[b * n + t] = (0..3)
                .map(|p| s((t + 1) % n, p) + s((t + n - 1) % n, p))
                .sum();
        }
    }
    for s in SCHEDULES {
        let out = zeros::<i32>(nb * n);
        launch(
            "emu_test_barrier_phases",
            grid,
            block,
            0,
            KernelArgs::new().push(out.ptr()),
            s,
        )
        .unwrap();
        assert_eq!(download::<i32>(&out, nb * n), expected, "{s}");
    }
}

#[test]
fn warp_shuffles_and_votes_over_full_warps() {
    let (blocks, threads) = (2usize, 128usize);
    let total = blocks * threads;
    let mut input = ints(total, 7);
    input[5] = 950; // makes `any(v > 900)` true in the first warp only (values are < 1000)
    for v in input.iter_mut().skip(32).take(32) {
        *v = (*v).min(900);
    }
    let mut exp = vec![0i32; 4 * total];
    let (mut exp_sum, mut exp_ballot, mut exp_any_all) =
        (vec![0f64; total], vec![0u32; total], vec![0i32; total]);
    for i in 0..total {
        let (base, lane) = (i / 32 * 32, i % 32);
        exp[4 * i] = input[base + (lane ^ 5)];
        exp[4 * i + 1] = if lane + 3 < 32 {
            input[i + 3]
        } else {
            input[i]
        };
        exp[4 * i + 2] = input[base + (lane * 7) % 32];
        exp[4 * i + 3] = if lane >= 2 { input[i - 2] } else { input[i] };
        let warp = &input[base..base + 32];
        exp_sum[i] = warp.iter().map(|&v| v as f64).sum();
        exp_ballot[i] = warp
            .iter()
            .enumerate()
            .map(|(l, &v)| ((v & 1) as u32) << l)
            .sum();
        exp_any_all[i] = warp.iter().any(|&v| v > 900) as i32 | 2;
    }
    for s in SCHEDULES {
        let inb = upload(&input);
        let (out, dsum, ballot, any_all) = (
            zeros::<i32>(4 * total),
            zeros::<f64>(total),
            zeros::<u32>(total),
            zeros::<i32>(total),
        );
        let mut args = ptr_args(&[&inb, &out, &dsum, &ballot, &any_all]);
        launch_1d("emu_test_shuffles", blocks, threads, &mut args, s);
        assert_eq!(download::<i32>(&out, 4 * total), exp, "{s}");
        assert_eq!(download::<f64>(&dsum, total), exp_sum, "{s}");
        assert_eq!(download::<u32>(&ballot, total), exp_ballot, "{s}");
        assert_eq!(download::<i32>(&any_all, total), exp_any_all, "{s}");
    }
}

#[test]
fn atomics_accumulate_across_parallel_blocks() {
    let (blocks, threads) = (64usize, 256usize);
    let total = (blocks * threads) as u64;
    let (f, d, i, u, mx) = (
        zeros::<f32>(1),
        zeros::<f64>(1),
        zeros::<i32>(1),
        zeros::<u64>(1),
        upload(&[-1i32]),
    );
    let mut args = ptr_args(&[&f, &d, &i, &u, &mx]);
    launch_1d(
        "emu_test_atomics",
        blocks,
        threads,
        &mut args,
        Schedule::Random(3),
    );
    assert_eq!(download::<f32>(&f, 1)[0], total as f32);
    assert_eq!(download::<f64>(&d, 1)[0], total as f64 * 0.5);
    assert_eq!(download::<i32>(&i, 1)[0], 2 * total as i32);
    assert_eq!(download::<u64>(&u, 1)[0], 3 * total);
    assert_eq!(download::<i32>(&mx, 1)[0], total as i32 - 1);
}

fn reversed_blocks(input: &[f32], n: usize) -> Vec<f32> {
    input
        .chunks(n)
        .flat_map(|c| c.iter().rev().copied())
        .collect()
}

#[test]
fn static_shared_memory_is_per_block_with_blocks_in_parallel() {
    let (blocks, threads) = (96usize, 256usize);
    let input: Vec<f32> = (0..blocks * threads).map(|i| i as f32).collect();
    let (inb, out) = (upload(&input), zeros::<f32>(input.len()));
    let mut args = ptr_args(&[&inb, &out]);
    launch_1d(
        "emu_test_reverse_static",
        blocks,
        threads,
        &mut args,
        Schedule::Random(9),
    );
    assert_eq!(
        download::<f32>(&out, input.len()),
        reversed_blocks(&input, threads)
    );
}

#[test]
fn dynamic_shared_memory_is_sized_by_the_launch_and_per_block() {
    for (blocks, threads) in [(80usize, 1000usize), (33, 64)] {
        let input: Vec<f32> = (0..blocks * threads)
            .map(|i| (i * 7 % 1013) as f32)
            .collect();
        let (inb, out, misaligned) = (upload(&input), zeros::<f32>(input.len()), zeros::<i32>(1));
        let mut args = ptr_args(&[&inb, &out, &misaligned]);
        let shared = (threads * 4) as u32;
        launch(
            "emu_test_reverse_dynamic",
            (blocks as u32, 1, 1),
            (threads as u32, 1, 1),
            shared,
            &mut args,
            Schedule::RoundRobin,
        )
        .unwrap();
        assert_eq!(
            download::<f32>(&out, input.len()),
            reversed_blocks(&input, threads)
        );
        assert_eq!(download::<i32>(&misaligned, 1)[0], 0);
    }
}

#[test]
fn half_to_float_is_exact_for_all_65536_bit_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let (inb, out) = (upload(&bits), zeros::<f32>(bits.len()));
    let mut args = ptr_args(&[&inb, &out]);
    args.push(bits.len() as u64);
    launch_1d(
        "emu_test_half_to_float",
        256,
        256,
        &mut args,
        Schedule::RoundRobin,
    );
    let got = download::<f32>(&out, bits.len());
    for (&b, &g) in bits.iter().zip(&got) {
        let want = half::f16::from_bits(b).to_f32();
        if want.is_nan() {
            assert!(g.is_nan(), "bits {b:#06x}: {g}");
        } else {
            assert_eq!(g.to_bits(), want.to_bits(), "bits {b:#06x}");
        }
    }
}

#[test]
fn float_to_half_rounds_to_nearest_even() {
    // A sweep of f32 bit patterns, plus every exact tie between adjacent halves and its two
    // f32 neighbours (where round-to-nearest-even differs from other roundings).
    let mut xs: Vec<f32> = (0..u32::MAX / 4099)
        .map(|i| f32::from_bits(i * 4099))
        .collect();
    for b in 0..0x7bffu16 {
        let (lo, hi) = (
            half::f16::from_bits(b).to_f32(),
            half::f16::from_bits(b + 1).to_f32(),
        );
        let tie = ((lo as f64 + hi as f64) / 2.0) as f32;
        for v in [
            tie,
            f32::from_bits(tie.to_bits() - 1),
            f32::from_bits(tie.to_bits() + 1),
        ] {
            xs.push(v);
            xs.push(-v);
        }
    }
    xs.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65519.99,
        65520.0,
        1e-8,
        -0.0,
    ]);
    let (inb, out) = (upload(&xs), zeros::<u16>(xs.len()));
    let mut args = ptr_args(&[&inb, &out]);
    args.push(xs.len() as u64);
    let blocks = xs.len().div_ceil(256);
    launch_1d(
        "emu_test_float_to_half",
        blocks,
        256,
        &mut args,
        Schedule::RoundRobin,
    );
    let got = download::<u16>(&out, xs.len());
    for (&x, &g) in xs.iter().zip(&got) {
        let want = half::f16::from_f32(x);
        if want.is_nan() {
            assert!(half::f16::from_bits(g).is_nan(), "{x:e}: {g:#06x}");
        } else {
            assert_eq!(g, want.to_bits(), "{x:e} ({:#010x})", x.to_bits());
        }
    }
}

#[test]
fn half2_pack_and_unpack() {
    let xs: Vec<f32> = (0..2000)
        .map(|i| (i as f32 - 1000.0) * 0.37 + 1e-3)
        .collect();
    let pairs = xs.len() / 2;
    let (inb, packed, back) = (upload(&xs), zeros::<u32>(pairs), zeros::<f32>(xs.len()));
    let mut args = ptr_args(&[&inb, &packed, &back]);
    args.push(pairs as u64);
    launch_1d(
        "emu_test_half2_roundtrip",
        4,
        256,
        &mut args,
        Schedule::RoundRobin,
    );
    let (packed, back) = (
        download::<u32>(&packed, pairs),
        download::<f32>(&back, xs.len()),
    );
    for i in 0..pairs {
        let (lo, hi) = (
            half::f16::from_f32(xs[2 * i]),
            half::f16::from_f32(xs[2 * i + 1]),
        );
        assert_eq!(
            packed[i],
            lo.to_bits() as u32 | (hi.to_bits() as u32) << 16,
            "pair {i}"
        );
        assert_eq!(
            (back[2 * i], back[2 * i + 1]),
            (lo.to_f32(), hi.to_f32()),
            "pair {i}"
        );
    }
}

/// Runs a block-sum kernel over 16 blocks of 256 integer-valued floats (exact sums) and
/// returns how many block sums are wrong.
fn wrong_block_sums(kernel: &str, s: Schedule) -> usize {
    let (blocks, threads) = (16usize, 256usize);
    let input: Vec<f32> = ints(blocks * threads, 11)
        .iter()
        .map(|&v| (v + 1) as f32)
        .collect();
    let (inb, out) = (upload(&input), zeros::<f32>(blocks));
    let mut args = ptr_args(&[&inb, &out]);
    launch_1d(kernel, blocks, threads, &mut args, s);
    let got = download::<f32>(&out, blocks);
    input
        .chunks(threads)
        .zip(&got)
        .filter(|(c, &g)| c.iter().sum::<f32>() != g)
        .count()
}

#[test]
fn block_sum_is_right_under_every_schedule() {
    for s in SCHEDULES {
        assert_eq!(wrong_block_sums("emu_test_block_sum", s), 0, "{s}");
    }
}

#[test]
fn random_schedule_catches_a_missing_syncthreads() {
    // Threads in index order hide the missing barrier ...
    assert_eq!(
        wrong_block_sums("emu_test_block_sum_nosync", Schedule::RoundRobin),
        0
    );
    // ... a random order exposes it.
    for seed in [1, 2, 3] {
        assert!(
            wrong_block_sums("emu_test_block_sum_nosync", Schedule::Random(seed)) > 0,
            "seed {seed}"
        );
    }
}

#[test]
fn a_deadlock_is_reported_not_hung() {
    let out = zeros::<i32>(32);
    let err = launch(
        "emu_test_deadlock",
        (1, 1, 1),
        (32, 1, 1),
        0,
        KernelArgs::new().push(out.ptr()),
        Schedule::RoundRobin,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("emu_test_deadlock") && err.contains("deadlock"),
        "{err}"
    );
}

#[test]
fn bad_launches_are_errors() {
    let out = zeros::<i32>(32);
    let api = EmuApi::with_schedule(Schedule::RoundRobin);
    let mut args = KernelArgs::new();
    args.push(out.ptr()).push(32u64).push(1.0f64);
    let cfg = LaunchConfig::linear(1, 32);
    // SAFETY: the argument list matches fill_f32 (the id-range case never launches).
    unsafe {
        assert!(api
            .launch(KernelId(u32::MAX), &cfg, &mut args.as_params())
            .is_err());
        let big = LaunchConfig {
            block: (1025, 1, 1),
            ..cfg
        };
        let e = api
            .launch(k::FILL_F32, &big, &mut args.as_params())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fill_f32") && e.contains("1024"), "{e}");
        let e = api
            .launch(k::FILL_F32, &cfg, &mut args.as_params()[..2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3"), "{e}");
        // A grid with a zero dimension launches nothing.
        let empty = LaunchConfig {
            grid: (0, 1, 1),
            ..cfg
        };
        api.launch(k::FILL_F32, &empty, &mut args.as_params())
            .unwrap();
    }
    assert_eq!(download::<i32>(&out, 32), vec![0; 32]);
    assert!(launch(
        "no_such_kernel",
        (1, 1, 1),
        (1, 1, 1),
        0,
        &mut KernelArgs::new(),
        Schedule::RoundRobin
    )
    .is_err());
    // The cache hands the 128-byte request a 512-byte block: a copy past the block's
    // end is the error the emulator can see.
    assert!(
        dev().htod(&[0u8; 1000], out.ptr()).is_err(),
        "copy past the end of the buffer's block"
    );
}

#[test]
fn fill_kernels_run_through_the_launch_path() {
    let n = 1000usize;
    let d = dev();
    let buf = d.alloc(n * 8).unwrap();
    for (kernel, size) in [(k::FILL_F32, 4), (k::FILL_F64, 8), (k::FILL_F16, 2)] {
        let mut args = KernelArgs::new();
        args.push(buf.ptr()).push(n as u64).push(3.0f64);
        d.launch(kernel, LaunchConfig::for_elements(n, 256, 1, 3), &mut args)
            .unwrap();
        let bytes = download::<u8>(&buf, n * size);
        let ok = match size {
            4 => bytes
                .chunks(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 3.0),
            8 => bytes
                .chunks(8)
                .all(|c| f64::from_le_bytes(c.try_into().unwrap()) == 3.0),
            _ => bytes
                .chunks(2)
                .all(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32() == 3.0),
        };
        assert!(ok, "{}", kernel.name());
    }
}

#[test]
fn tensor_full_on_the_emulator() {
    let t = Tensor::full(&[1000], 3.0, DType::F32, Device::Emu(0)).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![3.0f32; 1000]);
}

/// Prints the cost of a fiber switch and of a launch (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn measure_costs() {
    let time = |name: &str, grid: usize, block: usize, rounds: i32, reps: u32| {
        let mut args = KernelArgs::new();
        if rounds >= 0 {
            args.push(rounds);
        }
        let kernel = if rounds >= 0 {
            "emu_test_barriers"
        } else {
            "emu_test_empty"
        };
        let mut run = || launch_1d(kernel, grid, block, &mut args, Schedule::RoundRobin);
        run();
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            run();
        }
        let per = t0.elapsed().as_secs_f64() / reps as f64;
        println!("{name}: {:.3} us per launch", per * 1e6);
        per
    };
    time("empty kernel, 1 block of 1 thread", 1, 1, -1, 10000);
    let no_bar = time("empty kernel, 1 block of 1024 threads", 1, 1024, -1, 200);
    println!(
        "  = {:.1} ns per thread without barriers",
        no_bar / 1024.0 * 1e9
    );
    let bar = time("100 barriers, 1 block of 1024 threads", 1, 1024, 100, 20);
    println!(
        "  = {:.1} ns per thread per barrier (2 switches)",
        (bar - no_bar) / 1024.0 / 100.0 * 1e9
    );
    time(
        "empty kernel, 1024 blocks of 256 threads",
        1024,
        256,
        -1,
        10,
    );
}
