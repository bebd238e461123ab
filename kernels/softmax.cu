// Softmax, log-softmax and cross-entropy over the last dim: one fused kernel per
// direction, one block per row (grid-stride over rows). Rows are max-subtracted with an
// online (max, sum of exponentials) pair, so a row is read twice in the forward pass:
// once for its statistics and once to write the output.
//
// Row r, column j of an input is at p[offset(rl, r) + j * cs] (`rl`: the layout of the
// leading dims, `cs`: the stride of the last dim). Outputs are dense.
#include "common.cuh"

// Running max and sum of exp(x - max) of a set of values, with PyTorch's non-finite
// results: a NaN anywhere makes both NaN, and a +inf makes the sum NaN (its term is
// exp(inf - inf)), so that every output of such a row is NaN, as torch's two-pass
// kernels give. The combine is order-independent for these, whatever the block size.
template <typename C> struct MaxSum {
    C m, s;
};

// The pair of one value.
template <typename C> __device__ __forceinline__ MaxSum<C> gs_max_sum_of(C v) {
    return MaxSum<C>{v, v == -gs_neg_inf<C>() ? v - v : (C)1};
}

template <typename C> __device__ __forceinline__ MaxSum<C> gs_shfl_xor(MaxSum<C> v, int o) {
    return MaxSum<C>{gs_shfl_xor(v.m, o), gs_shfl_xor(v.s, o)};
}

struct MaxSumOp {
    template <typename C> __device__ __forceinline__ MaxSum<C> operator()(MaxSum<C> a, MaxSum<C> b) const {
        if (gs_isnan(a.m) || gs_isnan(b.m)) return MaxSum<C>{a.m + b.m, a.s + b.s};  // NaN
        if (a.m < b.m) {
            MaxSum<C> t = a;
            a = b;
            b = t;
        }
        if (b.m == gs_neg_inf<C>()) return a;  // b is empty (or only -inf): nothing to add
        return MaxSum<C>{a.m, a.s + b.s * gs_exp(b.m - a.m)};
    }
};

// Max and sum of exp(x - max) of one row, reduced over the block.
template <typename T, typename C = typename Compute<T>::type>
__device__ MaxSum<C> row_max_sum(const T* row, u64 cs, u64 d, MaxSum<C>* scratch) {
    const MaxSum<C> empty = {gs_neg_inf<C>(), (C)0};
    MaxSum<C> acc = empty;
    GS_BLOCK_LOOP(j, d) { acc = MaxSumOp()(acc, gs_max_sum_of<C>(gs_load(row, j * cs))); }
    return gs_block_reduce(acc, MaxSumOp(), empty, scratch);
}

// y = softmax(x) (or log_softmax) over rows of length d.
template <typename T>
__device__ void softmax_fwd(const T* x, const GsLayout& rl, u64 cs, T* y, u64 rows, u64 d, int log_softmax) {
    typedef typename Compute<T>::type C;
    __shared__ MaxSum<C> scratch[32];
    GS_ROW_LOOP(r, rows) {
        const T* row = x + gs_offset(rl, r);
        const MaxSum<C> st = row_max_sum(row, cs, d, scratch);
        T* out = y + r * d;
        if (log_softmax) {
            const C shift = st.m + gs_log(st.s);
            GS_BLOCK_LOOP(j, d) { gs_store(out, j, gs_load(row, j * cs) - shift); }
        } else {
            const C inv = (C)1 / st.s;
            GS_BLOCK_LOOP(j, d) { gs_store(out, j, gs_exp(gs_load(row, j * cs) - st.m) * inv); }
        }
    }
}

// dx from the forward output y and its gradient dy:
// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
template <typename T>
__device__ void softmax_bwd(const T* y, const GsLayout& yl, u64 ys, const T* dy, const GsLayout& dl, u64 ds,
                            T* dx, u64 rows, u64 d, int log_softmax) {
    typedef typename Compute<T>::type C;
    __shared__ C scratch[32];
    GS_ROW_LOOP(r, rows) {
        const T* yr = y + gs_offset(yl, r);
        const T* dr = dy + gs_offset(dl, r);
        C acc = 0;
        GS_BLOCK_LOOP(j, d) {
            const C g = gs_load(dr, j * ds);
            acc += log_softmax ? g : g * gs_load(yr, j * ys);
        }
        const C dot = gs_block_sum(acc, scratch);
        T* out = dx + r * d;
        GS_BLOCK_LOOP(j, d) {
            const C g = gs_load(dr, j * ds), v = gs_load(yr, j * ys);
            gs_store(out, j, log_softmax ? g - gs_exp(v) * dot : v * (g - dot));
        }
    }
}

extern "C" __global__ void softmax_fwd_f16(const __half* x, GsLayout rl, u64 cs, __half* y, u64 rows, u64 d, int log_softmax) { softmax_fwd(x, rl, cs, y, rows, d, log_softmax); }
extern "C" __global__ void softmax_fwd_bf16(const __nv_bfloat16* x, GsLayout rl, u64 cs, __nv_bfloat16* y, u64 rows, u64 d, int log_softmax) { softmax_fwd(x, rl, cs, y, rows, d, log_softmax); }
extern "C" __global__ void softmax_fwd_f32(const float* x, GsLayout rl, u64 cs, float* y, u64 rows, u64 d, int log_softmax) { softmax_fwd(x, rl, cs, y, rows, d, log_softmax); }
extern "C" __global__ void softmax_fwd_f64(const double* x, GsLayout rl, u64 cs, double* y, u64 rows, u64 d, int log_softmax) { softmax_fwd(x, rl, cs, y, rows, d, log_softmax); }

extern "C" __global__ void softmax_bwd_f16(const __half* y, GsLayout yl, u64 ys, const __half* dy, GsLayout dl, u64 ds, __half* dx, u64 rows, u64 d, int log_softmax) { softmax_bwd(y, yl, ys, dy, dl, ds, dx, rows, d, log_softmax); }
extern "C" __global__ void softmax_bwd_bf16(const __nv_bfloat16* y, GsLayout yl, u64 ys, const __nv_bfloat16* dy, GsLayout dl, u64 ds, __nv_bfloat16* dx, u64 rows, u64 d, int log_softmax) { softmax_bwd(y, yl, ys, dy, dl, ds, dx, rows, d, log_softmax); }
extern "C" __global__ void softmax_bwd_f32(const float* y, GsLayout yl, u64 ys, const float* dy, GsLayout dl, u64 ds, float* dx, u64 rows, u64 d, int log_softmax) { softmax_bwd(y, yl, ys, dy, dl, ds, dx, rows, d, log_softmax); }
extern "C" __global__ void softmax_bwd_f64(const double* y, GsLayout yl, u64 ys, const double* dy, GsLayout dl, u64 ds, double* dx, u64 rows, u64 d, int log_softmax) { softmax_bwd(y, yl, ys, dy, dl, ds, dx, rows, d, log_softmax); }

// ---- cross-entropy with class indices --------------------------------------------

// Mirrors `Reduction` (src/backend/dispatch.rs).
enum ReductionCode { R_NONE = 0, R_MEAN = 1, R_SUM = 2 };

// Shape and options of one cross-entropy call, mirrored by `CeParams` in Rust
// (src/backend/gpu/ops/softmax.rs). Logit (r, c) is at logits[r * ls_row + c * ls_col];
// target r at target[r * ts]; lse r at lse[r * lse_s]; the loss gradient of row r at
// grad[r * gs] (gs = 0 for a reduced loss).
struct CeParams {
    u64 rows, classes;
    u64 ls_row, ls_col, ts, lse_s, gs;
    i64 ignore_index;
    double smoothing;
    int reduction;
};

// Scratch of the forward pass, zeroed by the host before the launch: the number of
// blocks done.
struct CeScratch {
    unsigned int blocks_done;
    unsigned int pad;
};

template <typename C> struct MaxSumX {
    MaxSum<C> ms;
    C sum_x;
};
template <typename C> __device__ __forceinline__ MaxSumX<C> gs_shfl_xor(MaxSumX<C> v, int o) {
    return MaxSumX<C>{gs_shfl_xor(v.ms, o), gs_shfl_xor(v.sum_x, o)};
}
struct MaxSumXOp {
    template <typename C> __device__ __forceinline__ MaxSumX<C> operator()(MaxSumX<C> a, MaxSumX<C> b) const {
        return MaxSumX<C>{MaxSumOp()(a.ms, b.ms), a.sum_x + b.sum_x};
    }
};

// Loss per row (`loss` has `rows` elements for R_NONE, else one) and each row's
// log-sum-exp. loss_r = (1 - eps) * (lse - x_t) + eps * (lse - mean_c x_c); ignored rows
// give 0 and do not count for the mean. A target outside [0, classes) gives NaN and is
// reported in the device's status record (the host reads it at its next
// synchronisation). For reduced losses every block writes its partial
// (sum, count) to `partials`; the last block to finish adds them in block order (a
// deterministic result without a second launch).
template <typename T>
__device__ void cross_entropy_fwd(const T* logits, const i64* target, CeParams p, T* loss,
                                  typename Compute<T>::type* lse, typename Compute<T>::type* partials,
                                  CeScratch* scratch, GsStatus* status, u64 seq) {
    typedef typename Compute<T>::type C;
    __shared__ MaxSumX<C> red[32];
    __shared__ C red_c[32];
    __shared__ bool last;
    const C eps = (C)p.smoothing;
    C block_loss = 0, block_count = 0;  // meaningful in thread 0
    GS_ROW_LOOP(r, p.rows) {
        const T* row = logits + r * p.ls_row;
        const MaxSumX<C> empty = {{gs_neg_inf<C>(), (C)0}, (C)0};
        MaxSumX<C> acc = empty;
        GS_BLOCK_LOOP(c, p.classes) {
            const C v = gs_load(row, c * p.ls_col);
            acc = MaxSumXOp()(acc, MaxSumX<C>{gs_max_sum_of<C>(v), v});
        }
        acc = gs_block_reduce(acc, MaxSumXOp(), empty, red);
        if (threadIdx.x == 0) {
            const C row_lse = acc.ms.m + gs_log(acc.ms.s);
            lse[r * p.lse_s] = row_lse;
            const i64 t = target[r * p.ts];
            C l = 0;
            if (t != p.ignore_index) {
                if (t < 0 || (u64)t >= p.classes) {
                    gs_report(status, GS_ERR_TARGET, seq, r, t, (i64)p.classes, p.ignore_index);
                    l = gs_neg_inf<C>() - gs_neg_inf<C>();  // NaN
                } else {
                    const C nll = row_lse - gs_load(row, (u64)t * p.ls_col);
                    const C smooth = row_lse - acc.sum_x / (C)p.classes;
                    // Without smoothing the mean term is left out, not multiplied by 0:
                    // an infinite logit off the target must not turn the loss into NaN.
                    l = eps == (C)0 ? nll : ((C)1 - eps) * nll + eps * smooth;
                }
                block_count += (C)1;
            }
            if (p.reduction == R_NONE) gs_store(loss, r, l);
            block_loss += l;
        }
    }
    if (p.reduction == R_NONE) return;
    if (threadIdx.x == 0) {
        partials[2 * blockIdx.x] = block_loss;
        partials[2 * blockIdx.x + 1] = block_count;
        __threadfence();  // the partials are visible before the ticket is taken
        last = atomicAdd(&scratch->blocks_done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile C* vp = partials;
    C sum = 0, count = 0;
    GS_BLOCK_LOOP(b, gridDim.x) {
        sum += vp[2 * b];
        count += vp[2 * b + 1];
    }
    sum = gs_block_sum(sum, red_c);
    count = gs_block_sum(count, red_c);
    if (threadIdx.x == 0) gs_store(loss, 0, p.reduction == R_MEAN ? sum / count : sum);
}

// dlogits = g_r * (softmax(x_r) - (1 - eps) * onehot(t_r) - eps / classes), with g_r the
// loss gradient of row r (divided by the number of non-ignored rows for R_MEAN, which
// every block counts itself). An ignored row has g_r = 0 and no target: 0 where its
// softmax is finite and NaN where it is not, as torch's log_softmax backward gives it.
// Out-of-range targets (an error reported by the forward) give 0.
template <typename T>
__device__ void cross_entropy_bwd(const T* logits, const i64* target, const typename Compute<T>::type* lse,
                                  const T* grad, CeParams p, T* dx) {
    typedef typename Compute<T>::type C;
    __shared__ C red[32];
    C scale = 1;
    if (p.reduction == R_MEAN) {
        C n = 0;
        GS_BLOCK_LOOP(r, p.rows) { n += target[r * p.ts] != p.ignore_index ? (C)1 : (C)0; }
        scale = (C)1 / gs_block_sum(n, red);
    }
    const C eps = (C)p.smoothing, uniform = eps / (C)p.classes;
    GS_ROW_LOOP(r, p.rows) {
        const T* row = logits + r * p.ls_row;
        T* out = dx + r * p.classes;
        const i64 t = target[r * p.ts];
        const bool ignored = t == p.ignore_index;
        if (!ignored && (t < 0 || (u64)t >= p.classes)) {
            GS_BLOCK_LOOP(c, p.classes) { gs_store(out, c, (C)0); }
            continue;
        }
        const C g = ignored ? (C)0 : gs_load(grad, r * p.gs) * scale;
        const C row_lse = lse[r * p.lse_s];
        GS_BLOCK_LOOP(c, p.classes) {
            const C prob = gs_exp(gs_load(row, c * p.ls_col) - row_lse);
            const C target_w = (i64)c == t ? (C)1 - eps : (C)0;
            gs_store(out, c, g * (prob - target_w - uniform));
        }
    }
}

extern "C" __global__ void cross_entropy_fwd_f16(const __half* logits, const i64* target, CeParams p, __half* loss, float* lse, float* partials, CeScratch* scratch, GsStatus* status, u64 seq) { cross_entropy_fwd(logits, target, p, loss, lse, partials, scratch, status, seq); }
extern "C" __global__ void cross_entropy_fwd_bf16(const __nv_bfloat16* logits, const i64* target, CeParams p, __nv_bfloat16* loss, float* lse, float* partials, CeScratch* scratch, GsStatus* status, u64 seq) { cross_entropy_fwd(logits, target, p, loss, lse, partials, scratch, status, seq); }
extern "C" __global__ void cross_entropy_fwd_f32(const float* logits, const i64* target, CeParams p, float* loss, float* lse, float* partials, CeScratch* scratch, GsStatus* status, u64 seq) { cross_entropy_fwd(logits, target, p, loss, lse, partials, scratch, status, seq); }
extern "C" __global__ void cross_entropy_fwd_f64(const double* logits, const i64* target, CeParams p, double* loss, double* lse, double* partials, CeScratch* scratch, GsStatus* status, u64 seq) { cross_entropy_fwd(logits, target, p, loss, lse, partials, scratch, status, seq); }

extern "C" __global__ void cross_entropy_bwd_f16(const __half* logits, const i64* target, const float* lse, const __half* grad, CeParams p, __half* dx) { cross_entropy_bwd(logits, target, lse, grad, p, dx); }
extern "C" __global__ void cross_entropy_bwd_bf16(const __nv_bfloat16* logits, const i64* target, const float* lse, const __nv_bfloat16* grad, CeParams p, __nv_bfloat16* dx) { cross_entropy_bwd(logits, target, lse, grad, p, dx); }
extern "C" __global__ void cross_entropy_bwd_f32(const float* logits, const i64* target, const float* lse, const float* grad, CeParams p, float* dx) { cross_entropy_bwd(logits, target, lse, grad, p, dx); }
extern "C" __global__ void cross_entropy_bwd_f64(const double* logits, const i64* target, const double* lse, const double* grad, CeParams p, double* dx) { cross_entropy_bwd(logits, target, lse, grad, p, dx); }
