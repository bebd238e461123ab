// Fill, copy and cast kernels.
#include "common.cuh"

template <typename T>
__device__ void fill(T* out, u64 n, double value) {
    typedef typename Compute<T>::type C;
    GS_GRID_LOOP(i, n) { gs_store(out, i, (C)value); }
}

extern "C" __global__ void fill_f32(float* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_f16(__half* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_f64(double* out, u64 n, double value) { fill(out, n, value); }
