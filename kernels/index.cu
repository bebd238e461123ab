// Index kernels: embedding lookup and its gradient, argmax along the last dim.
//
// Index validation: a lookup index outside [0, V) is never dereferenced. The forward
// writes NaN for it and reports it in the device's status record (read by the host at
// its next synchronisation). The backward skips such indices.
#include "common.cuh"

// out[i, j] = weight[idx[i], j] for the n_idx indices (a strided view, layout `il`) and
// d columns. Weight row v, column j is at weight[v * w_row + j * w_col].
template <typename T>
__device__ void embedding_fwd(const T* weight, u64 w_row, u64 w_col, const i64* idx, const GsLayout& il, u64 n_idx,
                              u64 v, u64 d, T* out, GsStatus* status, u64 seq) {
    typedef typename Compute<T>::type C;
    GS_GRID_LOOP(e, n_idx * d) {
        const u64 i = e / d, j = e % d;
        const i64 t = idx[gs_offset(il, i)];
        if (t < 0 || (u64)t >= v) {
            if (j == 0) gs_report(status, GS_ERR_INDEX, seq, i, t, (i64)v, 0);
            gs_store(out, e, gs_neg_inf<C>() - gs_neg_inf<C>());  // NaN
        } else {
            gs_store(out, e, gs_load(weight, (u64)t * w_row + j * w_col));
        }
    }
}

// acc[idx[i], j] += grad[i, j] with atomics; `acc` is a zeroed dense [v, d] buffer in the
// compute type (the f16 result is cast from it afterwards). `gl` is the layout of grad
// viewed as n_idx * d elements.
template <typename T>
__device__ void embedding_bwd(const T* grad, const GsLayout& gl, const i64* idx, const GsLayout& il, u64 n_idx,
                              u64 v, u64 d, typename Compute<T>::type* acc) {
    GS_GRID_LOOP(e, n_idx * d) {
        const u64 i = e / d, j = e % d;
        const i64 t = idx[gs_offset(il, i)];
        if (t >= 0 && (u64)t < v) atomicAdd(acc + (u64)t * d + j, gs_load(grad, gs_offset(gl, e)));
    }
}

extern "C" __global__ void embedding_fwd_f16(const __half* weight, u64 w_row, u64 w_col, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, __half* out, GsStatus* status, u64 seq) { embedding_fwd(weight, w_row, w_col, idx, il, n_idx, v, d, out, status, seq); }
extern "C" __global__ void embedding_fwd_bf16(const __nv_bfloat16* weight, u64 w_row, u64 w_col, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, __nv_bfloat16* out, GsStatus* status, u64 seq) { embedding_fwd(weight, w_row, w_col, idx, il, n_idx, v, d, out, status, seq); }
extern "C" __global__ void embedding_fwd_f32(const float* weight, u64 w_row, u64 w_col, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, float* out, GsStatus* status, u64 seq) { embedding_fwd(weight, w_row, w_col, idx, il, n_idx, v, d, out, status, seq); }
extern "C" __global__ void embedding_fwd_f64(const double* weight, u64 w_row, u64 w_col, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, double* out, GsStatus* status, u64 seq) { embedding_fwd(weight, w_row, w_col, idx, il, n_idx, v, d, out, status, seq); }

extern "C" __global__ void embedding_bwd_f16(const __half* grad, GsLayout gl, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, float* acc) { embedding_bwd(grad, gl, idx, il, n_idx, v, d, acc); }
extern "C" __global__ void embedding_bwd_bf16(const __nv_bfloat16* grad, GsLayout gl, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, float* acc) { embedding_bwd(grad, gl, idx, il, n_idx, v, d, acc); }
extern "C" __global__ void embedding_bwd_f32(const float* grad, GsLayout gl, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, float* acc) { embedding_bwd(grad, gl, idx, il, n_idx, v, d, acc); }
extern "C" __global__ void embedding_bwd_f64(const double* grad, GsLayout gl, const i64* idx, GsLayout il, u64 n_idx, u64 v, u64 d, double* acc) { embedding_bwd(grad, gl, idx, il, n_idx, v, d, acc); }

// ---- argmax ----------------------------------------------------------------------

// A candidate maximum: value and column.
template <typename C> struct ValIdx {
    C v;
    i64 i;
};
template <typename C> __device__ __forceinline__ ValIdx<C> gs_shfl_xor(ValIdx<C> a, int o) {
    return ValIdx<C>{gs_shfl_xor(a.v, o), gs_shfl_xor(a.i, o)};
}

// The larger candidate; NaN counts as the largest (as torch); ties go to the lower index.
struct ArgMaxOp {
    template <typename C> __device__ __forceinline__ ValIdx<C> operator()(ValIdx<C> a, ValIdx<C> b) const {
        const bool a_nan = a.v != a.v, b_nan = b.v != b.v;
        if (a_nan != b_nan) return a_nan ? a : b;
        if (!a_nan && a.v != b.v) return a.v > b.v ? a : b;
        return a.i <= b.i ? a : b;
    }
};

// out[r] = the first column of the row's largest element; one block per row.
template <typename T>
__device__ void argmax(const T* x, const GsLayout& rl, u64 cs, i64* out, u64 rows, u64 d) {
    typedef typename Compute<T>::type C;
    __shared__ ValIdx<C> scratch[32];
    const ValIdx<C> none = {gs_neg_inf<C>(), 0x7fffffffffffffffLL};
    GS_ROW_LOOP(r, rows) {
        const T* row = x + gs_offset(rl, r);
        ValIdx<C> best = none;
        GS_BLOCK_LOOP(j, d) { best = ArgMaxOp()(best, ValIdx<C>{gs_load(row, j * cs), (i64)j}); }
        best = gs_block_reduce(best, ArgMaxOp(), none, scratch);
        if (threadIdx.x == 0) out[r] = best.i;
    }
}

extern "C" __global__ void argmax_f16(const __half* x, GsLayout rl, u64 cs, i64* out, u64 rows, u64 d) { argmax(x, rl, cs, out, rows, d); }
extern "C" __global__ void argmax_bf16(const __nv_bfloat16* x, GsLayout rl, u64 cs, i64* out, u64 rows, u64 d) { argmax(x, rl, cs, out, rows, d); }
extern "C" __global__ void argmax_f32(const float* x, GsLayout rl, u64 cs, i64* out, u64 rows, u64 d) { argmax(x, rl, cs, out, rows, d); }
extern "C" __global__ void argmax_f64(const double* x, GsLayout rl, u64 cs, i64* out, u64 rows, u64 d) { argmax(x, rl, cs, out, rows, d); }
