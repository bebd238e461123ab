#!/usr/bin/env python3
"""PyTorch side of gradstep's benchmarks: the same parameter sets and the same
operations as `gradstep bench`, timed with torch on the same machine.

    python3 scripts/torch_bench.py --device cpu --json out.json
    python3 scripts/torch_bench.py --device cuda --json out.json
    python3 scripts/torch_bench.py --device cpu --benches train

Benchmarks (--benches): zero (per-tensor zero_(), _foreach_zero_, set_to_none),
step (SGD momentum 0.9, Adam, AdamW; for-loop, foreach, fused), train (one step of
the quickstart: forward, loss, zero_grad, backward, SGD step; batch 64; with --graph also
the step captured by torch.cuda.graph and replayed), matmul (the quickstart's nine
products at batch 64, laid out as training lays them out: x @ W.t(), g @ W, g.t() @ x
for each of its three linear layers; GFLOP/s), clip
(torch.nn.utils.clip_grad_norm_ with norm 2, foreach=True and foreach=False; max_norm so
large that the coefficient is 1, so every call reads and writes every grad once and the
grads keep their values).

Parameter sets (identical to gradstep's `bench::param_set`):
  10x10M     ten tensors of 10,000,000 elements
  gpt2-124m  the 148 parameter tensors of GPT-2 124M
  mixed1000  1000 tensors, element i has 1 + (i * 7919 + 13) % 16000 elements
"""
import argparse
import json
import statistics
import sys
import time

import torch


def gpt2_shapes():
    d, v, ctx, layers = 768, 50257, 1024, 12
    shapes = [(v, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


def param_set(name):
    if name == "10x10M":
        return [(10_000_000,)] * 10
    if name == "gpt2-124m":
        return gpt2_shapes()
    if name == "mixed1000":
        return [(1 + (i * 7919 + 13) % 16000,) for i in range(1000)]
    raise SystemExit(f"unknown parameter set {name}")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


MIN_SECONDS = 1.0


def timeit(fn, device, min_runs=5, min_seconds=None, max_runs=200, setup=None):
    """Median seconds per call of fn (setup, when given, runs untimed before each call)."""
    min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
    for _ in range(2):  # warm-up
        if setup:
            setup()
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_seconds and len(times) < max_runs):
        if setup:
            setup()
            sync(device)
        if device == "cuda":
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_params(shapes, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.nn.Parameter((torch.rand(s, generator=g) - 0.5).to(dtype).to(device))
        p.grad = ((torch.rand(s, generator=g) - 0.5) * 1e-2).to(dtype).to(device)
        ps.append(p)
    return ps


def copy_bandwidth(device):
    n = 256 * 1024 * 1024 // 4
    a = torch.rand(n, device=device)
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), device)
    return 2 * a.numel() * 4 / t / 1e9


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def train_bench(device, dname, batch=64, graph=False):
    """One step of PyTorch's quickstart on a fixed random batch, as `gradstep bench train`:
    eagerly, or (graph=True, CUDA only) captured whole with torch.cuda.graph and replayed,
    following PyTorch's whole-network capture recipe (warm-up on a side stream, grads set
    to None before the capture so the captured backward allocates them from the graph's
    pool, then g.replay() per step)."""
    dtype = DTYPES[dname]
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10)).to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28).to(device=device, dtype=dtype)
    y = torch.randint(0, 10, (batch,)).to(device)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    run = step
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        run = g.replay
    t = timeit(run, device)
    ps = list(model.parameters())
    return {"bench": "train", "set": f"quickstart-b{batch}", "dtype": dname, "optimizer": "sgd",
            "impl": "cuda-graph" if graph else "default",
            "tensors": len(ps), "numel": sum(p.numel() for p in ps), "seconds": t, "per_second": 1.0 / t}


QUICKSTART_LAYERS = [(28 * 28, 512), (512, 512), (512, 10)]


def matmul_bench(device, dname, batch=64):
    """The quickstart's products, as `gradstep bench matmul`: for each layer the forward
    x [batch, in] @ W.t() (W [out, in]), the input's gradient g [batch, out] @ W and the
    weight's g.t() @ x."""
    dtype = DTYPES[dname]
    results = []
    for i, (inp, out) in enumerate(QUICKSTART_LAYERS):
        x = torch.rand(batch, inp).to(device=device, dtype=dtype)
        w = torch.rand(out, inp).to(device=device, dtype=dtype)
        g = torch.rand(batch, out).to(device=device, dtype=dtype)
        cases = [("forward", x, w.t(), (batch, inp, out)), ("grad_input", g, w, (batch, out, inp)),
                 ("grad_weight", g.t(), x, (out, batch, inp))]
        for name, a, b, (m, k, n) in cases:
            t = timeit(lambda: torch.matmul(a, b), device)
            flops = 2 * m * k * n
            nbytes = (m * k + k * n + m * n) * a.element_size()
            results.append({"bench": "matmul", "set": f"fc{i + 1}.{name}", "dtype": dname, "tensors": 2,
                            "numel": m * n, "bytes": nbytes, "flops": flops, "seconds": t,
                            "gbps": nbytes / t / 1e9, "gflops": flops / t / 1e9})
    return results


def bench(args):
    device = args.device
    dtypes = DTYPES
    results = []
    bw = copy_bandwidth(device)
    results.append({"bench": "copy", "gbps": bw})
    if "matmul" in args.benches:
        for dname in args.dtypes:
            results.extend(matmul_bench(device, dname))
    if "train" in args.benches:
        for dname in args.train_dtypes:
            results.append(train_bench(device, dname))
            if args.graph and device == "cuda":
                results.append(train_bench(device, dname, graph=True))
    if not {"zero", "step", "clip"} & set(args.benches):
        return results
    for set_name in args.sets:
        shapes = param_set(set_name)
        numel = sum(torch.Size(s).numel() for s in shapes)
        for dname in args.dtypes:
            dtype = dtypes[dname]
            if device == "cpu" and dname == "f16" and set_name == "10x10M":
                continue
            params = make_params(shapes, dtype, device)
            grads = [p.grad for p in params]
            esize = torch.tensor([], dtype=dtype).element_size()

            def zero_per_tensor():
                for g in grads:
                    g.zero_()

            def zero_foreach():
                torch._foreach_zero_(grads)

            def zero_set_to_none():
                for p in params:
                    p.grad = None

            def give_grads_back():
                for p, g in zip(params, grads):
                    p.grad = g

            zero_cases = [("per_tensor", zero_per_tensor, None), ("foreach", zero_foreach, None),
                          ("set_to_none", zero_set_to_none, give_grads_back)]
            for name, fn, setup in zero_cases if "zero" in args.benches else []:
                t = timeit(fn, device, setup=setup)
                moved = 0 if name == "set_to_none" else numel * esize
                results.append({"bench": "zero", "set": set_name, "dtype": dname, "impl": name,
                                "tensors": len(shapes), "numel": numel, "bytes": moved, "seconds": t,
                                "gbps": moved / t / 1e9})
            give_grads_back()
            # refill grads (zeroing above)
            with torch.no_grad():
                for g in grads:
                    g.uniform_(-1e-2, 1e-2)
            for impl in ["foreach", "forloop"] if "clip" in args.benches else []:
                def clip():
                    torch.nn.utils.clip_grad_norm_(params, 1e30, 2.0, foreach=impl == "foreach")
                t = timeit(clip, device)
                moved = 2 * numel * esize
                results.append({"bench": "clip", "set": set_name, "dtype": dname, "impl": impl,
                                "tensors": len(shapes), "numel": numel, "bytes": moved, "seconds": t,
                                "gbps": moved / t / 1e9})
            for opt_name in args.optimizers if "step" in args.benches else []:
                for impl in ["forloop", "foreach", "fused"]:
                    kw = {"foreach": impl == "foreach"}
                    if impl == "fused":
                        kw = {"fused": True}
                    if opt_name == "sgd":
                        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw)
                        bytes_pp = 5 * esize
                    elif opt_name == "adam":
                        opt = torch.optim.Adam(params, lr=1e-3, **kw)
                        bytes_pp = 7 * esize
                    else:
                        opt = torch.optim.AdamW(params, lr=1e-3, **kw)
                        bytes_pp = 7 * esize
                    try:
                        t = timeit(opt.step, device)
                    except (RuntimeError, TypeError) as e:
                        print(f"skip {opt_name} {impl} {set_name} {dname}: {e}", file=sys.stderr)
                        continue
                    results.append({"bench": "step", "set": set_name, "dtype": dname,
                                    "optimizer": opt_name, "impl": impl, "tensors": len(shapes),
                                    "numel": numel, "bytes": numel * bytes_pp, "seconds": t,
                                    "gbps": numel * bytes_pp / t / 1e9})
                    del opt
            del params, grads
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--benches", nargs="+", default=["zero", "step", "train"], choices=["zero", "step", "train", "clip", "matmul"])
    ap.add_argument("--train-dtypes", nargs="+", default=["f32"], choices=["f32", "f16"])
    ap.add_argument("--graph", action="store_true",
                    help="also time the training step captured with torch.cuda.graph (cuda only)")
    ap.add_argument("--sets", nargs="+", default=["10x10M", "gpt2-124m", "mixed1000"])
    ap.add_argument("--dtypes", nargs="+", default=["f32", "f16"])
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam", "adamw"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--min-time", type=float, default=1.0, help="sample each case for at least this many seconds")
    args = ap.parse_args()
    global MIN_SECONDS
    MIN_SECONDS = args.min_time
    if args.threads:
        torch.set_num_threads(args.threads)
    results = bench(args)
    meta = {"torch": torch.__version__, "device": args.device,
            "threads": torch.get_num_threads(),
            "card": torch.cuda.get_device_name(0) if args.device == "cuda" else None}
    out = {"meta": meta, "results": results}
    for r in results:
        if r["bench"] == "copy":
            print(f"copy bandwidth {r['gbps']:.1f} GB/s")
        elif r["bench"] == "matmul":
            print(f"matmul {r['set']:16} {r['dtype']} {r['seconds'] * 1e6:10.1f} us {r['gflops']:8.1f} GFLOP/s")
        elif r["bench"] == "train":
            print(f"train {r['set']} {r['dtype']} {r['impl']:10} {r['seconds'] * 1e3:10.3f} ms "
                  f"{r['per_second']:8.1f} steps/s")
        else:
            label = f"{r['bench']:4} {r['set']:10} {r['dtype']} {r.get('optimizer', ''):6} {r['impl']:10}"
            print(f"{label} {r['seconds'] * 1e3:10.3f} ms {r['gbps']:8.1f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
