// Gradient clipping as multi-tensor kernels (`clip_grad_norm_`, `clip_grad_value_`) and
// the GradScaler's `unscale_`, mirrored by src/optim/clip.rs. No kernel here needs the
// host: the total norm and the clip coefficient stay on the device.
//
// clip_grad_norm_ is four launches per call: per dtype group, `clip_norm_partials` (one
// partial per chunk) and `clip_norm_tensors` (each tensor's norm, rounded to its dtype as
// torch's `_foreach_norm` returns it, folded into one value per group); once,
// `clip_norm_total` (the total norm in the output dtype and the coefficient); per group,
// `clip_mul` (grads times the coefficient).
#include "multi_tensor.cuh"

// Norm orders, mirrored by `NormKind` in src/optim/clip.rs.
enum { CLIP_P = 0, CLIP_L1 = 1, CLIP_L2 = 2, CLIP_INF = 3, CLIP_NEG_INF = 4, CLIP_L0 = 5 };

// The value one element (or one tensor's norm) `a = |x|` adds for order `kind`.
template <typename C> __device__ __forceinline__ C clip_term(C a, int kind, C p) {
    switch (kind) {
        case CLIP_L2: return a * a;
        case CLIP_L0: return a != (C)0 ? (C)1 : (C)0;
        case CLIP_P: return gs_pow(a, p);
        default: return a;
    }
}

// Combines two terms: a sum, or a NaN-sticky max (inf) / min (-inf).
template <typename C> __device__ __forceinline__ C clip_combine(C a, C b, int kind) {
    if (kind == CLIP_INF || kind == CLIP_NEG_INF) {
        if (gs_isnan(a)) return a;
        if (gs_isnan(b)) return b;
        return (kind == CLIP_INF) == (a > b) ? a : b;
    }
    return a + b;
}

// The value of an empty combination.
template <typename C> __device__ __forceinline__ C clip_identity(int kind) {
    return kind == CLIP_NEG_INF ? -gs_neg_inf<C>() : (C)0;
}

// The norm of a combination of terms.
template <typename C> __device__ __forceinline__ C clip_root(C s, int kind, C p) {
    switch (kind) {
        case CLIP_L2: return gs_sqrt(s);
        case CLIP_P: return gs_pow(s, (C)1 / p);
        default: return s;
    }
}

// `v` rounded to the element type T, as a compute value.
template <typename T, typename C> __device__ __forceinline__ C clip_round(C v) {
    T t;
    gs_store(&t, 0, v);
    return (C)gs_load(&t, 0);
}

template <typename C> struct ClipOp {
    int kind;
    __device__ __forceinline__ C operator()(C a, C b) const { return clip_combine(a, b, kind); }
};

// partials[c] = the combined terms of chunk c of the table (in the compute type).
template <typename T>
__device__ void clip_norm_partials(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, int kind,
                                   double p, double* partials) {
    typedef typename Compute<T>::type C;
    __shared__ C scratch[32];
    ClipOp<C> op = {kind};
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        unsigned int ti = mt_find(tab, count, c);
        const MtTensor& e = tab[ti];
        u64 begin, end;
        mt_chunk_range(e, c, begin, end);
        const T* g = (const T*)e.g;
        C acc = clip_identity<C>(kind);
        for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x)
            acc = op(acc, clip_term(gs_abs((C)gs_load(g, i)), kind, (C)p));
        acc = gs_block_reduce(acc, op, clip_identity<C>(kind), scratch);
        if (threadIdx.x == 0) partials[c] = (double)acc;
    }
}

// acc[0] = the combined terms of the table's tensor norms: each tensor's chunk partials
// combined in order, its norm rounded to T, that norm's term. One block.
template <typename T>
__device__ void clip_norm_tensors(const MtTensor* tab, unsigned int count, int kind, double p,
                                  const double* partials, double* acc) {
    typedef typename Compute<T>::type C;
    __shared__ double scratch[32];
    ClipOp<double> op = {kind};
    double total = clip_identity<double>(kind);
    for (u64 t = threadIdx.x; t < count; t += blockDim.x) {
        const MtTensor& e = tab[t];
        double s = clip_identity<double>(kind);
        for (u64 k = 0; k < e.nchunks; ++k) s = op(s, partials[e.chunk_start + k]);
        C norm = clip_round<T, C>(clip_root((C)s, kind, (C)p));
        total = op(total, (double)clip_term(norm, kind, (C)p));
    }
    total = gs_block_reduce(total, op, clip_identity<double>(kind), scratch);
    if (threadIdx.x == 0) acc[0] = total;
}

// The total norm from the groups' values, rounded to O and stored in `total`, and the
// clip coefficient as torch computes it in O: `max_norm / (total + 1e-6)` is
// `reciprocal(total + 1e-6) * max_norm`, each step rounded to O, then clamped to at most
// 1 (a NaN stays NaN). One thread.
template <typename O>
__device__ void clip_norm_total(const double* groups, unsigned int ngroups, int kind, double p,
                                double max_norm, O* total, double* coef) {
    typedef typename Compute<O>::type C;
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = clip_identity<double>(kind);
    for (unsigned int g = 0; g < ngroups; ++g) s = clip_combine(s, groups[g], kind);
    C t = clip_round<O, C>(clip_root((C)s, kind, (C)p));
    gs_store(total, 0, t);
    C d = clip_round<O, C>(t + (C)1e-6);
    C r = clip_round<O, C>((C)1 / d);
    C q = clip_round<O, C>(r * (C)max_norm);
    *coef = (double)(q > (C)1 ? (C)1 : q);
}

// Every grad of the table times *coef, computed in the compute type.
template <typename T>
__device__ void clip_mul(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const double* coef) {
    typedef typename Compute<T>::type C;
    C f = (C)*coef;
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        const MtTensor& e = tab[mt_find(tab, count, c)];
        u64 begin, end;
        mt_chunk_range(e, c, begin, end);
        T* g = (T*)e.g;
        for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) gs_store(g, i, (C)gs_load(g, i) * f);
    }
}

// clip_grad_value_: every grad clamped to [lo, hi] (torch's clamp_min_ then clamp_max_;
// NaN stays NaN).
template <typename T>
__device__ void clip_value(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, double lo, double hi) {
    typedef typename Compute<T>::type C;
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        const MtTensor& e = tab[mt_find(tab, count, c)];
        u64 begin, end;
        mt_chunk_range(e, c, begin, end);
        T* g = (T*)e.g;
        for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
            C v = (C)gs_load(g, i);
            if (!gs_isnan(v)) {
                v = v < (C)lo ? (C)lo : v;
                v = v > (C)hi ? (C)hi : v;
            }
            gs_store(g, i, v);
        }
    }
}

// The GradScaler's unscale_ (torch's `_amp_foreach_non_finite_check_and_unscale_`): every
// grad times `1 / scale` (computed in double, rounded to f32), and *found_inf = 1 when a
// grad is infinite or NaN.
template <typename T>
__device__ void amp_unscale(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const float* scale,
                            float* found_inf) {
    typedef typename Compute<T>::type C;
    C inv = (C)(float)(1.0 / (double)*scale);
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        const MtTensor& e = tab[mt_find(tab, count, c)];
        u64 begin, end;
        mt_chunk_range(e, c, begin, end);
        T* g = (T*)e.g;
        bool bad = false;
        for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
            C v = (C)gs_load(g, i);
            bad |= !(v - v == (C)0);
            gs_store(g, i, v * inv);
        }
        if (bad) *found_inf = 1.0f;
    }
}

extern "C" __global__ void clip_norm_partials_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, int kind, double p, double* partials) { clip_norm_partials<__half>(tab, count, c0, c1, kind, p, partials); }
extern "C" __global__ void clip_norm_partials_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, int kind, double p, double* partials) { clip_norm_partials<__nv_bfloat16>(tab, count, c0, c1, kind, p, partials); }
extern "C" __global__ void clip_norm_tensors_f16(const MtTensor* tab, unsigned int count, int kind, double p, const double* partials, double* acc) { clip_norm_tensors<__half>(tab, count, kind, p, partials, acc); }
extern "C" __global__ void clip_norm_tensors_bf16(const MtTensor* tab, unsigned int count, int kind, double p, const double* partials, double* acc) { clip_norm_tensors<__nv_bfloat16>(tab, count, kind, p, partials, acc); }
extern "C" __global__ void clip_norm_total_f16(const double* groups, unsigned int ngroups, int kind, double p, double max_norm, __half* total, double* coef) { clip_norm_total<__half>(groups, ngroups, kind, p, max_norm, total, coef); }
extern "C" __global__ void clip_norm_total_bf16(const double* groups, unsigned int ngroups, int kind, double p, double max_norm, __nv_bfloat16* total, double* coef) { clip_norm_total<__nv_bfloat16>(groups, ngroups, kind, p, max_norm, total, coef); }
extern "C" __global__ void clip_mul_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const double* coef) { clip_mul<__half>(tab, count, c0, c1, coef); }
extern "C" __global__ void clip_mul_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const double* coef) { clip_mul<__nv_bfloat16>(tab, count, c0, c1, coef); }
extern "C" __global__ void clip_value_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, double lo, double hi) { clip_value<__half>(tab, count, c0, c1, lo, hi); }
extern "C" __global__ void clip_value_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, double lo, double hi) { clip_value<__nv_bfloat16>(tab, count, c0, c1, lo, hi); }
extern "C" __global__ void amp_unscale_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const float* scale, float* found_inf) { amp_unscale<__half>(tab, count, c0, c1, scale, found_inf); }
extern "C" __global__ void amp_unscale_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const float* scale, float* found_inf) { amp_unscale<__nv_bfloat16>(tab, count, c0, c1, scale, found_inf); }

extern "C" __global__ void clip_norm_partials_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, int kind, double p, double* partials) { clip_norm_partials<float>(tab, count, c0, c1, kind, p, partials); }
extern "C" __global__ void clip_norm_tensors_f32(const MtTensor* tab, unsigned int count, int kind, double p, const double* partials, double* acc) { clip_norm_tensors<float>(tab, count, kind, p, partials, acc); }
extern "C" __global__ void clip_norm_total_f32(const double* groups, unsigned int ngroups, int kind, double p, double max_norm, float* total, double* coef) { clip_norm_total<float>(groups, ngroups, kind, p, max_norm, total, coef); }
extern "C" __global__ void clip_mul_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const double* coef) { clip_mul<float>(tab, count, c0, c1, coef); }
extern "C" __global__ void clip_value_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, double lo, double hi) { clip_value<float>(tab, count, c0, c1, lo, hi); }
extern "C" __global__ void amp_unscale_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const float* scale, float* found_inf) { amp_unscale<float>(tab, count, c0, c1, scale, found_inf); }

extern "C" __global__ void clip_norm_partials_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, int kind, double p, double* partials) { clip_norm_partials<double>(tab, count, c0, c1, kind, p, partials); }
extern "C" __global__ void clip_norm_tensors_f64(const MtTensor* tab, unsigned int count, int kind, double p, const double* partials, double* acc) { clip_norm_tensors<double>(tab, count, kind, p, partials, acc); }
extern "C" __global__ void clip_norm_total_f64(const double* groups, unsigned int ngroups, int kind, double p, double max_norm, double* total, double* coef) { clip_norm_total<double>(groups, ngroups, kind, p, max_norm, total, coef); }
extern "C" __global__ void clip_mul_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const double* coef) { clip_mul<double>(tab, count, c0, c1, coef); }
extern "C" __global__ void clip_value_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, double lo, double hi) { clip_value<double>(tab, count, c0, c1, lo, hi); }
extern "C" __global__ void amp_unscale_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, const float* scale, float* found_inf) { amp_unscale<double>(tab, count, c0, c1, scale, found_inf); }
