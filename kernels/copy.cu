// Fill, copy and cast kernels.
#include "common.cuh"

// y[i] = x[layout(i)]: a strided view made dense. Bitwise, so one kernel per element
// width serves every dtype of that width.
template <typename W>
__device__ void copy_strided(const W* x, const GsLayout& xl, W* y, u64 n) {
    GS_GRID_LOOP(i, n) { y[i] = x[gs_offset(xl, i)]; }
}

extern "C" __global__ void copy_b16(const unsigned short* x, GsLayout xl, unsigned short* y, u64 n) { copy_strided(x, xl, y, n); }
extern "C" __global__ void copy_b32(const unsigned int* x, GsLayout xl, unsigned int* y, u64 n) { copy_strided(x, xl, y, n); }
extern "C" __global__ void copy_b64(const u64* x, GsLayout xl, u64* y, u64 n) { copy_strided(x, xl, y, n); }

// The value converted toward zero, saturating at the i64 range; NaN gives 0 (as Rust's
// `as i64`).
__device__ __forceinline__ i64 f64_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return 9223372036854775807LL;
    if (v <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (i64)v;
}

// Every element type through f64, which holds f16, bf16 and f32 exactly.
__device__ __forceinline__ double to_f64(__half v) { return (double)__half2float(v); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 v) { return (double)__bfloat162float(v); }
__device__ __forceinline__ double to_f64(float v) { return (double)v; }
__device__ __forceinline__ double to_f64(double v) { return v; }
__device__ __forceinline__ double to_f64(i64 v) { return (double)v; }

// f64 to every element type, rounded once (f16 and bf16 straight from the double, not via
// f32).
__device__ __forceinline__ void from_f64(__half* p, u64 i, double v) { p[i] = __double2half(v); }
__device__ __forceinline__ void from_f64(__nv_bfloat16* p, u64 i, double v) { p[i] = __double2bfloat16(v); }
__device__ __forceinline__ void from_f64(float* p, u64 i, double v) { p[i] = (float)v; }
__device__ __forceinline__ void from_f64(double* p, u64 i, double v) { p[i] = v; }
__device__ __forceinline__ void from_f64(i64* p, u64 i, double v) { p[i] = f64_to_i64(v); }

// out[i] = value converted to T (once).
template <typename T>
__device__ void fill(T* out, u64 n, double value) {
    GS_GRID_LOOP(i, n) { from_f64(out, i, value); }
}

extern "C" __global__ void fill_f32(float* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_f16(__half* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_bf16(__nv_bfloat16* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_f64(double* out, u64 n, double value) { fill(out, n, value); }
extern "C" __global__ void fill_i64(i64* out, u64 n, double value) { fill(out, n, value); }

// y[i] = convert(x[layout(i)]). Float to integer truncates toward zero.
template <typename S, typename D>
__device__ void cast(const S* x, const GsLayout& xl, D* y, u64 n) {
    GS_GRID_LOOP(i, n) { from_f64(y, i, to_f64(x[gs_offset(xl, i)])); }
}

extern "C" __global__ void cast_f16_bf16(const __half* x, GsLayout xl, __nv_bfloat16* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f16_f32(const __half* x, GsLayout xl, float* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f16_f64(const __half* x, GsLayout xl, double* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f16_i64(const __half* x, GsLayout xl, i64* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_bf16_f16(const __nv_bfloat16* x, GsLayout xl, __half* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_bf16_f32(const __nv_bfloat16* x, GsLayout xl, float* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_bf16_f64(const __nv_bfloat16* x, GsLayout xl, double* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_bf16_i64(const __nv_bfloat16* x, GsLayout xl, i64* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f32_f16(const float* x, GsLayout xl, __half* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f32_bf16(const float* x, GsLayout xl, __nv_bfloat16* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f32_f64(const float* x, GsLayout xl, double* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f32_i64(const float* x, GsLayout xl, i64* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f64_f16(const double* x, GsLayout xl, __half* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f64_bf16(const double* x, GsLayout xl, __nv_bfloat16* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f64_f32(const double* x, GsLayout xl, float* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_f64_i64(const double* x, GsLayout xl, i64* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_i64_f16(const i64* x, GsLayout xl, __half* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_i64_bf16(const i64* x, GsLayout xl, __nv_bfloat16* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_i64_f32(const i64* x, GsLayout xl, float* y, u64 n) { cast(x, xl, y, n); }
extern "C" __global__ void cast_i64_f64(const i64* x, GsLayout xl, double* y, u64 n) { cast(x, xl, y, n); }
