#!/usr/bin/env python3
"""Side-by-side tables of `gradstep bench --json` and `scripts/torch_bench.py --json`
(same machine, same run), in the format of docs/cpu-results.md and docs/gpu-results.md.

    python3 scripts/bench_compare.py --gradstep g.json --torch t.json \\
        --title "H100, driver 580.65" --meta card="NVIDIA H100" --meta commit=abc123 > out.md

Ratios are torch time / gradstep time: above 1 means gradstep is faster. Only the
standard library is needed.
"""
import argparse
import json
import os
import re
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def key(r):
    return (r.get("bench"), r.get("set"), r.get("dtype"), r.get("optimizer"), r.get("impl"))


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def fmt_ratio(torch_s, ours_s):
    if not torch_s or not ours_s:
        return "-"
    return f"{torch_s / ours_s:.2f}x"


def fmt_num(v, spec):
    return "-" if v is None else format(v, spec)


def index(results):
    return {key(r): r for r in results}


def sets_in_order(results):
    seen = []
    for r in results:
        s = (r.get("set"), r.get("dtype"))
        if r.get("bench") in ("zero", "step") and s not in seen:
            seen.append(s)
    return seen


def zero_table(ours, theirs):
    """One row per (set, dtype, impl). Arena has no torch form: compared with torch foreach."""
    lines = ["| set | dtype | impl | gradstep | GB/s | % copy | launches + memsets | torch | torch / gradstep |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    t = index(theirs)
    seen = set()
    for r in ours:
        # The standard sets only (the sweep's mixedN sets are for the plot), each case once.
        if r.get("bench") != "zero" or r.get("set") not in ("10x10M", "gpt2-124m", "mixed1000") or key(r) in seen:
            continue
        seen.add(key(r))
        imp = r.get("impl")
        ref = t.get(("zero", r.get("set"), r.get("dtype"), None, "foreach" if imp == "arena" else imp))
        c = r.get("counts")
        calls = f"{c['launches']} + {c['memsets']}" if c else "-"
        ref_s = ref.get("seconds") if ref else None
        label = imp + (" (vs torch foreach)" if imp == "arena" and ref else "")
        lines.append(f"| {r['set']} | {r['dtype']} | {label} | {fmt_time(r.get('seconds'))} | "
                     f"{fmt_num(r.get('gbps'), '.1f')} | {fmt_num(r.get('pct_copy'), '.0f')} | {calls} | "
                     f"{fmt_time(ref_s)} | {fmt_ratio(ref_s, r.get('seconds'))} |")
    return lines


def step_table(ours, theirs, copy_gbps):
    """One row per (set, dtype, optimizer, impl), then the best of each side."""
    lines = ["| set | dtype | optimizer | impl | gradstep | GB/s | % copy | launches | syncs | torch | torch GB/s "
             "| torch / gradstep |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    t = index(theirs)
    for r in ours:
        if r.get("bench") != "step":
            continue
        ref = t.get(key(r))
        ref_s = ref.get("seconds") if ref else None
        c = r.get("counts")
        lines.append(f"| {r['set']} | {r['dtype']} | {r['optimizer']} | {r['impl']} | {fmt_time(r.get('seconds'))} | "
                     f"{fmt_num(r.get('gbps'), '.1f')} | {fmt_num(r.get('pct_copy'), '.0f')} | "
                     f"{c['launches'] if c else '-'} | {c['syncs'] if c else '-'} | {fmt_time(ref_s)} | "
                     f"{fmt_num(ref.get('gbps') if ref else None, '.1f')} | {fmt_ratio(ref_s, r.get('seconds'))} |")
    return lines


def clip_table(ours, theirs):
    """clip_grad_norm_ (norm 2): gradstep's forms beside torch's foreach=True/False."""
    lines = ["| set | dtype | impl | gradstep | GB/s | launches | syncs | torch | torch GB/s | torch / gradstep |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    t = index(theirs)
    for r in ours:
        if r.get("bench") != "clip":
            continue
        ref = t.get(key(r))
        ref_s = ref.get("seconds") if ref else None
        c = r.get("counts")
        lines.append(f"| {r['set']} | {r['dtype']} | {r['impl']} | {fmt_time(r.get('seconds'))} | "
                     f"{fmt_num(r.get('gbps'), '.1f')} | {c['launches'] if c else '-'} | "
                     f"{c['syncs'] if c else '-'} | {fmt_time(ref_s)} | "
                     f"{fmt_num(ref.get('gbps') if ref else None, '.1f')} | {fmt_ratio(ref_s, r.get('seconds'))} |")
    return lines


def matmul_table(ours, theirs):
    """The quickstart's products: gradstep's and torch's GFLOP/s side by side."""
    lines = ["| product | dtype | gradstep | GFLOP/s | torch | torch GFLOP/s | torch / gradstep |",
             "|---|---|---:|---:|---:|---:|---:|"]
    t = index(theirs)
    for r in ours:
        if r.get("bench") != "matmul":
            continue
        ref = t.get(key(r))
        ref_s = ref.get("seconds") if ref else None
        lines.append(f"| {r['set']} | {r['dtype']} | {fmt_time(r.get('seconds'))} | "
                     f"{fmt_num(r.get('gflops'), '.1f')} | {fmt_time(ref_s)} | "
                     f"{fmt_num(ref.get('gflops') if ref else None, '.1f')} | "
                     f"{fmt_ratio(ref_s, r.get('seconds'))} |")
    return lines


def best_table(ours, theirs):
    """Fastest gradstep implementation against torch's fastest, per (set, dtype, optimizer)."""
    lines = ["| set | dtype | optimizer | gradstep best | torch best | torch / gradstep |",
             "|---|---|---|---|---|---:|"]
    groups = {}
    for side, results in (("ours", ours), ("theirs", theirs)):
        for r in results:
            if r.get("bench") == "step" and r.get("seconds"):
                g = groups.setdefault((r["set"], r["dtype"], r["optimizer"]), {})
                if side not in g or r["seconds"] < g[side]["seconds"]:
                    g[side] = r
    for (s, d, o), g in groups.items():
        if "ours" not in g:
            continue
        a, b = g["ours"], g.get("theirs")
        lines.append(f"| {s} | {d} | {o} | {a['impl']} {fmt_time(a['seconds'])} | "
                     f"{(b['impl'] + ' ' + fmt_time(b['seconds'])) if b else '-'} | "
                     f"{fmt_ratio(b['seconds'] if b else None, a['seconds'])} |")
    return lines


def train_table(ours, theirs):
    """Each gradstep training record beside each torch record of the same model and dtype:
    eager against eager, and gradstep's captured step against torch's CUDA graph."""
    lines = ["| model | dtype | gradstep | steps/s | torch | steps/s | gradstep / torch |",
             "|---|---|---|---:|---|---:|---:|"]
    pairs = {"fused": "default", "fused+graph": "cuda-graph"}
    t = {(r.get("set"), r.get("dtype"), r.get("impl")): r for r in theirs if r.get("bench") == "train"}
    for r in ours:
        if r.get("bench") != "train":
            continue
        for mode in ([pairs.get(r.get("impl"))] if r.get("impl") == "fused" else ["default", "cuda-graph"]):
            ref = t.get((r.get("set"), r.get("dtype"), mode))
            ours_ps = r.get("per_second")
            ref_ps = ref.get("per_second") if ref else None
            ratio = f"{ours_ps / ref_ps:.2f}x" if ours_ps and ref_ps else "-"
            lines.append(f"| {r['set']} | {r['dtype']} | {r.get('impl')} | {fmt_num(ours_ps, '.1f')} | "
                         f"{mode} | {fmt_num(ref_ps, '.1f')} | {ratio} |")
    return lines


def rounds_table(paths):
    """The training step per alternating round: steps/s of gradstep (eager, captured) and
    torch (eager, torch.cuda.graph), and the two ratios."""
    rounds = {}
    for p in sorted(paths):
        m = re.search(r"(\d+)\.json$", p)
        d = load(p)
        tool = "gradstep" if d.get("meta", {}).get("tool") == "gradstep" else "torch"
        for r in d.get("results", []):
            if r.get("bench") == "train":
                key = (m.group(1) if m else p, r.get("dtype"))
                rounds.setdefault(key, {})[(tool, r.get("impl"))] = r.get("per_second")
    lines = ["| round | dtype | gradstep eager | torch eager | ratio | gradstep graph | torch cuda-graph | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (n, dtype), v in sorted(rounds.items()):
        ge, gg = v.get(("gradstep", "fused")), v.get(("gradstep", "fused+graph"))
        te, tg = v.get(("torch", "default")), v.get(("torch", "cuda-graph"))
        ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
        lines.append(f"| {n} | {dtype} | {fmt_num(ge, '.1f')} | {fmt_num(te, '.1f')} | {ratio(ge, te)} | "
                     f"{fmt_num(gg, '.1f')} | {fmt_num(tg, '.1f')} | {ratio(gg, tg)} |")
    return lines


def render(g, t, title, meta, train_rounds=()):
    ours, theirs = g.get("results", []), t.get("results", []) if t else []
    gm, tm = g.get("meta", {}), (t or {}).get("meta", {})
    out = [f"## {title}", ""]
    rows = dict(meta)
    rows.setdefault("device", f"{gm.get('device')} ({gm.get('device_name')})")
    rows.setdefault("gradstep", gm.get("version"))
    if tm:
        rows.setdefault("torch", f"{tm.get('torch')} ({tm.get('threads')} threads)")
    rows.setdefault("gradstep threads", gm.get("threads"))
    if gm.get("loadavg"):
        rows.setdefault("load average at start", " ".join(f"{x:.2f}" for x in gm["loadavg"]))
    copy_ours = gm.get("copy_gbps")
    copy_theirs = next((r.get("gbps") for r in theirs if r.get("bench") == "copy"), None)
    rows["copy bandwidth (read + write)"] = (f"gradstep {fmt_num(copy_ours, '.1f')} GB/s, "
                                             f"torch {fmt_num(copy_theirs, '.1f')} GB/s")
    for k, v in rows.items():
        out.append(f"- {k}: {v}")
    out.append("")
    out.append("Times are medians per call; `torch / gradstep` above 1 means gradstep is faster. "
               "GB/s counts the bytes that must move (zero: one write per element; SGD-momentum 5 "
               "and Adam/AdamW 7 elements per parameter; clip: one read and one write per element); "
               "% copy is that against the copy bandwidth "
               "measured in the same run.")
    if any(r.get("bench") == "train" for r in ours):
        out += ["", "### Quickstart training step (batch 64)", ""] + train_table(ours, theirs)
    if train_rounds:
        out += ["", "### Quickstart training step, gradstep and torch alternating (steps/s)", ""]
        out += rounds_table(train_rounds)
    if any(r.get("bench") == "matmul" for r in ours):
        out += ["", "### The quickstart's matrix products (batch 64)", ""] + matmul_table(ours, theirs)
    if any(r.get("bench") == "step" for r in ours):
        out += ["", "### Optimizer step, fastest implementation of each", ""] + best_table(ours, theirs)
        out += ["", "### Optimizer step, every implementation", ""] + step_table(ours, theirs, copy_ours)
    if any(r.get("bench") == "zero" for r in ours):
        out += ["", "### zero_grad", ""] + zero_table(ours, theirs)
    if any(r.get("bench") == "clip" for r in ours):
        out += ["", "### clip_grad_norm_ (norm 2; each grad read and written once)", ""]
        out += clip_table(ours, theirs)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gradstep", nargs="+", required=True, help="gradstep bench JSON file(s)")
    ap.add_argument("--torch", nargs="*", default=[], help="torch_bench.py JSON file(s)")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE lines for the header")
    ap.add_argument("--train-rounds", nargs="*", default=[],
                    help="JSON files of alternating training-step rounds (NAME-N.json)")
    args = ap.parse_args()
    g = {"meta": {}, "results": []}
    for p in args.gradstep:
        d = load(p)
        g["meta"] = g["meta"] or d.get("meta", {})
        g["results"] += d.get("results", [])
    t = {"meta": {}, "results": []}
    for p in args.torch:
        d = load(p)
        t["meta"] = t["meta"] or d.get("meta", {})
        t["results"] += d.get("results", [])
    meta = {}
    for kv in args.meta:
        k, _, v = kv.partition("=")
        meta[k.strip()] = v.strip()
    rounds = [p for p in args.train_rounds if os.path.exists(p)]
    sys.stdout.write(render(g, t if args.torch else None, args.title, meta, rounds))


if __name__ == "__main__":
    main()
