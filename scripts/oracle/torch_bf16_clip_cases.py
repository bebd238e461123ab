#!/usr/bin/env python3
"""Reference cases in bfloat16 (formats "ops-ref/1" and "optim-ref/1") and for gradient
clipping (format "clip-ref/1"), computed with PyTorch on CPU.

    python scripts/oracle/torch_bf16_clip_cases.py --seed 6 \\
        --ops-out tests/data/ops_bf16.json --optim-out tests/data/optim_bf16.json \\
        --clip-out tests/data/clip.json

ops (ops_bf16.json): every op that ops.json covers in float16, one or two of its
structures each (OPS_PICK), inputs drawn as torch_op_cases.py draws them (its helpers,
keyed by seed, op and label) and rounded once to bfloat16, torch run in bfloat16
("torch_compute": "bfloat16"). Where torch's bfloat16 result is more than half the
tolerance away from torch's float64 result on the same inputs, the case is computed in
float32 from the bfloat16 inputs and each result rounded once to bfloat16
("torch_compute": "float32_rounded") with the tolerance doubled until torch's bfloat16
result lies within half of it, as torch_op_cases.py does for float16.

optim (optim_bf16.json): SGD (plain, momentum, nesterov, weight_decay), Adam (default,
amsgrad, weight_decay, maximize) and AdamW (default, amsgrad) over the standard
profile's five params for 3 steps, bfloat16 params and grads, through torch's fused
CPU path (fused=True: load bfloat16, compute in float32, store bfloat16), the path
the float16 cases of optim_standard.json use. run_case of torch_optim_cases.py writes
every case, so the layout is the standard profile's.

clip (clip.json, format "clip-ref/1", see scripts/oracle/README.md):
torch.nn.utils.clip_grad_norm_ and clip_grad_value_ over a list of params whose grads
include a 0-element tensor, a 0-d tensor and a param whose .grad is None; float64,
float32, float16, bfloat16 and two mixed-dtype lists, each through torch's foreach
path (foreach=True) and its per-tensor path (foreach=False).

Every number is exact (a bfloat16/float16/float32 value is written as the double equal
to it); NaN and infinities are the strings "nan", "inf", "-inf" (the formats' agreed
extension).

Checks recorded in meta (skip with --no-check; the bfloat16 fallback decision of the
ops part is made either way, so the files do not depend on the flag):
  ops    reference_check        torch's bfloat16 result against torch's float64 result on
                                the same inputs, as a fraction of the tolerance
         float32_rounded_check  the same for the float32 result rounded once to bfloat16
                                (storage bfloat16, arithmetic float32)
         naive_check            matmul/linear/sum/mean with sequential float32 sums,
                                rounded once to bfloat16
  optim  fused_check            every case replayed in float64 arithmetic, rounding to
                                bfloat16 only what a fused kernel stores: ULPs apart
         impl_check             every case rerun through torch's single-tensor and foreach
                                paths (they round every intermediate to bfloat16)
  clip   paths_check            foreach=True against foreach=False: same bits?
         reference_check        float32/float16/bfloat16/mixed cases rerun by torch in
                                float64 on the same values: fraction of the tolerance
         formula_check          every case recomputed in plain Python with torch's formula
                                and torch's rounding points (see clip_formula)
         unclipped_bits, error_bits, clip_value_check
"""
import argparse
import json
import math
import random
import struct
import sys

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

import torch_op_cases as opc
import torch_optim_cases as optc
import torch_nonfinite_cases as nfc

NAN = float("nan")
INF = float("inf")
BF16 = "bfloat16"
F32 = struct.Struct("<f")


def rbf16(x):
    """Round a double to the nearest bfloat16 (round half to even, once: torch's own
    float64 -> bfloat16 conversion goes through float32 and can round twice)."""
    if x != x or x == 0.0 or math.isinf(x):
        return x
    _, e = math.frexp(x)
    q = max(e - 8, -133)                 # 8 significant bits; subnormals below 2^-126
    r = math.ldexp(round(math.ldexp(x, -q)), q)
    return math.copysign(INF, x) if abs(r) >= 2.0 ** 128 else r


def overflowing(r):
    """r (opc.r32 or opc.r16) with overflow to an infinity instead of OverflowError."""
    def f(x):
        try:
            return r(x)
        except OverflowError:
            return math.copysign(INF, x)
    return f


ROUND = {"float64": float, "float32": overflowing(opc.r32), "float16": overflowing(opc.r16), BF16: rbf16}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, BF16: torch.bfloat16}
DTYPE_NAME = {v: k for k, v in DTYPES.items()}


def ordered_int(x, dtype_name):
    """Floats of one dtype as ordered integers (their difference counts ULPs)."""
    if dtype_name == BF16:
        i = struct.unpack("<i", F32.pack(x))[0] >> 16
        return i if i >= 0 else -(i & 0x7FFF)
    return ORDERED_INT(x, dtype_name)


ORDERED_INT = optc.ordered_int
optc.ordered_int = ordered_int   # optc.compare looks it up in its module


def tol_fraction(got, want, tol):
    """(non-finite mismatches, worst fraction of the tolerance over values finite in both)."""
    return nfc.compare_values(got, want, tol)


def bits(x):
    return struct.pack("<d", x)


def same_bits(a, b):
    """Lists equal bit for bit (NaN equal to NaN, -0.0 not equal to 0.0)."""
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or bits(x) == bits(y) for x, y in zip(a, b))


# ======================================================================== ops (bfloat16)
# bfloat16 rounds 8x coarser than float16 (8 significant bits: 1 ULP is 2^-8 to 2^-7
# relative); this is float16's ops tolerance (1e-2, 1e-3) x4, which torch's bfloat16
# kernels stay within half of on the cases taken (meta.reference_check)
OPS_TOL = {"rtol": 4e-2, "atol": 4e-3}
OPS_PICK = {
    "add": ["bcast_last_3x4_4", "same_5x7"],
    "sub": ["bcast_mid_2x1x4_3x1", "scalar_like_3x4_1"],
    "mul": ["bcast_last_3x4_4", "outer_4x1_1x5"],
    "div": ["outer_4x1_1x5", "bcast_mid_2x1x4_3x1"],
    "neg": ["4x5", "33"],
    "exp": ["4x5", "33"],
    "log": ["4x5", "33"],
    "sqrt": ["4x5", "33"],
    "tanh": ["4x5", "33"],
    "sigmoid": ["4x5", "33"],
    "relu": ["33", "zeros_4x5"],
    "gelu": ["none_33", "tanh_33"],
    "sum": ["3x4x5_d0_2_keep", "7x129_d1"],
    "mean": ["3x4x5_d-1", "7x129_d0_keep"],
    "matmul": ["33x33@33x33", "batched_2x7x33@2x33x5"],
    "linear": ["8x20_to_16", "5x65_to_3"],
    "transpose": ["2x3x4_0_2", "2x3x4_-1_0"],
    "reshape": ["2x3x4_to_4x-1", "2x3x4_to_24"],
    "softmax": ["4x10_d1", "3x7_logits80_d1"],
    "log_softmax": ["4x10_d1", "3x7_logits80_d1"],
    "cross_entropy": ["8x5_mean_ls0.1_ign2", "8x5_mean_ls0.0_ign-100_logits80"],
    "mse_loss": ["4x5_mean", "7_mean_target_grad"],
    "layer_norm": ["4x10_ns10_eps1e-05", "3x7_ns7_eps0.001"],
    "embedding": ["idx6_w10x4", "idx2x3_w7x5"],
}
# structures of ops.json not taken, and why (meta.left_out gives torch's numbers)
OPS_LEFT_OUT = {
    ("div", "bcast_last_3x4_4"): "torch's bfloat16 backward of a broadcast divisor (bfloat16 intermediates, then "
                                 "a sum over rows that cancels) is far from float64: the fallback would need the "
                                 "tolerance x8",
}


def op_inputs(seed, op, label, ins, attrs, note):
    """The float64 draws of torch_op_cases.build for one configuration (same order)."""
    rng = random.Random(f"{seed}/{op}/{label}")
    base = []
    for e in ins:
        n = math.prod(e["shape"])
        if "int" in e:
            if e["int"] == "targets":
                vals = opc.targets(rng, e["shape"][0], ins[0]["shape"][1], attrs, note)
            else:
                vals = opc.indices(rng, e["shape"], e["int"][1])
            base.append(("i", vals, e["shape"]))
        elif e["kind"] == "lowvar":
            base.append(("f", opc.lowvar(rng, e["shape"]), e["shape"], e["requires_grad"]))
        else:
            base.append(("f", opc.draw(rng, e["kind"], n), e["shape"], e["requires_grad"]))
    y64, _ = opc.run(op, attrs, base, None, torch.float64)
    gbase = [rng.gauss(0.0, 1.0) for _ in range(y64.numel())]
    return base, gbase


def bf16_inputs(seed, op, label, ins, attrs, note):
    base, gbase = op_inputs(seed, op, label, ins, attrs, note)
    inputs = [e if e[0] == "i" else ("f", [rbf16(v) for v in e[1]], e[2], e[3]) for e in base]
    return inputs, [rbf16(v) for v in gbase]


def op_values(y, grads):
    """Output and every grad of a run, as flat lists."""
    return [opc.flat(y)] + [opc.flat(g) for g in grads if g is not None]


def worst_fraction(vals, refs, tol):
    w = 0.0
    for a, b in zip(vals, refs):
        bad, w1 = tol_fraction(a, b, tol)
        assert not bad       # every ops value here is finite
        w = max(w, w1)
    return w


def op_cases(seed, check):
    cases = []
    stats = {"reference_check": {}, "float32_rounded_check": {}, "naive_check": {}}
    fallbacks, left_out = [], []

    def note_stat(kind, op, cid, w):
        st = stats[kind].setdefault(op, {"cases": 0, "max_tol_fraction": 0.0, "worst": None})
        st["cases"] += 1
        if w >= st["max_tol_fraction"]:
            st["max_tol_fraction"], st["worst"] = w, cid

    picked = set()
    for op, label, ins, attrs, note, dims in opc.configs(None):
        cid = f"{op}/{label}/{BF16}"
        if (op, label) in OPS_LEFT_OUT:
            inputs, gout = bf16_inputs(seed, op, label, ins, attrs, note)
            y, grads = opc.run(op, attrs, inputs, gout, torch.bfloat16)
            yr, gr = opc.run(op, attrs, inputs, gout, torch.float64)
            left_out.append({"id": cid, "why": OPS_LEFT_OUT[(op, label)],
                             "bfloat16_kernel_tol_fraction": worst_fraction(op_values(y, grads), op_values(yr, gr),
                                                                            OPS_TOL)})
        if label not in OPS_PICK.get(op, ()):
            continue
        picked.add((op, label))
        inputs, gout = bf16_inputs(seed, op, label, ins, attrs, note)
        tol = dict(OPS_TOL)
        y, grads = opc.run(op, attrs, inputs, gout, torch.bfloat16)
        yr, gr = opc.run(op, attrs, inputs, gout, torch.float64)
        refs = op_values(yr, gr)
        w = worst_fraction(op_values(y, grads), refs, tol)
        y32, g32 = opc.run(op, attrs, inputs, gout, torch.float32)
        y32, g32 = y32.to(torch.bfloat16), [None if g is None else g.to(torch.bfloat16) for g in g32]
        compute = BF16
        factor = 1
        if w > 0.5:
            # as torch_op_cases.py does for float16: expect the float32 result rounded once and
            # widen the tolerance (x2, x4, ...) until torch's bfloat16 result is within half of it
            y, grads = y32, g32
            compute = "float32_rounded"
            while w / factor > 0.5:
                factor *= 2
            tol = {k: v * factor for k, v in tol.items()}
            fallbacks.append({"id": cid, "bfloat16_kernel_tol_fraction": w, "tolerance_factor": factor})
            note = ((note + "; ") if note else "") + (
                f"torch's bfloat16 kernel result is {w:.2f} of the bfloat16 tolerance from the float64 result: "
                f"expected values computed in float32 and rounded to bfloat16, tolerance x{factor}")
        if check:
            note_stat("reference_check", op, cid, w / factor)       # torch's bfloat16 kernels
            note_stat("float32_rounded_check", op, cid, worst_fraction(op_values(y32, g32), refs, tol))
            xs64 = [torch.tensor(e[1], dtype=torch.float64).reshape(e[2]) if e[0] == "f" else None for e in inputs]
            nv = opc.naive_values(op, attrs, xs64, torch.tensor(gout, dtype=torch.float64).reshape(y.shape))
            if nv is not None:
                note_stat("naive_check", op, cid, worst_fraction([[rbf16(v) for v in a] for a in nv], refs, tol))
        case = {
            "id": cid,
            "op": op,
            "dtype": BF16,
            "torch_compute": compute,
            "inputs": [{"shape": e[2], "int_data": e[1]} if e[0] == "i" else
                       {"shape": e[2], "data": e[1], "requires_grad": e[3]} for e in inputs],
            "attrs": attrs,
            "output": {"shape": list(y.shape), "data": opc.flat(y)},
            "grad_output": {"shape": list(y.shape), "data": gout},
            "grads": [None if g is None else {"shape": list(g.shape), "data": opc.flat(g)} for g in grads],
            "tolerance": tol,
        }
        if note:
            case["note"] = note
        cases.append(case)
    missing = [(op, lab) for op, labs in OPS_PICK.items() for lab in labs if (op, lab) not in picked]
    assert not missing, missing
    checks = {"bfloat16_fallbacks": fallbacks, "left_out": left_out}
    if check:
        checks.update(stats)
    return cases, checks


# ======================================================================== optim (bfloat16)
# rtol: float16's optim rtol (4e-3) x8, bfloat16's coarser rounding. atol: bfloat16 keeps
# float32's exponent range (no float16 subnormals near 6e-5 to cover), so small state
# values (exp_avg_sq about 1e-7) are compared relatively
OPTIM_TOL = {"rtol": 3.2e-2, "atol": 1e-6}
optc.DTYPES[BF16] = torch.bfloat16        # run_case and run_foreach look dtypes and
optc.TOLERANCE[BF16] = dict(OPTIM_TOL)    # tolerances up in these module dicts
OPTIM_VARIANTS = [
    ("SGD", "plain"), ("SGD", "momentum"), ("SGD", "nesterov"), ("SGD", "weight_decay"),
    ("Adam", "default"), ("Adam", "amsgrad"), ("Adam", "weight_decay"), ("Adam", "maximize"),
    ("AdamW", "default"), ("AdamW", "amsgrad"),
]


def replay_fused_bf16(case):
    """optc.replay_fused with bfloat16 as the stored dtype. replay_fused picks its rounding by
    the case's dtype from its module's globals when called (r16 for "float16"), so it runs
    here on the case labelled float16 with r16 standing for rbf16."""
    saved = optc.r16
    optc.r16 = rbf16
    try:
        return optc.replay_fused(dict(case, dtype="float16"))
    finally:
        optc.r16 = saved


def fused_support():
    """Whether torch's fused CPU optimizers take bfloat16 params (one tiny step each)."""
    out = {}
    for name, cls in (("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)):
        p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
        try:
            extra = dict(momentum=0.9) if name == "SGD" else {}
            opt = cls([p], lr=0.1, fused=True, **extra)
            p.grad = torch.ones(3, dtype=torch.bfloat16)
            opt.step()
            out[name] = True
        except (RuntimeError, ValueError) as e:
            out[name] = f"no: {e}"
    return out


def optim_cases(seed, check):
    support = fused_support()
    specs = [optc.spec(n, s, none_at) for n, s, none_at in optc.STANDARD_PARAMS]
    cases, impl = [], []
    for opt_name, vname in OPTIM_VARIANTS:
        hyper = (optc.SGD_VARIANTS if opt_name == "SGD" else optc.ADAM_VARIANTS)[vname]
        path = "fused" if support[opt_name] is True else "single_tensor"
        inits, grads = optc.make_inputs(f"{seed}/bf16/{opt_name}/{vname}", specs, optc.GRAD_MAGNITUDE)
        case, _ = optc.run_case(opt_name, hyper, BF16, path, specs, inits, grads)
        case = {"id": f"{opt_name.lower()}/{vname}/{BF16}", **case}
        cases.append(case)
        if check:
            want = nfc.case_values(case)
            for other in ("single_tensor", "foreach"):
                if other == "foreach":
                    c2 = nfc.run_foreach(opt_name, hyper, BF16, specs, inits, grads)
                else:
                    c2, _ = optc.run_case(opt_name, hyper, BF16, other, specs, inits, grads)
                bad, w = nfc.compare_values(nfc.case_values(c2), want, case["tolerance"])
                impl.append({"id": case["id"], "path": other, "nonfinite_mismatches": bad, "max_tol_fraction": w})
    checks = {"fused_bf16_cpu": support}
    if check:
        checks["fused_check"] = optc.compare(cases, replay_fused_bf16, lambda c: c["torch_path"] == "fused")
        checks["impl_check"] = {
            "note": "torch's single-tensor and foreach paths on bfloat16 tensors round every intermediate to "
                    "bfloat16; information only: the expected values are the fused path's",
            "max_tol_fraction": {p: max(r["max_tol_fraction"] for r in impl if r["path"] == p)
                                 for p in ("single_tensor", "foreach")},
            "within_tolerance": {p: sum(r["max_tol_fraction"] <= 1.0 for r in impl if r["path"] == p)
                                 for p in ("single_tensor", "foreach")},
            "runs": impl,
        }
    return cases, checks


# ======================================================================== clip (clip-ref/1)
CLIP_FORMAT = "clip-ref/1"
CLIP_DTYPES = ("float64", "float32", "float16", BF16)
# |got - want| <= atol + rtol*|want|, for grads and total_norm. Every value is a product
# (grad times coefficient) or a norm, with no cancellation, so rtol carries the check and
# atol only covers the subnormal range. rtol: float64/float32 as the ops cases; float16
# and bfloat16 as the optim cases (4e-3, 3.2e-2: about 4-8 ULP; torch rounds the norm, the
# reciprocal, the coefficient and the product to the dtype). meta.reference_check: torch's
# results against its float64 results on the same values, as a fraction of these
CLIP_TOL = {
    "float64": {"rtol": 1e-12, "atol": 1e-15},
    "float32": {"rtol": 1e-5, "atol": 1e-8},
    "float16": {"rtol": 4e-3, "atol": 1e-6},
    BF16: {"rtol": 3.2e-2, "atol": 1e-6},
}


def T(name, shape, grad=True, dtype=None):
    """A param: its name, shape, whether it has a grad, its dtype (None: the case's)."""
    return {"name": name, "shape": list(shape), "grad": grad, "dtype": dtype}


STD = [T("g0", [3, 5]), T("g1", [7]), T("empty", [0]), T("scalar", []), T("no_grad", [3], grad=False),
       T("g2", [2, 3, 3])]
NO_EMPTY = [t for t in STD if t["name"] != "empty"]   # torch cannot take the inf norm of a 0-element grad
ALL_NONE = [T("p0", [3, 5], grad=False), T("p1", [7], grad=False), T("p2", [], grad=False)]
MIXED_F32_F16 = [T("g0", [3, 5], dtype="float32"), T("g1", [7], dtype="float16"), T("empty", [0], dtype="float16"),
                 T("scalar", [], dtype="float32"), T("no_grad", [3], grad=False, dtype="float16"),
                 T("g2", [2, 3, 3], dtype="float16")]
MIXED_F16_BF16 = [dict(t, dtype={"float32": "float16", "float16": BF16}[t["dtype"]]) for t in MIXED_F32_F16]
NORM_TYPES = [("2", 2.0), ("1", 1.0), ("inf", INF), ("3", 3.0), ("0.5", 0.5)]
# max_norm that clips / does not clip the standard grads (about 40 values ~ N(0, 1): norms
# 2: ~6, 1: ~32, inf: ~2.5, 3: ~3.5, 0.5: ~1000)
CLIP_MAX = {"2": 1.0, "1": 5.0, "inf": 1.0, "3": 1.0, "0.5": 100.0}
NOCLIP_MAX = {"2": 100.0, "1": 1000.0, "inf": 100.0, "3": 100.0, "0.5": 1e5}
NF_AT = ("g0", 4)   # the non-finite value of the nan_* / inf_* variants: g0's flat element 4


def clip_variants():
    """(op, variant, hyperparams without foreach, params, {param: {flat index: value}}, scale,
    dtypes). scale multiplies the N(0,1) draws; "zeros" makes every grad 0 (some -0.0)."""
    out = []
    norm = "clip_grad_norm_"
    val = "clip_grad_value_"

    def add(op, name, hyper, params=STD, specials=None, scale=1.0, dtypes=CLIP_DTYPES):
        out.append((op, name, hyper, params, specials or {}, scale, dtypes))

    def nh(max_norm, norm_type=2.0, error=False):
        return {"max_norm": max_norm, "norm_type": norm_type, "error_if_nonfinite": error}

    for lab, p in NORM_TYPES:
        params = NO_EMPTY if math.isinf(p) else STD
        add(norm, f"norm{lab}_clip", nh(CLIP_MAX[lab], p), params)
        add(norm, f"norm{lab}_noclip", nh(NOCLIP_MAX[lab], p), params)
    add(norm, "norminf_empty_error", nh(1.0, INF))
    add(norm, "error_flag_finite", nh(1.0, 2.0, True))
    add(norm, "max_norm0", nh(0.0))
    add(norm, "zeros", nh(1.0), scale="zeros")
    add(norm, "zeros_max_norm0", nh(0.0), scale="zeros")
    add(norm, "all_none", nh(1.0), ALL_NONE)
    for kind, v in (("nan", NAN), ("inf", INF)):
        for lab, p in (("2", 2.0), ("inf", INF)):
            params = NO_EMPTY if math.isinf(p) else STD
            for error in (False, True):
                add(norm, f"{kind}_norm{lab}" + ("_error" if error else ""), nh(1.0, p, error), params,
                    {NF_AT[0]: {NF_AT[1]: v}})
    add(norm, "large_values", nh(1.0), scale=300.0)
    add(norm, "float16_overflow", nh(1.0), scale=20000.0)
    add(norm, "mixed_f32_f16", nh(1.0), MIXED_F32_F16, dtypes=("mixed",))
    add(norm, "mixed_f16_bf16", nh(1.0), MIXED_F16_BF16, dtypes=("mixed",))
    add(norm, "mixed_f32_f16_norminf", nh(1.0, INF), [t for t in MIXED_F32_F16 if t["name"] != "empty"],
        dtypes=("mixed",))
    nf = {"g0": {1: NAN, 4: INF, 9: -INF}, "g2": {0: -INF}, "scalar": {0: INF}}
    add(val, "value0.5", {"clip_value": 0.5})
    add(val, "value0.5_nonfinite", {"clip_value": 0.5}, specials=nf)
    add(val, "value0_nonfinite", {"clip_value": 0.0}, specials=nf)
    add(val, "all_none", {"clip_value": 0.5}, ALL_NONE)
    add(val, "mixed_f32_f16", {"clip_value": 0.5}, MIXED_F32_F16, specials=nf, dtypes=("mixed",))
    return out


def clip_draws(seed, name, params, specials, scale):
    """float64 values per param (None where there is no grad), from Python's random."""
    rng = random.Random(f"{seed}/clip/{name}")
    vals = []
    for t in params:
        n = math.prod(t["shape"])
        if scale == "zeros":
            v = [-0.0 if (i % 3 == 1) else 0.0 for i in range(n)]
        else:
            v = [rng.gauss(0.0, 1.0) * scale for _ in range(n)]
        for i, x in specials.get(t["name"], {}).items():
            v[i] = x
        vals.append(v if t["grad"] else None)
    return vals


def short_message(msg):
    """torch's message without its advice (". To disable ...", "(Could this error message ...")."""
    return msg.split(". To disable")[0].split("  (Could this")[0].strip()


def run_clip(op, hyper, foreach, grads_in, params, dtypes, as_float64=False):
    """Run torch once. grads_in: per param the values (exact in its dtype) or None. Returns
    (expected dict, total_norm tensor or None)."""
    ps = []
    for t, v, dn in zip(params, grads_in, dtypes):
        dt = torch.float64 if as_float64 else DTYPES[dn]
        p = torch.nn.Parameter(torch.zeros(t["shape"], dtype=dt))
        if v is not None:
            p.grad = torch.tensor(v, dtype=torch.float64).to(dt).reshape(t["shape"])
            assert same_bits(opc.flat(p.grad), v)
        ps.append(p)
    tn = None
    try:
        if op == "clip_grad_norm_":
            tn = clip_grad_norm_(ps, hyper["max_norm"], hyper["norm_type"], hyper["error_if_nonfinite"],
                                 foreach=foreach)
        else:
            clip_grad_value_(ps, hyper["clip_value"], foreach=foreach)
        err = None
    except RuntimeError as e:
        err = short_message(str(e))
    exp = {}
    if err is not None:
        exp["error"] = err
    exp["grads"] = [None if p.grad is None else opc.flat(p.grad) for p in ps]
    if tn is not None:
        exp["total_norm"] = float(tn.item())
        exp["total_norm_dtype"] = DTYPE_NAME[tn.dtype]
    return exp, tn


def promoted(dnames):
    """The dtype torch.stack gives the per-grad norms (type promotion); float32 for no grad."""
    dt = DTYPES[dnames[0]]
    for d in dnames[1:]:
        dt = torch.promote_types(dt, DTYPES[d])
    return DTYPE_NAME[dt]


def clip_formula(op, hyper, grads_in, dnames):
    """torch's clipping in plain Python (float64 arithmetic, no torch), rounding where torch
    stores: each grad's norm (rounded to the grad's dtype), the total norm of those norms
    (rounded to the promoted dtype), the coefficient reciprocal(total + 1e-6) * max_norm with
    each of its steps rounded to that dtype, clamped to at most 1 (NaN stays NaN), and every
    grad multiplied by it, the product rounded to the grad's dtype. clip_grad_value_:
    clamp(g, -c, c), NaN stays NaN. Returns the expected dict (error message None)."""
    if op == "clip_grad_value_":
        if all(v is None for v in grads_in):
            return None            # torch raises on an empty list of grads
        lo, hi = -hyper["clip_value"], hyper["clip_value"]

        def clamp(x):              # clamp_min_ then clamp_max_: NaN stays, a zero keeps x's sign
            x = lo if x < lo else x
            return hi if x > hi else x
        return {"grads": [None if v is None else [clamp(x) for x in v] for v in grads_in]}
    p = hyper["norm_type"]
    present = [(v, d) for v, d in zip(grads_in, dnames) if v is not None]
    if not present:
        return {"grads": [None] * len(grads_in), "total_norm": 0.0, "total_norm_dtype": "float32"}

    def norm(xs):
        a = [abs(x) for x in xs]
        if any(math.isnan(x) for x in a):
            return NAN
        if math.isinf(p):
            if not a:
                return None   # torch raises
            return max(a)
        if any(math.isinf(x) for x in a):
            return INF
        return math.fsum(x ** p for x in a) ** (1.0 / p) if a else 0.0
    tnorms = [norm(v) for v, _ in present]
    if any(t is None for t in tnorms):
        return None
    tnorms = [ROUND[d](t) for t, (_, d) in zip(tnorms, present)]
    out_d = promoted([d for _, d in present])
    R = ROUND[out_d]
    total = R(norm(tnorms))
    if hyper["error_if_nonfinite"] and not math.isfinite(total):
        return {"error": True, "grads": [None if v is None else list(v) for v in grads_in]}
    coef = R(R(1.0 / R(total + 1e-6)) * hyper["max_norm"])
    if not math.isnan(coef):
        coef = min(coef, 1.0)
    grads = []
    for v, d in zip(grads_in, dnames):
        grads.append(None if v is None else [ROUND[d](x * coef) for x in v])
    return {"grads": grads, "total_norm": total, "total_norm_dtype": out_d}


def values_of(exp):
    vals = []
    for g in exp["grads"]:
        if g is not None:
            vals.extend(g)
    if "total_norm" in exp:
        vals.append(exp["total_norm"])
    return vals


def clip_cases(seed, check):
    cases = []
    paths, refs, formula = [], {}, {}
    unclipped, error_bits, value_check = [], [], []
    for op, name, hyper, params, specials, scale, dtypes in clip_variants():
        base = clip_draws(seed, name, params, specials, scale)
        for dname in dtypes:
            dnames = [t["dtype"] or dname for t in params]
            grads_in = [None if v is None else [ROUND[d](x) for x in v] for v, d in zip(base, dnames)]
            tol = dict(max((CLIP_TOL[d] for d in set(dnames)), key=lambda t: t["rtol"]))
            by_path = {}
            for foreach in (True, False):
                cid = f"{op}/{name}/{dname}/{'foreach' if foreach else 'for_loop'}"
                exp, _ = run_clip(op, hyper, foreach, grads_in, params, dnames)
                by_path[foreach] = exp
                if "error" in exp:
                    assert all(same_bits(a, b) for a, b in zip(exp["grads"], grads_in)), cid
                    exp.pop("total_norm_dtype", None)
                cases.append({
                    "id": cid,
                    "op": op,
                    "dtype": dname,
                    "hyperparams": {**hyper, "foreach": foreach},
                    "grads": [{"name": t["name"], "shape": t["shape"], "dtype": d, "data": v}
                              for t, v, d in zip(params, grads_in, dnames)],
                    "expected": exp,
                    "tolerance": tol,
                })
                if not check:
                    continue
                if "error" in exp:
                    error_bits.append({"id": cid, "error": exp["error"],
                                       "grads_unchanged": all(same_bits(a, b) for a, b in zip(exp["grads"], grads_in))})
                if name.endswith("_noclip") or name == "zeros":
                    unclipped.append({"id": cid, "bit_identical": all(same_bits(a, b) for a, b in
                                                                      zip(exp["grads"], grads_in))})
                # torch's formula, replayed in plain Python
                mine = clip_formula(op, hyper, grads_in, dnames)
                st = formula.setdefault(dname, {"cases": 0, "bit_exact": 0, "max_ulp": 0, "nonfinite_mismatches": 0,
                                                "max_tol_fraction": 0.0, "worst": None, "not_bit_exact": []})
                st["cases"] += 1
                if mine is None or "error" in mine or "error" in exp:
                    ok = (mine is None or "error" in mine) and "error" in exp
                    st["bit_exact"] += ok
                    st["nonfinite_mismatches"] += not ok
                    if not ok:
                        st["not_bit_exact"].append(cid)
                else:
                    a, b = values_of(mine), values_of(exp)
                    bad, w = nfc.compare_values(a, b, tol)
                    exact = same_bits(a, b) and mine.get("total_norm_dtype") == exp.get("total_norm_dtype")
                    st["bit_exact"] += exact
                    st["nonfinite_mismatches"] += bad
                    if not exact:
                        st["not_bit_exact"].append(cid)
                    if dname != "mixed":
                        for x, y in zip(a, b):
                            if math.isfinite(x) and math.isfinite(y):
                                st["max_ulp"] = max(st["max_ulp"], abs(ordered_int(x, dname) - ordered_int(y, dname)))
                    if w >= st["max_tol_fraction"]:
                        st["max_tol_fraction"], st["worst"] = w, cid
                if op == "clip_grad_value_":
                    c = hyper["clip_value"]
                    ok = all(g is None or all(math.isnan(x) or -c <= x <= c for x in g) for g in exp["grads"])
                    same = ("error" in exp) if mine is None else \
                        ("error" not in exp and same_bits(values_of(mine), values_of(exp)))
                    value_check.append({"id": cid, "in_range_nan_kept": ok, "same_as_clamp": same})
                # torch in float64 on the same values
                if dname != "float64":
                    r, _ = run_clip(op, hyper, foreach, grads_in, params, dnames, as_float64=True)
                    st = refs.setdefault(dname, {"cases": 0, "max_tol_fraction": 0.0, "worst": None,
                                                 "nonfinite_mismatches": []})
                    st["cases"] += 1
                    if ("error" in r) != ("error" in exp):
                        st["nonfinite_mismatches"].append({"id": cid, "float64": r.get("error", "no error")})
                        continue
                    bad, w = nfc.compare_values(values_of(exp), values_of(r), tol)
                    if bad:
                        st["nonfinite_mismatches"].append({"id": cid, "values": bad})
                    elif w >= st["max_tol_fraction"]:
                        st["max_tol_fraction"], st["worst"] = w, cid
            if check:
                a, b = by_path[True], by_path[False]
                same = same_bits(values_of(a), values_of(b)) and a.get("error") == b.get("error")
                bad, w = (0, 0.0) if ("error" in a or "error" in b) else \
                    nfc.compare_values(values_of(a), values_of(b), tol)
                paths.append({"id": f"{op}/{name}/{dname}", "same_bits": same, "nonfinite_mismatches": bad,
                              "max_tol_fraction": w,
                              **({} if a.get("error") == b.get("error") else
                                 {"errors": [a.get("error"), b.get("error")]})})
    checks = {}
    if check:
        checks["paths_check"] = {
            "pairs": len(paths),
            "same_bits": sum(p["same_bits"] for p in paths),
            "nonfinite_mismatches": sum(p["nonfinite_mismatches"] for p in paths),
            "max_tol_fraction": max(p["max_tol_fraction"] for p in paths),
            "not_same_bits": [p for p in paths if not p["same_bits"]],
        }
        checks["reference_check"] = refs
        checks["formula_check"] = formula
        checks["unclipped_bits"] = {"cases": len(unclipped),
                                    "bit_identical": sum(u["bit_identical"] for u in unclipped),
                                    "not_identical": [u["id"] for u in unclipped if not u["bit_identical"]]}
        checks["error_bits"] = {"cases": len(error_bits),
                                "grads_unchanged": sum(e["grads_unchanged"] for e in error_bits),
                                "messages": sorted({e["error"] for e in error_bits})}
        checks["clip_value_check"] = {"cases": len(value_check),
                                      "in_range_nan_kept": sum(v["in_range_nan_kept"] for v in value_check),
                                      "same_as_clamp": sum(v["same_as_clamp"] for v in value_check)}
    return cases, checks


# ======================================================================== main
CONVENTION = ('non-finite numbers are written as the JSON strings "nan", "inf" and "-inf" in place of a number; '
              'a runner compares a NaN as "is NaN" and an infinity by sign, the tolerance applies to finite values')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops-out", default="tests/data/ops_bf16.json")
    ap.add_argument("--optim-out", default="tests/data/optim_bf16.json")
    ap.add_argument("--clip-out", default="tests/data/clip.json")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    check = not args.no_check
    gen = "torch_bf16_clip_cases.py"

    # ---- ops
    cases, checks = op_cases(args.seed, check)
    meta = nfc.env_meta(f"{gen} (ops part; helpers of torch_op_cases.py)", args.seed, sys.argv)
    meta["notes"] = [
        "bfloat16: every value is the double equal to a bfloat16 value (8 significant bits)",
        "the op structures of ops.json's float16 cases, one or two per op; inputs drawn with torch_op_cases.py's "
        "helpers (keyed by seed, op and label) and rounded once to bfloat16",
        "torch_compute bfloat16: torch's CPU bfloat16 kernels; float32_rounded: computed in float32 from the "
        "bfloat16 inputs, each result rounded once to bfloat16, tolerance widened (see bfloat16_fallbacks)",
        f"tolerance {json.dumps(OPS_TOL)} (float16's x4) unless a case says otherwise: "
        "|got - want| <= atol + rtol*|want|, for output and every grad",
    ]
    meta.update(checks)
    if check:
        worst = {k: max(v["max_tol_fraction"] for v in checks[k].values())
                 for k in ("reference_check", "float32_rounded_check", "naive_check")}
        print("ops worst fraction of tolerance:", json.dumps(worst))
    print("ops bfloat16 fallbacks:", json.dumps(checks["bfloat16_fallbacks"]))
    nfc.write(args.ops_out, opc.FORMAT, meta, cases)

    # ---- optim
    cases, checks = optim_cases(args.seed, check)
    meta = nfc.env_meta(f"{gen} (optim part; helpers of torch_optim_cases.py)", args.seed, sys.argv)
    meta.update({
        "grad_magnitude_per_step": optc.GRAD_MAGNITUDE,
        "notes": [
            "bfloat16: every value is the double equal to a bfloat16 value (8 significant bits)",
            "params w0 [3,4], b0 [4], w1 [2,3,2], frozen [5] (grad always None), sometimes [2,2] (grad None at "
            "step 2), as in optim_standard.json; inputs drawn by torch_optim_cases.make_inputs, keyed by seed, "
            "optimizer and variant",
            "torch_path fused: fused=True; torch's fused CPU kernels take bfloat16 for SGD, Adam and AdamW "
            "(fused_bf16_cpu): load bfloat16, compute in float32, store bfloat16 once per step",
            "Adam/AdamW state 'step' is a float32 0-d tensor in torch, written here as a number",
            f"tolerance {json.dumps(OPTIM_TOL)}: |got - want| <= atol + rtol*|want|",
        ],
    })
    meta.update(checks)
    if check:
        print("optim fused-check:", json.dumps(checks["fused_check"]))
        print("optim impl-check:", json.dumps({k: v for k, v in checks["impl_check"].items() if k != "runs"}))
    nfc.write(args.optim_out, optc.FORMAT, meta, cases)

    # ---- clip
    cases, checks = clip_cases(args.seed, check)
    meta = nfc.env_meta(gen + " (clip part)", args.seed, sys.argv)
    meta.update({
        "tolerance": CLIP_TOL,
        "notes": [
            CONVENTION,
            "bfloat16: every value is the double equal to a bfloat16 value (8 significant bits)",
            "grads drawn from N(0, 1) with Python's random (keyed by seed and variant), times 300 in large_values "
            "and 20000 in float16_overflow, rounded once to each dtype; nan_*/inf_* put a NaN/+inf in g0[4]",
            "torch multiplies every grad by the clamped coefficient, also when it is 1 (unclipped_bits)",
            "total_norm is a 0-d tensor in the promoted dtype of the grads (float32 for float32+float16 and for "
            "float16+bfloat16); with no grad at all torch returns tensor(0.), float32, whatever the params' dtype",
            "the coefficient is reciprocal(total_norm + 1e-6) * max_norm computed in total_norm's dtype: in "
            "float16 all-zero grads give reciprocal(1e-6) = inf, and with max_norm 0 inf * 0 = NaN "
            "(zeros_max_norm0/float16); a float16 total norm over 65504 is inf and zeroes the grads "
            "(float16_overflow/float16)",
            "the inf norm of a 0-element grad raises in torch, with error_if_nonfinite false too "
            "(norminf_empty_error); the other inf-norm variants have no 0-element grad",
            "tolerance per case: the dtype's entry of 'tolerance' (a mixed case: its loosest dtype's)",
        ],
    })
    meta.update(checks)
    if check:
        print("clip paths-check:", json.dumps({k: v for k, v in checks["paths_check"].items()}))
        print("clip reference-check:", json.dumps(checks["reference_check"]))
        print("clip formula-check:", json.dumps(checks["formula_check"]))
        for k in ("unclipped_bits", "error_bits", "clip_value_check"):
            print(f"clip {k}:", json.dumps(checks[k]))
    nfc.write(args.clip_out, CLIP_FORMAT, meta, cases)


if __name__ == "__main__":
    main()
