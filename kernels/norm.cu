// Layer norm over the last dim. Row r, column j of an input is at
// p[offset(rl, r) + j * cs]; outputs are dense. Statistics (mean, 1/std) are stored in the
// compute type (f32 for f16 and f32, f64 for f64), one per row, at stats[r * ss].
#include "common.cuh"

// y = (x - mean) * rstd * w + b per row of length d; w and b may be null (1 and 0).
template <typename T, typename C = typename Compute<T>::type>
__device__ void layer_norm_fwd(const T* x, const GsLayout& rl, u64 cs, const T* w, u64 ws, const T* b, u64 bs,
                               T* y, C* mean, C* rstd, u64 rows, u64 d, double eps) {
    __shared__ C scratch[32];
    GS_ROW_LOOP(r, rows) {
        const T* row = x + gs_offset(rl, r);
        C acc = 0;
        GS_BLOCK_LOOP(j, d) { acc += gs_load(row, j * cs); }
        const C mu = gs_block_sum(acc, scratch) / (C)d;
        acc = 0;
        GS_BLOCK_LOOP(j, d) {
            const C c = gs_load(row, j * cs) - mu;
            acc += c * c;
        }
        const C var = gs_block_sum(acc, scratch) / (C)d;
        const C rs = (C)1 / gs_sqrt(var + (C)eps);
        if (threadIdx.x == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        T* out = y + r * d;
        GS_BLOCK_LOOP(j, d) {
            C v = (gs_load(row, j * cs) - mu) * rs;
            if (w) v *= gs_load(w, j * ws);
            if (b) v += gs_load(b, j * bs);
            gs_store(out, j, v);
        }
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, xhat = (x - mean) * rstd.
template <typename T, typename C = typename Compute<T>::type>
__device__ void layer_norm_bwd_dx(const T* dy, const GsLayout& dl, u64 ds, const T* x, const GsLayout& xl, u64 xs,
                                  const C* mean, u64 ms, const C* rstd, u64 rss, const T* w, u64 ws, T* dx,
                                  u64 rows, u64 d) {
    __shared__ C scratch[32];
    GS_ROW_LOOP(r, rows) {
        const T* dr = dy + gs_offset(dl, r);
        const T* xr = x + gs_offset(xl, r);
        const C mu = mean[r * ms], rs = rstd[r * rss];
        C sg = 0, sgx = 0;
        GS_BLOCK_LOOP(j, d) {
            const C g = gs_load(dr, j * ds) * (w ? gs_load(w, j * ws) : (C)1);
            sg += g;
            sgx += g * (gs_load(xr, j * xs) - mu) * rs;
        }
        const C mg = gs_block_sum(sg, scratch) / (C)d;
        const C mgx = gs_block_sum(sgx, scratch) / (C)d;
        T* out = dx + r * d;
        GS_BLOCK_LOOP(j, d) {
            const C g = gs_load(dr, j * ds) * (w ? gs_load(w, j * ws) : (C)1);
            const C xhat = (gs_load(xr, j * xs) - mu) * rs;
            gs_store(out, j, rs * (g - mg - xhat * mgx));
        }
    }
}

// Columns per block and row slices per block of layer_norm_bwd_params (blockDim 32 x 8).
#define LN_COLS 32
#define LN_SLICES 8

// dw_j = sum_r dy[r, j] * xhat[r, j] and db_j = sum_r dy[r, j]. A block covers 32
// columns; its 8 row slices each sum every 8th row, then add up in shared memory.
template <typename T, typename C = typename Compute<T>::type>
__device__ void layer_norm_bwd_params(const T* dy, const GsLayout& dl, u64 ds, const T* x, const GsLayout& xl, u64 xs,
                                      const C* mean, u64 ms, const C* rstd, u64 rss, T* dw, T* db, u64 rows, u64 d) {
    __shared__ C part_w[LN_SLICES][LN_COLS];
    __shared__ C part_b[LN_SLICES][LN_COLS];
    const unsigned tx = threadIdx.x % LN_COLS, ty = threadIdx.x / LN_COLS;
    for (u64 j0 = (u64)blockIdx.x * LN_COLS; j0 < d; j0 += (u64)gridDim.x * LN_COLS) {
        const u64 j = j0 + tx;
        C sw = 0, sb = 0;
        if (j < d) {
            for (u64 r = ty; r < rows; r += LN_SLICES) {
                const C g = gs_load(dy + gs_offset(dl, r), j * ds);
                const C xhat = (gs_load(x + gs_offset(xl, r), j * xs) - mean[r * ms]) * rstd[r * rss];
                sw += g * xhat;
                sb += g;
            }
        }
        part_w[ty][tx] = sw;
        part_b[ty][tx] = sb;
        __syncthreads();
        if (ty == 0 && j < d) {
            for (int s = 1; s < LN_SLICES; ++s) {
                sw += part_w[s][tx];
                sb += part_b[s][tx];
            }
            gs_store(dw, j, sw);
            gs_store(db, j, sb);
        }
        __syncthreads();
    }
}

extern "C" __global__ void layer_norm_fwd_f16(const __half* x, GsLayout rl, u64 cs, const __half* w, u64 ws, const __half* b, u64 bs, __half* y, float* mean, float* rstd, u64 rows, u64 d, double eps) { layer_norm_fwd(x, rl, cs, w, ws, b, bs, y, mean, rstd, rows, d, eps); }
extern "C" __global__ void layer_norm_fwd_bf16(const __nv_bfloat16* x, GsLayout rl, u64 cs, const __nv_bfloat16* w, u64 ws, const __nv_bfloat16* b, u64 bs, __nv_bfloat16* y, float* mean, float* rstd, u64 rows, u64 d, double eps) { layer_norm_fwd(x, rl, cs, w, ws, b, bs, y, mean, rstd, rows, d, eps); }
extern "C" __global__ void layer_norm_fwd_f32(const float* x, GsLayout rl, u64 cs, const float* w, u64 ws, const float* b, u64 bs, float* y, float* mean, float* rstd, u64 rows, u64 d, double eps) { layer_norm_fwd(x, rl, cs, w, ws, b, bs, y, mean, rstd, rows, d, eps); }
extern "C" __global__ void layer_norm_fwd_f64(const double* x, GsLayout rl, u64 cs, const double* w, u64 ws, const double* b, u64 bs, double* y, double* mean, double* rstd, u64 rows, u64 d, double eps) { layer_norm_fwd(x, rl, cs, w, ws, b, bs, y, mean, rstd, rows, d, eps); }

extern "C" __global__ void layer_norm_bwd_dx_f16(const __half* dy, GsLayout dl, u64 ds, const __half* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, const __half* w, u64 ws, __half* dx, u64 rows, u64 d) { layer_norm_bwd_dx(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, w, ws, dx, rows, d); }
extern "C" __global__ void layer_norm_bwd_dx_bf16(const __nv_bfloat16* dy, GsLayout dl, u64 ds, const __nv_bfloat16* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, const __nv_bfloat16* w, u64 ws, __nv_bfloat16* dx, u64 rows, u64 d) { layer_norm_bwd_dx(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, w, ws, dx, rows, d); }
extern "C" __global__ void layer_norm_bwd_dx_f32(const float* dy, GsLayout dl, u64 ds, const float* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, const float* w, u64 ws, float* dx, u64 rows, u64 d) { layer_norm_bwd_dx(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, w, ws, dx, rows, d); }
extern "C" __global__ void layer_norm_bwd_dx_f64(const double* dy, GsLayout dl, u64 ds, const double* x, GsLayout xl, u64 xs, const double* mean, u64 ms, const double* rstd, u64 rss, const double* w, u64 ws, double* dx, u64 rows, u64 d) { layer_norm_bwd_dx(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, w, ws, dx, rows, d); }

extern "C" __global__ void layer_norm_bwd_params_f16(const __half* dy, GsLayout dl, u64 ds, const __half* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, __half* dw, __half* db, u64 rows, u64 d) { layer_norm_bwd_params(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, dw, db, rows, d); }
extern "C" __global__ void layer_norm_bwd_params_bf16(const __nv_bfloat16* dy, GsLayout dl, u64 ds, const __nv_bfloat16* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, __nv_bfloat16* dw, __nv_bfloat16* db, u64 rows, u64 d) { layer_norm_bwd_params(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, dw, db, rows, d); }
extern "C" __global__ void layer_norm_bwd_params_f32(const float* dy, GsLayout dl, u64 ds, const float* x, GsLayout xl, u64 xs, const float* mean, u64 ms, const float* rstd, u64 rss, float* dw, float* db, u64 rows, u64 d) { layer_norm_bwd_params(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, dw, db, rows, d); }
extern "C" __global__ void layer_norm_bwd_params_f64(const double* dy, GsLayout dl, u64 ds, const double* x, GsLayout xl, u64 xs, const double* mean, u64 ms, const double* rstd, u64 rss, double* dw, double* db, u64 rows, u64 d) { layer_norm_bwd_params(dy, dl, ds, x, xl, xs, mean, ms, rstd, rss, dw, db, rows, d); }
