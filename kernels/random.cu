// Dropout masks from the counter-based generator shared by every backend: element i of
// a mask with seed s depends only on (s, i), so CPU and GPU masks are bit-identical.
#include "common.cuh"

// Uniform in [0, 1) with 24 random bits, for element i under seed s (splitmix64).
__device__ __forceinline__ float dropout_uniform(u64 seed, u64 i) {
    u64 z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// out[i] = scale where uniform(seed, i) >= p, else 0. `scale` is 1 / (1 - p) as the host
// computed it in the dtype's compute precision.
template <typename T>
__device__ void dropout_mask(T* out, u64 n, u64 seed, double p, double scale) {
    typedef typename Compute<T>::type C;
    GS_GRID_LOOP(i, n) { gs_store(out, i, (double)dropout_uniform(seed, i) >= p ? (C)scale : (C)0); }
}

extern "C" __global__ void dropout_mask_f16(__half* out, u64 n, u64 seed, double p, double scale) { dropout_mask(out, n, seed, p, scale); }
extern "C" __global__ void dropout_mask_bf16(__nv_bfloat16* out, u64 n, u64 seed, double p, double scale) { dropout_mask(out, n, seed, p, scale); }
extern "C" __global__ void dropout_mask_f32(float* out, u64 n, u64 seed, double p, double scale) { dropout_mask(out, n, seed, p, scale); }
extern "C" __global__ void dropout_mask_f64(double* out, u64 n, u64 seed, double p, double scale) { dropout_mask(out, n, seed, p, scale); }
