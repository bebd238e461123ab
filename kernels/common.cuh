// Shared by every kernels/*.cu file: element types, loads and stores, vector access,
// strided layouts and block reductions.
// f16 and bf16 values are stored as such and computed in f32.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;
typedef long long i64;

// Load one element as the compute type (f32 for f16 and f32, f64 for f64).
__device__ __forceinline__ float gs_load(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ float gs_load(const __half* p, u64 i) { return __half2float(p[i]); }
__device__ __forceinline__ float gs_load(const __nv_bfloat16* p, u64 i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ double gs_load(const double* p, u64 i) { return p[i]; }

// Store a compute-type value as the element type (round to nearest even for f16, bf16).
__device__ __forceinline__ void gs_store(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void gs_store(__half* p, u64 i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void gs_store(__nv_bfloat16* p, u64 i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void gs_store(double* p, u64 i, double v) { p[i] = v; }

// The compute type of an element type.
template <typename T> struct Compute { typedef float type; };
template <> struct Compute<double> { typedef double type; };

// Grid-stride loop over [0, n) with 64-bit indices.
#define GS_GRID_LOOP(i, n)                                                        \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n);         \
         i += (u64)blockDim.x * gridDim.x)

// Block-stride loop over [0, n): the threads of one block share the range.
#define GS_BLOCK_LOOP(i, n) for (u64 i = threadIdx.x; i < (u64)(n); i += blockDim.x)

// Grid-stride loop over rows [0, n), one block per row.
#define GS_ROW_LOOP(r, n) for (u64 r = blockIdx.x; r < (u64)(n); r += gridDim.x)

// ---- math of the compute types ---------------------------------------------------

__device__ __forceinline__ float gs_exp(float x) { return expf(x); }
__device__ __forceinline__ double gs_exp(double x) { return exp(x); }
__device__ __forceinline__ float gs_log(float x) { return logf(x); }
__device__ __forceinline__ double gs_log(double x) { return log(x); }
__device__ __forceinline__ float gs_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double gs_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float gs_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double gs_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float gs_erf(float x) { return erff(x); }
__device__ __forceinline__ double gs_erf(double x) { return erf(x); }
__device__ __forceinline__ float gs_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double gs_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float gs_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double gs_abs(double x) { return fabs(x); }

// Negative infinity of a compute type.
template <typename C> __device__ __forceinline__ C gs_neg_inf() { return (C)(-1.0 / 0.0); }
// Whether a compute value is NaN (kernels are compiled without fast-math).
template <typename C> __device__ __forceinline__ bool gs_isnan(C x) { return x != x; }

// ---- strided layouts -------------------------------------------------------------

// Maximum rank of a strided view passed to a kernel.
#define GS_MAX_RANK 8

// Shape and element strides of a view, mirrored by `StridedLayout` in Rust
// (src/backend/gpu/ops/layout.rs). Rank 0 means dense: element i is at i. The view's
// offset is already applied to the pointer passed next to it.
struct GsLayout {
    u64 rank;
    u64 shape[GS_MAX_RANK];
    u64 strides[GS_MAX_RANK];
};

// Storage index of row-major element `i` of a view.
__device__ __forceinline__ u64 gs_offset(const GsLayout& l, u64 i) {
    if (l.rank == 0) return i;
    u64 off = 0;
    for (int d = (int)l.rank - 1; d >= 0; --d) {
        u64 s = l.shape[d];
        off += (i % s) * l.strides[d];
        i /= s;
    }
    return off;
}

// Whether the pointer is aligned for 16-byte vector access.
__device__ __forceinline__ bool gs_aligned16(const void* p) { return ((u64)p & 15) == 0; }

// Elements of T in one 16-byte vector (4 f32, 8 f16 or bf16, 2 f64).
template <typename T> struct Pack16 {
    static const int N = 16 / sizeof(T);
    T v[N];
};

// Loads/stores one 16-byte vector; `p` must be 16-byte aligned.
template <typename T> __device__ __forceinline__ Pack16<T> gs_load16(const T* p) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    Pack16<T> out;
    memcpy(&out, &raw, 16);
    return out;
}
template <typename T> __device__ __forceinline__ void gs_store16(T* p, const Pack16<T>& v) {
    uint4 raw;
    memcpy(&raw, &v, 16);
    *reinterpret_cast<uint4*>(p) = raw;
}

// ---- warp and block reductions ---------------------------------------------------

__device__ __forceinline__ float gs_shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ double gs_shfl_xor(double v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ int gs_shfl_xor(int v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ i64 gs_shfl_xor(i64 v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }

// Functors for gs_block_reduce.
struct GsSum {
    template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};

// Combines `v` over a warp with `op`; every lane gets the result.
template <typename V, typename Op> __device__ __forceinline__ V gs_warp_reduce(V v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, gs_shfl_xor(v, o));
    return v;
}

// Combines `v` over the block with `op` (an associative, commutative combine); every
// thread gets the result. `scratch` is shared memory of at least 32 values. blockDim.x
// must be a multiple of 32. Safe to call repeatedly with the same scratch.
template <typename V, typename Op>
__device__ __forceinline__ V gs_block_reduce(V v, Op op, V identity, V* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = gs_warp_reduce(v, op);
    __syncthreads();  // an earlier call may still be reading scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : identity;
    return gs_warp_reduce(v, op);
}

// Sum over the block; every thread gets it.
template <typename V> __device__ __forceinline__ V gs_block_sum(V v, V* scratch) {
    return gs_block_reduce(v, GsSum(), (V)0, scratch);
}

// The device's sticky error record (one per device, zeroed by the host when it reads an
// error at a synchronisation): the first failed check of any kernel since then. A check
// that fails in several threads keeps the smallest position of its launch (`seq`, a host
// number per launch); an error of an earlier launch is kept. Mirrored by `StatusRecord`
// in src/backend/gpu/status.rs. Reached only on bad input: a spin lock is fine.
struct GsStatus {
    unsigned int lock;
    unsigned int code;  // GS_ERR_*; 0: no error
    u64 seq;            // the launch that failed
    u64 pos;            // position of the bad element in its tensor (row-major)
    i64 value;          // its value
    i64 bound;          // the bound it broke: valid values are [0, bound)
    i64 extra;          // per check: cross_entropy's ignore_index
};

enum { GS_ERR_NONE = 0, GS_ERR_TARGET = 1, GS_ERR_INDEX = 2 };

__device__ __forceinline__ void gs_report(GsStatus* st, unsigned int code, u64 seq, u64 pos, i64 value,
                                          i64 bound, i64 extra) {
    while (atomicCAS(&st->lock, 0u, 1u) != 0u) {
    }
    volatile GsStatus* v = st;
    if (v->code == GS_ERR_NONE || (v->seq == seq && pos < v->pos)) {
        v->code = code;
        v->seq = seq;
        v->pos = pos;
        v->value = value;
        v->bound = bound;
        v->extra = extra;
    }
    __threadfence();
    atomicExch(&st->lock, 0u);
}
