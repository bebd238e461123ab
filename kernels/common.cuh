// Shared by every kernels/*.cu file: element types, loads and stores, vector access.
// f16 values are stored as f16 and computed in f32.
#pragma once

#include <cuda_fp16.h>

typedef unsigned long long u64;
typedef long long i64;

// Load one element as the compute type (f32 for f16 and f32, f64 for f64).
__device__ __forceinline__ float gs_load(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ float gs_load(const __half* p, u64 i) { return __half2float(p[i]); }
__device__ __forceinline__ double gs_load(const double* p, u64 i) { return p[i]; }

// Store a compute-type value as the element type (round to nearest even for f16).
__device__ __forceinline__ void gs_store(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void gs_store(__half* p, u64 i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void gs_store(double* p, u64 i, double v) { p[i] = v; }

// The compute type of an element type.
template <typename T> struct Compute { typedef float type; };
template <> struct Compute<double> { typedef double type; };

// Grid-stride loop over [0, n) with 64-bit indices.
#define GS_GRID_LOOP(i, n)                                                        \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n);         \
         i += (u64)blockDim.x * gridDim.x)
