// Optimizer steps over a device-side table of tensors (kernels/multi_tensor.cuh).
//
// One kernel per dtype does every form: `phase == OPT_ALL` is the fused update (the whole
// step in registers, one launch per (device, dtype) group, 16-byte vector access where
// every pointer is aligned); the other phases are the elementary ops of the foreach form
// (one launch each, through a compute-type scratch `tmp`), like torch's _foreach_* ops.
// Bias corrections are computed in double from the per-tensor f32 step count on the
// device, once per chunk. With `found_inf` set to nonzero nothing at all is written.
#include "multi_tensor.cuh"

// Mirrored by `OptArgs` in src/optim/multi_tensor.rs. With `lr_ptr` set the learning
// rate is read from that device double (capturable: a replayed graph sees the lr a
// scheduler wrote since), else `lr` is used.
struct OptArgs {
    double lr, momentum, dampening, weight_decay, beta1, beta2, eps;
    int kind;      // 0: SGD, 1: Adam/AdamW
    int phase;     // OPT_ALL or one elementary op
    int nesterov, maximize, amsgrad, decoupled;
    int has_momentum;
    int pad;
    u64 lr_ptr;
};

// Bit of a `done` counter: the tensor has completed a step since its table was made
// (so an MT_FIRST momentum buffer is no longer new). The low bits count chunks.
#define OPT_STARTED 0x80000000u

enum {
    OPT_ALL = 0, OPT_LOAD, OPT_NEG, OPT_WD, OPT_DECAY, OPT_MOM, OPT_NEST, OPT_COPYB, OPT_SGDP,
    OPT_M, OPT_V, OPT_VMAX, OPT_DEN, OPT_ADAMP, OPT_STEP
};

template <typename C> struct Scal {
    C neg_lr, mom, omd, wd, decay, lerp_w, beta2, omb2, eps, neg_ss, bc2s;
};

// Scalars of one tensor at step t (t already counts this update).
template <typename C>
__device__ __forceinline__ Scal<C> opt_scalars(const OptArgs& a, double t) {
    Scal<C> s;
    s.neg_lr = (C)(-a.lr);
    s.mom = (C)a.momentum;
    s.omd = (C)(1.0 - a.dampening);
    s.wd = (C)a.weight_decay;
    s.decay = (C)(1.0 - a.lr * a.weight_decay);
    s.lerp_w = (C)(1.0 - a.beta1);
    s.beta2 = (C)a.beta2;
    s.omb2 = (C)(1.0 - a.beta2);
    s.eps = (C)a.eps;
    double bc1 = 1.0 - pow(a.beta1, t);
    double bc2 = 1.0 - pow(a.beta2, t);
    s.neg_ss = (C)(-(a.lr / bc1));
    s.bc2s = (C)sqrt(bc2);
    return s;
}

template <typename C> __device__ __forceinline__ C opt_lerp(C a, C b, C w) {
    return w < (C)0.5 ? a + w * (b - a) : b - (b - a) * ((C)1 - w);
}

template <typename C> __device__ __forceinline__ C opt_max(C a, C b) {
    return (a != a || a > b) ? a : b;
}

// The whole update of one element, in registers.
template <typename C>
__device__ __forceinline__ void opt_elem(const OptArgs& a, const Scal<C>& s, bool first, C& p, C g, C& b0, C& b1, C& b2) {
    if (a.maximize) g = -g;
    if (a.kind == 0) {
        if (s.wd != (C)0) g = g + s.wd * p;
        if (a.has_momentum) {
            b0 = first ? g : b0 * s.mom + s.omd * g;
            g = a.nesterov ? g + s.mom * b0 : b0;
        }
        p = p + s.neg_lr * g;
    } else {
        if (s.wd != (C)0) {
            if (a.decoupled) p = p * s.decay; else g = g + s.wd * p;
        }
        b0 = opt_lerp(b0, g, s.lerp_w);
        b1 = b1 * s.beta2 + s.omb2 * g * g;
        C second = b1;
        if (a.amsgrad) { b2 = opt_max(b2, b1); second = b2; }
        C den = sqrt(second) / s.bc2s + s.eps;
        p = p + s.neg_ss * (b0 / den);
    }
}

// A state buffer (momentum, moments) is f32 beside f32 master weights, else of the
// parameter's type.
template <typename T, typename C>
__device__ __forceinline__ C st_load(const MtTensor& e, u64 b, u64 i) {
    return e.master ? (C)((const float*)b)[i] : (C)gs_load((const T*)b, i);
}
template <typename T, typename C>
__device__ __forceinline__ void st_store(const MtTensor& e, u64 b, u64 i, C v) {
    if (e.master) ((float*)b)[i] = (float)v;
    else gs_store((T*)b, i, v);
}
template <typename T, typename C, int N>
__device__ __forceinline__ void st_load_n(const MtTensor& e, u64 b, u64 i, int n, bool v, C* x) {
    if (e.master) { for (int k = 0; k < n; ++k) x[k] = (C)((const float*)b)[i + k]; }
    else mt_load<T, C, N>((const T*)b, i, n, v, x);
}
template <typename T, typename C, int N>
__device__ __forceinline__ void st_store_n(const MtTensor& e, u64 b, u64 i, int n, bool v, const C* x) {
    if (e.master) { for (int k = 0; k < n; ++k) ((float*)b)[i + k] = (float)x[k]; }
    else mt_store<T, C, N>((T*)b, i, n, v, x);
}

// One elementary op of the foreach form on element i.
template <typename T, typename C>
__device__ __forceinline__ void opt_phase(const OptArgs& a, const Scal<C>& s, const MtTensor& e, u64 i, C inv_scale_div) {
    T* p = (T*)e.p;
    T* g = (T*)e.g;
    float* ms = (float*)e.master;
    // Scratch: tmp[i] the working gradient / denominator, tmp[n + i] the first moment or
    // momentum buffer, tmp[2n + i] the second moment, all in the compute type, so every
    // dtype follows the fused semantics (f16 rounds only what it stores).
    C* tmp = (C*)e.tmp;
    C* mom = tmp + e.numel;
    C* sec = tmp + 2 * e.numel;
    C pv = ms ? (C)ms[i] : (C)gs_load(p, i);
    C np = pv;
    switch (a.phase) {
    case OPT_LOAD: {
        C gv = (C)gs_load(g, i);
        if (inv_scale_div != (C)0) { gv = gv / inv_scale_div; gs_store(g, i, gv); }
        tmp[i] = gv;
        return;
    }
    case OPT_NEG: tmp[i] = -tmp[i]; return;
    case OPT_WD: tmp[i] = tmp[i] + s.wd * pv; return;
    case OPT_DECAY: np = pv * s.decay; break;
    case OPT_MOM: {
        C b = (e.flags & MT_FIRST) ? tmp[i] : st_load<T, C>(e, e.b0, i) * s.mom + s.omd * tmp[i];
        st_store<T, C>(e, e.b0, i, b);
        mom[i] = b;
        return;
    }
    case OPT_NEST: tmp[i] = tmp[i] + s.mom * mom[i]; return;
    case OPT_COPYB: tmp[i] = mom[i]; return;
    case OPT_SGDP: np = pv + s.neg_lr * tmp[i]; break;
    case OPT_M: mom[i] = opt_lerp(st_load<T, C>(e, e.b0, i), tmp[i], s.lerp_w); st_store<T, C>(e, e.b0, i, mom[i]); return;
    case OPT_V: sec[i] = st_load<T, C>(e, e.b1, i) * s.beta2 + s.omb2 * tmp[i] * tmp[i]; st_store<T, C>(e, e.b1, i, sec[i]); return;
    case OPT_VMAX: sec[i] = opt_max(st_load<T, C>(e, e.b2, i), sec[i]); st_store<T, C>(e, e.b2, i, sec[i]); return;
    case OPT_DEN: tmp[i] = sqrt(sec[i]) / s.bc2s + s.eps; return;
    case OPT_ADAMP: np = pv + s.neg_ss * (mom[i] / tmp[i]); break;
    default: return;
    }
    if (ms) ms[i] = (float)np;
    gs_store(p, i, np);
}

template <typename T>
__device__ void opt_step(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, OptArgs a,
                         const float* grad_scale, const float* found_inf, unsigned int* done) {
    typedef typename Compute<T>::type C;
    const int N = MtVec<T>::N;
    if (found_inf && *found_inf != 0.0f) return;
    if (a.lr_ptr) a.lr = *(const double*)a.lr_ptr;
    C scale = grad_scale ? (C)*grad_scale : (C)0;
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        unsigned int ti = mt_find(tab, count, c);
        const MtTensor& e = tab[ti];
        u64 local = c - e.chunk_start;
        if (a.phase == OPT_STEP) {
            if (local == 0 && threadIdx.x == 0 && e.step) *(float*)e.step += 1.0f;
            continue;
        }
        // The fused form advances the step itself (the last chunk done writes it); the
        // foreach form ran OPT_STEP first.
        float s0 = e.step ? *(const float*)e.step : 0.0f;
        double t = (double)(a.phase == OPT_ALL ? s0 + 1.0f : s0);
        Scal<C> s = opt_scalars<C>(a, t);
        u64 begin = local * MT_CHUNK;
        u64 end = begin + MT_CHUNK < e.numel ? begin + MT_CHUNK : e.numel;
        if (a.phase != OPT_ALL) {
            for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) opt_phase<T, C>(a, s, e, i, scale);
            continue;
        }
        // Read before any chunk of this step can finish (the last one sets the bit).
        bool first = (e.flags & MT_FIRST) != 0 && (done[ti] & OPT_STARTED) == 0;
        bool vec = mt_al(e.p) && mt_al(e.g) && mt_al(e.b0) && mt_al(e.b1) && mt_al(e.b2) && !e.master;
        T* p = (T*)e.p;
        T* g = (T*)e.g;
        float* ms = (float*)e.master;
        bool has0 = e.b0 != 0, has1 = e.b1 != 0, has2 = e.b2 != 0;
        for (u64 i = begin + (u64)threadIdx.x * N; i < end; i += (u64)blockDim.x * N) {
            int n = end - i < (u64)N ? (int)(end - i) : N;
            bool v = vec && n == N;
            C pv[N], gv[N], x0[N], x1[N], x2[N];
            for (int k = 0; k < N; ++k) { x0[k] = (C)0; x1[k] = (C)0; x2[k] = (C)0; }
            if (ms) { for (int k = 0; k < n; ++k) pv[k] = (C)ms[i + k]; }
            else mt_load<T, C, N>(p, i, n, v, pv);
            mt_load<T, C, N>(g, i, n, v, gv);
            if (grad_scale) {
                for (int k = 0; k < n; ++k) gv[k] = gv[k] / scale;
                mt_store<T, C, N>(g, i, n, v, gv);
            }
            if (has0) st_load_n<T, C, N>(e, e.b0, i, n, v, x0);
            if (has1) st_load_n<T, C, N>(e, e.b1, i, n, v, x1);
            if (has2) st_load_n<T, C, N>(e, e.b2, i, n, v, x2);
            for (int k = 0; k < n; ++k) opt_elem<C>(a, s, first, pv[k], gv[k], x0[k], x1[k], x2[k]);
            if (ms) { for (int k = 0; k < n; ++k) ms[i + k] = (float)pv[k]; }
            mt_store<T, C, N>(p, i, n, v, pv);
            if (has0) st_store_n<T, C, N>(e, e.b0, i, n, v, x0);
            if (has1) st_store_n<T, C, N>(e, e.b1, i, n, v, x1);
            if (has2) st_store_n<T, C, N>(e, e.b2, i, n, v, x2);
        }
        // Every thread of the block has read the step count and the started bit; the
        // last chunk of the tensor to finish advances the count and marks it started.
        __syncthreads();
        if (threadIdx.x == 0 && (e.step || (e.flags & MT_FIRST))) {
            __threadfence();
            unsigned int prev = atomicAdd(&done[ti], 1u);
            if ((prev & ~OPT_STARTED) + 1 == e.nchunks) {
                if (e.step) *(float*)e.step = s0 + 1.0f;
                done[ti] = OPT_STARTED;
            }
        }
    }
}

extern "C" __global__ void optim_step_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, OptArgs a, const float* grad_scale, const float* found_inf, unsigned int* done) { opt_step<float>(tab, count, c0, c1, a, grad_scale, found_inf, done); }
extern "C" __global__ void optim_step_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, OptArgs a, const float* grad_scale, const float* found_inf, unsigned int* done) { opt_step<__half>(tab, count, c0, c1, a, grad_scale, found_inf, done); }
extern "C" __global__ void optim_step_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, OptArgs a, const float* grad_scale, const float* found_inf, unsigned int* done) { opt_step<__nv_bfloat16>(tab, count, c0, c1, a, grad_scale, found_inf, done); }
extern "C" __global__ void optim_step_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, OptArgs a, const float* grad_scale, const float* found_inf, unsigned int* done) { opt_step<double>(tab, count, c0, c1, a, grad_scale, found_inf, done); }

// The scaler's update (`_amp_update_scale_`), on the device: after a step with found_inf
// the scale is multiplied by `backoff` and the growth tracker reset; otherwise the
// tracker counts up and the scale grows by `growth` every `interval` clean steps.
extern "C" __global__ void amp_update_scale(float* scale, float* tracker, const float* found_inf, float growth, float backoff, float interval) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (*found_inf != 0.0f) {
        *scale = *scale * backoff;
        *tracker = 0.0f;
    } else {
        float t = *tracker + 1.0f;
        if (t >= interval) {
            *scale = *scale * growth;
            t = 0.0f;
        }
        *tracker = t;
    }
}
