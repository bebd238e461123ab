#!/usr/bin/env python3
"""Reference cases with NaN and +-inf inputs, computed with PyTorch on CPU, in the
existing formats "ops-ref/1" and "optim-ref/1".

    python scripts/oracle/torch_nonfinite_cases.py --seed 5 \\
        --ops-out tests/data/nonfinite_ops.json --optim-out tests/data/nonfinite_optim.json

Every field is laid out as torch_op_cases.py / torch_optim_cases.py lay it out (this
script reuses their helpers); the only difference is that a non-finite number is
written as the JSON string "nan", "inf" or "-inf" in place of a number (the formats'
agreed extension). A runner compares a NaN as "is NaN" and an infinity by its sign;
the tolerance applies to the finite values.

ops (nonfinite_ops.json): softmax and log_softmax over dim -1 (rows of 10 and of 300
values: a row with one NaN, one +inf, one -inf, a row of -inf only, a row of -inf but
one finite value, a normal row), cross_entropy (NaN, +inf and -inf logits at the
target and off it; reductions mean, sum and none; label smoothing; an ignored row),
relu (NaN/inf inputs; a grad_output holding NaN/inf on dead, zero and live units),
sum and mean, matmul (including inf*0 and inf-inf), add and mul (broadcast and same
shape). float64 and float32, and float16 for softmax, log_softmax, cross_entropy and
relu. grad_output is finite except in the relu case built for it.

optim (nonfinite_optim.json): SGD (plain, momentum), Adam and AdamW (default,
amsgrad) over three params for 3 steps, the second step's gradient of "w0" holding a
NaN, a +inf and a -inf:
  <opt>/nonfinite_<variant>/<dtype>      no scaler: torch's update takes the non-finite
                                         values into params and state, step 3 is clean
  <opt>/amp_nonfinite_<variant>/<dtype>  a gradient scaler as in the standard profile's
                                         scaler cases: step 2 has found_inf = 1 (its grads
                                         are the non-finite scaled grads), is skipped, and
                                         the scale is halved for the clean step 3
float32 (single-tensor path without a scaler, fused with one) and float16 (fused).

Checks recorded in meta (skip with --no-check):
  ops reference_check  float32/float16 results against torch's float64 result on the
                       same rounded inputs: the positions and signs of NaN/inf must be
                       the same, finite values as a fraction of the tolerance
  ops naive_check      the same for naive sequential float32 sums (matmul, sum, mean)
  optim impl_check     every case rerun through torch's other paths (single-tensor,
                       foreach, fused): same NaN/inf positions, finite values within
                       the tolerance (float16 single-tensor: positions only)
  optim self_check / fused_check
                       the plain-Python replays of torch_optim_cases.py, NaN-aware
  optim grad_scaler_check
                       the scaler cases rerun with a real torch.amp.GradScaler: it
                       finds the non-finite step, halves the scale, and gives the same
                       bits
"""
import argparse
import json
import math
import os
import platform
import random
import sys

import torch

import torch_op_cases as opc
import torch_optim_cases as optc

NAN = float("nan")
INF = float("inf")


# ---------------------------------------------------------------- non-finite numbers in JSON
def encode(v):
    """Replace every non-finite float by "nan", "inf" or "-inf" (anywhere in v)."""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {k: encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    return v


def kind_of(x):
    """"nan", "inf", "-inf" or None (finite)."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return None


def count_nonfinite(vals):
    return sum(1 for x in vals if not math.isfinite(x))


def compare_values(got, want, tol):
    """(non-finite mismatches, worst fraction of the tolerance over values finite in both)."""
    bad = 0
    w = 0.0
    for a, b in zip(got, want):
        ka, kb = kind_of(a), kind_of(b)
        if ka != kb:
            bad += 1
        elif ka is None:
            w = max(w, abs(a - b) / (tol["atol"] + tol["rtol"] * abs(b)))
    return bad, w


def command_line(argv):
    return " ".join(["python", "scripts/oracle/" + os.path.basename(argv[0])] + argv[1:])


# ---------------------------------------------------------------- ops: configurations
def fv(shape, specials=None, kind="normal", grad=True, data=None):
    """A float input: drawn values (or `data`), with `specials` {flat index: value} put in."""
    return {"shape": list(shape), "specials": dict(specials or {}), "kind": kind, "requires_grad": grad,
            "data": data}


def iv(shape, values):
    return {"shape": list(shape), "int_data": list(values)}


def rowcol(shape):
    return lambda r, c: r * shape[1] + c


def op_configs():
    out = []
    F64_F32 = ("float64", "float32")
    ALL = ("float64", "float32", "float16")

    def add(op, label, inputs, attrs=None, dtypes=F64_F32, note=None, gout=None, dims=(1,)):
        out.append(dict(op=op, label=label, inputs=inputs, attrs=attrs or {}, dtypes=dtypes, note=note,
                        gout=dict(gout or {}), dims=tuple(dims)))

    # softmax / log_softmax over the last dim: one tensor holding every kind of row
    for cols, pos in ((10, dict(nan=3, inf=7, ninf=0, keep=9)), (300, dict(nan=150, inf=299, ninf=257, keep=5))):
        shape = [6, cols]
        at = rowcol(shape)
        sp = {at(0, pos["nan"]): NAN, at(1, pos["inf"]): INF, at(2, pos["ninf"]): -INF}
        for c in range(cols):
            sp[at(3, c)] = -INF
            if c != pos["keep"]:
                sp[at(4, c)] = -INF
        for op in ("softmax", "log_softmax"):
            add(op, f"6x{cols}_rows_nan_inf_ninf_allninf_onefinite_normal_d-1", [fv(shape, sp)], {"dim": -1},
                dtypes=ALL,
                note=f"row 0: one NaN (col {pos['nan']}); row 1: one +inf (col {pos['inf']}); row 2: one -inf "
                     f"(col {pos['ninf']}); row 3: all -inf; row 4: all -inf but col {pos['keep']}; row 5: finite")

    # cross_entropy
    ce_shape = [7, 5]
    at = rowcol(ce_shape)
    ce_targets = [2, 0, 4, 1, 3, 2, 1]
    ce_sp = {at(0, 2): NAN, at(1, 3): NAN, at(2, 4): INF, at(3, 0): INF, at(4, 3): -INF, at(5, 4): -INF}
    ce_note = ("row 0: NaN at the target; 1: NaN off the target; 2: +inf at the target; 3: +inf off the target; "
               "4: -inf at the target; 5: -inf off the target; 6: finite")
    for red in ("mean", "sum", "none"):
        add("cross_entropy", f"7x5_mixed_{red}_ls0.0_ign-100", [fv(ce_shape, ce_sp), iv([7], ce_targets)],
            {"reduction": red, "label_smoothing": 0.0, "ignore_index": -100}, dtypes=ALL, note=ce_note)
    one_shape = [4, 5]
    at1 = rowcol(one_shape)
    one_targets = [1, 3, 0, 4]
    singles = [("nan_target", 1, NAN, "a NaN"), ("nan_off", 2, NAN, "a NaN"),
               ("inf_target", 1, INF, "+inf"), ("inf_off", 4, INF, "+inf"),
               ("ninf_target", 1, -INF, "-inf"), ("ninf_off", 0, -INF, "-inf")]
    for lab, col, val, what in singles:
        where = "at the target" if col == one_targets[0] else "off the target"
        add("cross_entropy", f"4x5_{lab}_mean_ls0.0_ign-100", [fv(one_shape, {at1(0, col): val}), iv([4], one_targets)],
            {"reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100}, dtypes=ALL,
            note=f"row 0 holds {what} logit {where}; rows 1-3 finite")
    add("cross_entropy", "4x5_ninf_off_mean_ls0.1_ign-100", [fv(one_shape, {at1(0, 0): -INF}), iv([4], one_targets)],
        {"reduction": "mean", "label_smoothing": 0.1, "ignore_index": -100}, dtypes=ALL,
        note="row 0 holds -inf off the target, with label smoothing (the smoothing term sees every class)")
    add("cross_entropy", "4x5_nan_ignored_mean_ls0.0_ign2",
        [fv(one_shape, {at1(0, 0): NAN}), iv([4], [2, 3, 0, 4])],
        {"reduction": "mean", "label_smoothing": 0.0, "ignore_index": 2}, dtypes=ALL,
        note="row 0 holds a NaN logit and its target is ignore_index; rows 1-3 finite")

    # relu
    add("relu", "4x5_nan_inf_input", [fv([4, 5], {0: NAN, 3: INF, 7: -INF, 11: 0.0, 18: NAN})], dtypes=ALL,
        note="input holds NaN (0, 18), +inf (3), -inf (7), an exact 0 (11); grad_output finite")
    xs = {1: -0.75, 2: -1.5, 4: 0.0, 6: 0.5, 8: 1.25, 9: 2.0, 13: -0.25, 16: 0.75}
    add("relu", "4x5_gout_nonfinite", [fv([4, 5], xs)], dtypes=ALL,
        gout={1: NAN, 2: INF, 4: -INF, 13: -INF, 6: NAN, 8: INF, 9: -INF, 16: INF},
        note="finite input; grad_output holds NaN/+inf/-inf on dead units (1, 2, 13: input < 0), on a zero "
             "unit (4: input 0) and on live units (6, 8, 9, 16: input > 0)")

    # sum / mean
    sm = [5, 4]
    at = rowcol(sm)
    sm_sp = {at(0, 1): INF, at(1, 0): INF, at(1, 2): -INF, at(2, 3): -INF, at(3, 2): NAN}
    sm_note = "row 0: +inf; row 1: +inf and -inf; row 2: -inf; row 3: NaN; row 4: finite"
    lsm = [3, 300]
    atl = rowcol(lsm)
    for op in ("sum", "mean"):
        for dims, keep in ((None, False), ([-1], False), ([0], True)):
            lab = "all" if dims is None else "d" + "_".join(map(str, dims))
            add(op, f"5x4_inf_ninf_nan_{lab}" + ("_keep" if keep else ""), [fv(sm, sm_sp)],
                {"dims": dims, "keepdim": keep}, note=sm_note)
        add(op, "3x300_inf_nan_d1", [fv(lsm, {atl(0, 257): INF, atl(1, 299): NAN})], {"dims": [1], "keepdim": False},
            note="row 0: +inf at col 257; row 1: NaN at col 299; row 2: finite")

    # matmul
    add("matmul", "3x4@4x2_nan_inf_ninf", [fv([3, 4], {1: NAN, 6: INF, 8: -INF}), fv([4, 2], kind="away0")],
        note="a[0,1] NaN, a[1,2] +inf, a[2,0] -inf; b finite and away from 0", dims=(3, 4, 2))
    # a[0,1] = +inf meets b[1,0] = 0 (inf*0); a[2,0] = a[2,3] = +inf meet b[0,1] = 1, b[3,1] = -1 (inf-inf)
    add("matmul", "3x4@4x2_inf_times_zero_inf_minus_inf",
        [fv([3, 4], {1: INF, 8: INF, 11: INF}), fv([4, 2], {2: 0.0, 1: 1.0, 7: -1.0, 0: 0.5, 6: 0.25}, kind="away0")],
        note="out[0,0] holds inf*0, out[2,1] inf-inf, out[2,0] inf+inf", dims=(3, 4, 2))
    add("matmul", "2x65@65x3_nan_inf", [fv([2, 65], {33: NAN, 65 + 64: INF}), fv([65, 3], kind="away0")],
        note="a[0,33] NaN, a[1,64] +inf (the last k)", dims=(2, 65, 3))

    # add / mul
    add("add", "bcast_last_3x4_4_nan_inf", [fv([3, 4], {0: NAN, 5: INF, 10: -INF, 3: INF}), fv([4], {2: INF, 3: -INF})],
        note="inf + -inf at [0,3] and [2,2]; NaN at [0,0]")
    add("add", "same_3x4_nan_inf", [fv([3, 4], {0: NAN, 5: INF, 7: INF, 10: -INF}), fv([3, 4], {5: -INF, 7: INF, 9: NAN})],
        note="inf + -inf at 5, inf + inf at 7, NaN at 0 and 9, -inf + finite at 10")
    add("mul", "bcast_last_3x4_4_nan_inf_zero",
        [fv([3, 4], {0: NAN, 5: INF, 10: -INF}), fv([4], {1: 0.0, 3: INF}, kind="away0")],
        note="a[1,1] = +inf times b[1] = 0; b[3] = +inf; the grad of b sums inf and NaN products")
    add("mul", "same_3x4_nan_inf_zero",
        [fv([3, 4], {0: INF, 2: NAN, 5: INF, 9: -INF}), fv([3, 4], {0: 0.0, 5: -INF, 7: NAN}, kind="away0")],
        note="inf*0 at 0, inf*-inf at 5, NaN at 2 and 7, -inf*finite at 9")
    return out


# ---------------------------------------------------------------- ops: cases
def op_cases(seed, check):
    cases = []
    ref_stats, naive_stats, f16_fallback, mismatches = {}, {}, [], []

    def note_stat(stats, key, cid, w):
        st = stats.setdefault(key, {"cases": 0, "max_tol_fraction": 0.0, "worst": None})
        st["cases"] += 1
        if w >= st["max_tol_fraction"]:
            st["max_tol_fraction"], st["worst"] = w, cid

    for cfg in op_configs():
        op, label, ins, attrs, note = cfg["op"], cfg["label"], cfg["inputs"], cfg["attrs"], cfg["note"]
        rng = random.Random(f"{seed}/nonfinite/{op}/{label}")
        base = []
        for e in ins:
            if "int_data" in e:
                base.append(("i", e["int_data"], e["shape"]))
                continue
            vals = opc.draw(rng, e["kind"], math.prod(e["shape"]))
            for i, v in e["specials"].items():
                vals[i] = v
            base.append(("f", vals, e["shape"], e["requires_grad"]))
        y64, _ = opc.run(op, attrs, base, None, torch.float64)
        gbase = [rng.gauss(0.0, 1.0) for _ in range(y64.numel())]
        for i, v in cfg["gout"].items():
            gbase[i] = v
        assert cfg["gout"] or all(math.isfinite(v) for v in gbase)
        for dname in cfg["dtypes"]:
            dt = opc.DTYPES[dname]
            R = opc.ROUND[dname]
            cid = f"{op}/{label}/{dname}"
            inputs = [e if e[0] == "i" else ("f", [R(v) for v in e[1]], e[2], e[3]) for e in base]
            gout = [R(v) for v in gbase]
            tol = opc.tolerance(op, dname, opc.reduction_length(op, attrs, [e["shape"] for e in ins], cfg["dims"]))
            compute = dname
            case_note = note
            y, grads = opc.run(op, attrs, inputs, gout, dt)
            if check and dname != "float64":
                yr, gr = opc.run(op, attrs, inputs, gout, torch.float64)
                refs = [opc.flat(yr)] + [opc.flat(g) for g in gr if g is not None]

                def frac(y, grads):
                    vals = [opc.flat(y)] + [opc.flat(g) for g in grads if g is not None]
                    bad, w = 0, 0.0
                    for a, b in zip(vals, refs):
                        b1, w1 = compare_values(a, b, tol)
                        bad, w = bad + b1, max(w, w1)
                    return bad, w
                bad, w = frac(y, grads)
                if dname == "float16" and (w > 0.5 or bad):
                    # as torch_op_cases.py: the float32 result rounded once, the tolerance widened until
                    # torch's float16 result lies within half of it
                    y32, g32 = opc.run(op, attrs, inputs, gout, torch.float32)
                    y, grads = y32.to(torch.float16), [None if g is None else g.to(torch.float16) for g in g32]
                    compute = "float32_rounded"
                    factor = 1
                    while w / factor > 0.5:
                        factor *= 2
                    tol = {k: v * factor for k, v in tol.items()}
                    f16_fallback.append({"id": cid, "float16_kernel_tol_fraction": w,
                                         "float16_kernel_nonfinite_mismatches": bad, "tolerance_factor": factor})
                    case_note = ((note + "; ") if note else "") + (
                        f"torch's float16 kernel result is {w:.2f} of the float16 tolerance from the float64 "
                        f"result: expected values computed in float32 and rounded to float16, tolerance x{factor}")
                    bad, w = frac(y, grads)
                if bad:
                    mismatches.append({"id": cid, "against": "float64", "values": bad})
                note_stat(ref_stats.setdefault(dname, {}), op, cid, w)
                if dname == "float32":
                    xs64 = [torch.tensor(e[1], dtype=torch.float64).reshape(e[2]) if e[0] == "f" else None
                            for e in inputs]
                    nv = opc.naive_values(op, attrs, xs64, torch.tensor(gout, dtype=torch.float64).reshape(y.shape))
                    if nv is not None:
                        bn, wn = 0, 0.0
                        for a, b in zip(nv, refs):
                            b1, w1 = compare_values(a, b, tol)
                            bn, wn = bn + b1, max(wn, w1)
                        if bn:
                            mismatches.append({"id": cid, "against": "naive float32", "values": bn})
                        note_stat(naive_stats, op, cid, wn)
            case = {
                "id": cid,
                "op": op,
                "dtype": dname,
                "torch_compute": compute,
                "inputs": [{"shape": e[2], "int_data": e[1]} if e[0] == "i" else
                           {"shape": e[2], "data": e[1], "requires_grad": e[3]} for e in inputs],
                "attrs": attrs,
                "output": {"shape": list(y.shape), "data": opc.flat(y)},
                "grad_output": {"shape": list(y.shape), "data": gout},
                "grads": [None if g is None else {"shape": list(g.shape), "data": opc.flat(g)} for g in grads],
                "tolerance": tol,
            }
            if case_note:
                case["note"] = case_note
            cases.append(case)
    checks = {"reference_check": ref_stats, "naive_check": naive_stats, "float16_fallbacks": f16_fallback,
              "nonfinite_mismatches": mismatches}
    return cases, checks


# ---------------------------------------------------------------- optim
NF_STEPS_MAGNITUDE = [1.0, 0.3, 0.1]
NF_STEP = 1                       # 0-based: the second step's grads hold the non-finite values
NF_PARAM = 0                      # ... in param "w0"
NF_VALUES = {1: NAN, 5: INF, 10: -INF}   # flat index in w0 -> value
# w0 has 36 elements and the non-finite values sit in its first 32: torch's fused CPU kernels run a
# vector body and a scalar tail, and AMSGrad's max keeps a NaN in the body (like torch.maximum, as
# the single-tensor and foreach paths do) but drops it in the tail (std::max). Where every path
# agrees the expected values do not depend on how torch split the tensor (meta.impl_check).
NF_PARAMS = [("w0", [4, 9], ()), ("b0", [4], ()), ("sometimes", [2, 2], (NF_STEP,))]
NF_VARIANTS = [
    ("SGD", "plain", dict(lr=0.1)),
    ("SGD", "momentum", dict(lr=0.1, momentum=0.9)),
    ("Adam", "default", dict(lr=0.01)),
    ("Adam", "amsgrad", dict(lr=0.01, amsgrad=True)),
    ("AdamW", "default", dict(lr=0.01)),
    ("AdamW", "amsgrad", dict(lr=0.01, amsgrad=True)),
]
NF_FOUND_INF = [0.0, 1.0, 0.0]


def same_snapshot_nan_aware(a, b):
    """torch_optim_cases.same_snapshot with NaN equal to NaN (torch.equal says NaN != NaN, and the
    found_inf step's grads hold NaN here). run_case looks same_snapshot up in its module, so
    this replaces it there (see optim_cases)."""
    def eq(x, y):
        if x is None or y is None:
            return x is None and y is None
        if torch.is_tensor(x):
            return x.shape == y.shape and x.dtype == y.dtype and bool(((x == y) | (x.isnan() & y.isnan())).all())
        return x == y
    pa, ga, sa = a
    pb, gb, sb = b
    return (all(eq(x, y) for x, y in zip(pa, pb)) and all(eq(x, y) for x, y in zip(ga, gb))
            and all(x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x) for x, y in zip(sa, sb)))


def inject(grads):
    g = grads[NF_STEP][NF_PARAM].clone().reshape(-1)
    for i, v in NF_VALUES.items():
        g[i] = v
    grads[NF_STEP][NF_PARAM] = g.reshape(grads[NF_STEP][NF_PARAM].shape)
    return grads


def scales_for(dname):
    s, out = optc.AMP_SCALE[dname], []
    for fi in NF_FOUND_INF:
        out.append((s, fi))
        if fi:
            s = s / 2
    return out


def case_values(case):
    """Every compared value of a case, in order (params, state tensors, grads_after)."""
    vals = []
    for step in case["steps"]:
        for p in step["params"]:
            vals.extend(p)
        for st in step["state"]:
            if st:
                for k in sorted(st):
                    vals.extend(st[k] if isinstance(st[k], list) else [st[k]])
        for g in step["grads_after"] or []:
            if g is not None:
                vals.extend(g)
    return vals


def with_grad_scaler(opt_name, hyper, dname, specs, inits, grads, scales):
    """The scaler case driven by a real torch.amp.GradScaler; returns (params, grads, state)
    per step and the (scale, found_inf) the scaler used."""
    dtype = optc.DTYPES[dname]
    params = [torch.nn.Parameter(x.to(dtype).clone()) for x in inits]
    opt = optc.OPT_CLS[opt_name](params, fused=True, **hyper)
    scaler = torch.amp.GradScaler("cpu", init_scale=scales[0][0], growth_interval=1000)
    scaler.scale(torch.zeros(()))   # what scaling a loss does first: makes the scale tensor
    steps, used = [], []
    for row in grads:
        for p, g in zip(params, row):
            p.grad = None if g is None else g.to(dtype).clone()
        scale = float(scaler.get_scale())
        scaler.step(opt)
        fi = float(sum(v.item() for v in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values()))
        scaler.update()
        used.append((scale, fi))
        steps.append(([optc.flat(p) for p in params],
                      [None if p.grad is None else optc.flat(p.grad) for p in params],
                      [{k: (optc.flat(v) if torch.is_tensor(v) and v.dim() else float(v)) for k, v in
                        sorted(opt.state.get(p, {}).items())} for p in params]))
    return steps, used


def bits_equal(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)) and len(a) == len(b)


def nan_aware_replay_check(cases, replayer, select):
    res = {}
    for case in cases:
        if not select(case):
            continue
        r = res.setdefault(case["dtype"], {"cases": 0, "values": 0, "bit_exact": 0, "nonfinite": 0,
                                           "nonfinite_mismatches": 0, "max_tol_fraction": 0.0, "worst_case": None})
        r["cases"] += 1
        mine = replayer(case)
        for s, step in enumerate(case["steps"]):
            for pt, pm in zip(step["params"], mine[s]):
                for a, b in zip(pt, pm):
                    r["values"] += 1
                    r["bit_exact"] += (a == b) or (math.isnan(a) and math.isnan(b))
                    r["nonfinite"] += not math.isfinite(a)
                    bad, w = compare_values([b], [a], case["tolerance"])
                    r["nonfinite_mismatches"] += bad
                    if w > r["max_tol_fraction"]:
                        r["max_tol_fraction"], r["worst_case"] = w, case["id"]
    return res


def optim_cases(seed, check):
    optc.same_snapshot = same_snapshot_nan_aware   # run_case's found_inf assertion, NaN-aware
    specs = [optc.spec(n, s, none_at) for n, s, none_at in NF_PARAMS]
    cases = []
    impl_check = []
    scaler_check = []
    for j, (opt_name, vname, hyper) in enumerate(NF_VARIANTS):
        # without a scaler
        inits, grads = optc.make_inputs(seed + j, specs, NF_STEPS_MAGNITUDE)
        grads = inject(grads)
        for dname, path in (("float32", "single_tensor"), ("float16", "fused")):
            case, _ = optc.run_case(opt_name, hyper, dname, path, specs, inits, grads)
            case = {"id": f"{opt_name.lower()}/nonfinite_{vname}/{dname}", **case}
            cases.append(case)
            if check:
                want = case_values(case)
                for other in ("single_tensor", "foreach", "fused"):
                    if other == path:
                        continue
                    if other == "foreach":
                        c2 = run_foreach(opt_name, hyper, dname, specs, inits, grads)
                    else:
                        c2, _ = optc.run_case(opt_name, hyper, dname, other, specs, inits, grads)
                    bad, w = compare_values(case_values(c2), want, case["tolerance"])
                    impl_check.append({"id": case["id"], "path": other, "nonfinite_mismatches": bad,
                                       "max_tol_fraction": None if dname == "float16" and other != "fused" else w})
        # with a scaler: the non-finite step is found (found_inf = 1) and skipped
        inits, grads = optc.make_inputs(seed + 100 + j, specs, NF_STEPS_MAGNITUDE)
        for dname in ("float32", "float16"):
            scales = scales_for(dname)
            sg = [[None if g is None else g * scales[s][0] for g in row] for s, row in enumerate(grads)]
            sg = inject(sg)
            case, ok = optc.run_case(opt_name, hyper, dname, "fused", specs, inits, sg, scaler=scales)
            assert ok
            case = {"id": f"{opt_name.lower()}/amp_nonfinite_{vname}/{dname}", **case}
            cases.append(case)
            if check:
                steps, used = with_grad_scaler(opt_name, hyper, dname, specs, inits, sg, scales)
                same = used == scales
                for st, (ps, gs, sts) in zip(case["steps"], steps):
                    same &= all(bits_equal(a, b) for a, b in zip(st["params"], ps))
                    same &= all((a is None and b is None) or bits_equal(a, b) for a, b in zip(st["grads_after"], gs))
                    for a, b in zip(st["state"], sts):
                        same &= (a or {}).keys() == b.keys() and all(
                            bits_equal(a[k] if isinstance(a[k], list) else [a[k]],
                                       b[k] if isinstance(b[k], list) else [b[k]]) for k in b)
                scaler_check.append({"id": case["id"], "scale_and_found_inf": [list(u) for u in used],
                                     "same_as_case": bool(same)})
                assert same, case["id"]
    checks = {}
    if check:
        checks["impl_check"] = {
            "runs": len(impl_check),
            "nonfinite_mismatches": sum(r["nonfinite_mismatches"] for r in impl_check),
            "max_tol_fraction": max(r["max_tol_fraction"] or 0.0 for r in impl_check),
            "worst": max(impl_check, key=lambda r: r["max_tol_fraction"] or 0.0)["id"],
            "failing": [r for r in impl_check if r["nonfinite_mismatches"] or (r["max_tol_fraction"] or 0) > 1],
        }
        checks["self_check"] = nan_aware_replay_check(cases, optc.replay, lambda c: c["torch_path"] == "single_tensor")
        checks["fused_check"] = nan_aware_replay_check(cases, optc.replay_fused, lambda c: c["torch_path"] == "fused")
        checks["grad_scaler_check"] = scaler_check
    return cases, checks


def run_foreach(opt_name, hyper, dname, specs, inits, grads):
    """run_case through torch's foreach path (foreach=True), same layout."""
    dtype = optc.DTYPES[dname]
    params = [torch.nn.Parameter(x.to(dtype).clone()) for x in inits]
    opt = optc.OPT_CLS[opt_name](params, foreach=True, **hyper)
    case = {"steps": [], "tolerance": dict(optc.TOLERANCE[dname])}
    for row in grads:
        for p, g in zip(params, row):
            p.grad = None if g is None else g.to(dtype).clone()
        opt.step()
        case["steps"].append({"params": [optc.stored(p, None) for p in params],
                              "state": [optc.state_json(opt.state.get(p), None) for p in params],
                              "grads_after": None})
    return case


# ---------------------------------------------------------------- main
def env_meta(generator, seed, argv):
    return {
        "generator": generator,
        "command": command_line(argv),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_capability": getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")(),
        "seed": seed,
    }


def write(path, fmt, meta, cases):
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate ids"
    doc = encode({"format": fmt, "meta": meta, "cases": cases})
    text = json.dumps(doc, indent=None, separators=(",", ":"), allow_nan=False)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"wrote {len(cases)} cases to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops-out", default="nonfinite_ops.json")
    ap.add_argument("--optim-out", default="nonfinite_optim.json")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    check = not args.no_check
    convention = ('non-finite numbers are written as the JSON strings "nan", "inf" and "-inf" in place of a '
                  'number; a runner compares a NaN as "is NaN" and an infinity by sign, the tolerance applies '
                  'to finite values')

    cases, checks = op_cases(args.seed, check)
    meta = env_meta("torch_nonfinite_cases.py (ops part; helpers of torch_op_cases.py)", args.seed, sys.argv)
    meta["notes"] = [
        convention,
        "inputs hold NaN/+inf/-inf at fixed places (each case's note says where) among values drawn with "
        "Python's random; float64 cases of the same op and label use the same draws",
        "grad_output is finite, except in relu/4x5_gout_nonfinite/*",
        "outputs and grads are what torch computes, non-finite values included",
        "tolerance per case as in torch_op_cases.py: |got - want| <= atol + rtol*|want| for finite values",
    ]
    if check:
        meta.update(checks)
        worst = {d: max(v["max_tol_fraction"] for v in ops.values()) for d, ops in checks["reference_check"].items()}
        print("ops reference-check worst fraction of tolerance:", json.dumps(worst))
        print("ops naive-check:", json.dumps({k: round(v["max_tol_fraction"], 4)
                                              for k, v in checks["naive_check"].items()}))
        print("ops float16 fallbacks:", json.dumps(checks["float16_fallbacks"]))
        print("ops non-finite mismatches:", json.dumps(checks["nonfinite_mismatches"]))
    write(args.ops_out, opc.FORMAT, meta, cases)

    cases, checks = optim_cases(args.seed, check)
    meta = env_meta("torch_nonfinite_cases.py (optim part; helpers of torch_optim_cases.py)", args.seed, sys.argv)
    meta.update({
        "grad_magnitude_per_step": NF_STEPS_MAGNITUDE,
        "nonfinite_grads": {"step": NF_STEP + 1, "param": NF_PARAMS[NF_PARAM][0],
                            "values": {str(i): encode(v) for i, v in NF_VALUES.items()}},
        "scaler_cases": {"found_inf_per_step": NF_FOUND_INF, "first_grad_scale": optc.AMP_SCALE},
        "notes": [
            convention,
            "params w0 [4,9], b0 [4], sometimes [2,2] (grad None at step 2); at step 2 w0's grad holds NaN at "
            "flat index 1, +inf at 5 and -inf at 10",
            "torch's fused CPU kernels drop a NaN in AMSGrad's max (max_exp_avg_sq) in their scalar tail and keep "
            "it in their vector body; the non-finite values sit in w0's first 32 elements, where all of torch's "
            "paths keep it (NaN propagates, as torch.maximum), see impl_check",
            "<opt>/nonfinite_*: no scaler; torch takes the non-finite values into params and state; float32 "
            "through the single-tensor path, float16 through the fused path",
            "<opt>/amp_nonfinite_*: fused path with grad_scale/found_inf as torch.amp.GradScaler gives them: "
            "grads are the scaled grads, step 2 holds the non-finite values and has found_inf = 1 (skipped: "
            "params, grads and state untouched), the scale is halved for step 3",
            "tolerance per case: |got - want| <= atol + rtol*|want| for finite values",
        ],
    })
    if check:
        meta.update(checks)
        print("optim impl-check:", json.dumps({k: v for k, v in checks["impl_check"].items()}))
        print("optim self-check:", json.dumps(checks["self_check"]))
        print("optim fused-check:", json.dumps(checks["fused_check"]))
        print("optim grad-scaler-check:", all(r["same_as_case"] for r in checks["grad_scaler_check"]))
    write(args.optim_out, optc.FORMAT, meta, cases)


if __name__ == "__main__":
    main()
