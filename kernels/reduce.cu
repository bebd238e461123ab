// Sum over a set of dims. The host splits the input view into the kept dims (`kl`, one
// output each) and the reduced dims (`rl`): element (o, r) is at
// x[offset(kl, o) + offset(rl, r)]. Accumulation is in the compute type (f32, or f64).
#include "common.cuh"

// One block per output: the block's threads share the reduced range, then combine with
// warp shuffles and shared memory. For long reductions.
template <typename T>
__device__ void sum_rows(const T* x, const GsLayout& kl, const GsLayout& rl, T* y, u64 n_out, u64 n_red) {
    typedef typename Compute<T>::type C;
    __shared__ C scratch[32];
    GS_ROW_LOOP(o, n_out) {
        const T* base = x + gs_offset(kl, o);
        C acc = 0;
        GS_BLOCK_LOOP(r, n_red) { acc += gs_load(base, gs_offset(rl, r)); }
        acc = gs_block_sum(acc, scratch);
        if (threadIdx.x == 0) gs_store(y, o, acc);
    }
}

// One thread per output, a serial loop over the reduced range: for many short
// reductions (e.g. a bias gradient, where neighbouring outputs are neighbours in memory).
template <typename T>
__device__ void sum_cols(const T* x, const GsLayout& kl, const GsLayout& rl, T* y, u64 n_out, u64 n_red) {
    typedef typename Compute<T>::type C;
    GS_GRID_LOOP(o, n_out) {
        const T* base = x + gs_offset(kl, o);
        C acc = 0;
        for (u64 r = 0; r < n_red; ++r) acc += gs_load(base, gs_offset(rl, r));
        gs_store(y, o, acc);
    }
}

extern "C" __global__ void sum_rows_f16(const __half* x, GsLayout kl, GsLayout rl, __half* y, u64 n_out, u64 n_red) { sum_rows(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_rows_bf16(const __nv_bfloat16* x, GsLayout kl, GsLayout rl, __nv_bfloat16* y, u64 n_out, u64 n_red) { sum_rows(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_rows_f32(const float* x, GsLayout kl, GsLayout rl, float* y, u64 n_out, u64 n_red) { sum_rows(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_rows_f64(const double* x, GsLayout kl, GsLayout rl, double* y, u64 n_out, u64 n_red) { sum_rows(x, kl, rl, y, n_out, n_red); }

extern "C" __global__ void sum_cols_f16(const __half* x, GsLayout kl, GsLayout rl, __half* y, u64 n_out, u64 n_red) { sum_cols(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_cols_bf16(const __nv_bfloat16* x, GsLayout kl, GsLayout rl, __nv_bfloat16* y, u64 n_out, u64 n_red) { sum_cols(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_cols_f32(const float* x, GsLayout kl, GsLayout rl, float* y, u64 n_out, u64 n_red) { sum_cols(x, kl, rl, y, n_out, n_red); }
extern "C" __global__ void sum_cols_f64(const double* x, GsLayout kl, GsLayout rl, double* y, u64 n_out, u64 n_red) { sum_cols(x, kl, rl, y, n_out, n_red); }
