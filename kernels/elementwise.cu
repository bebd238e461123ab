// Elementwise kernels: unary functions, binary arithmetic with broadcasting, affine
// maps and in-place accumulation. Inputs are strided views (GsLayout); outputs are
// dense. When every operand is dense, a vector path moves 16 bytes per access.
#include "common.cuh"

// Mirrors `UnaryOp` in src/backend/dispatch.rs (the Rust side passes these codes).
enum UnaryCode {
    U_NEG = 0, U_EXP, U_LOG, U_SQRT, U_TANH, U_SIGMOID, U_RELU, U_GELU, U_GELU_TANH,
    U_STEP, U_GELU_GRAD, U_GELU_TANH_GRAD, U_RECIP, U_SQUARE, U_ABS
};

// Mirrors `BinaryOp`.
enum BinaryCode { B_ADD = 0, B_SUB, B_MUL, B_DIV, B_THRESHOLD_BWD };

template <typename C> __device__ __forceinline__ C unary_fn(int op, C x) {
    const C half = (C)0.5, one = (C)1;
    const C inv_sqrt2 = (C)0.70710678118654752440;
    const C inv_sqrt_2pi = (C)0.39894228040143267794;
    const C k_tanh = (C)0.79788456080286535588;  // sqrt(2 / pi)
    const C c_tanh = (C)0.044715;
    switch (op) {
        case U_NEG: return -x;
        case U_EXP: return gs_exp(x);
        case U_LOG: return gs_log(x);
        case U_SQRT: return gs_sqrt(x);
        case U_TANH: return gs_tanh(x);
        case U_SIGMOID: return one / (one + gs_exp(-x));
        case U_RELU: return x < (C)0 ? (C)0 : x;  // NaN stays NaN, as torch
        case U_GELU: return half * x * (one + gs_erf(x * inv_sqrt2));
        case U_GELU_TANH: {
            C t = gs_tanh(k_tanh * (x + c_tanh * x * x * x));
            return half * x * (one + t);
        }
        case U_STEP: return x > (C)0 ? one : (C)0;
        case U_GELU_GRAD: {
            C cdf = half * (one + gs_erf(x * inv_sqrt2));
            return cdf + x * inv_sqrt_2pi * gs_exp(-half * x * x);
        }
        case U_GELU_TANH_GRAD: {
            C t = gs_tanh(k_tanh * (x + c_tanh * x * x * x));
            C dinner = k_tanh * (one + (C)3 * c_tanh * x * x);
            return half * (one + t) + half * x * (one - t * t) * dinner;
        }
        case U_RECIP: return one / x;
        case U_SQUARE: return x * x;
        case U_ABS: return gs_abs(x);
        default: return x;
    }
}

template <typename C> __device__ __forceinline__ C binary_fn(int op, C a, C b) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_THRESHOLD_BWD: return b <= (C)0 ? (C)0 : a;
        default: return a;
    }
}

// y[i] = f(x[i]) over n elements. Dense x: 16-byte vectors when both pointers are
// aligned, then a scalar tail; strided x: one element per step through its layout.
template <typename T, typename F>
__device__ void map1(const T* x, const GsLayout& xl, T* y, u64 n, F f) {
    typedef Pack16<T> P;
    if (xl.rank == 0 && gs_aligned16(x) && gs_aligned16(y)) {
        const u64 nv = n / P::N;
        GS_GRID_LOOP(v, nv) {
            P p = gs_load16(x + v * P::N);
#pragma unroll
            for (int j = 0; j < P::N; ++j) gs_store(p.v, j, f(gs_load(p.v, j)));
            gs_store16(y + v * P::N, p);
        }
        GS_GRID_LOOP(t, n - nv * P::N) {
            const u64 i = nv * P::N + t;
            gs_store(y, i, f(gs_load(x, i)));
        }
        return;
    }
    GS_GRID_LOOP(i, n) { gs_store(y, i, f(gs_load(x, gs_offset(xl, i)))); }
}

// y[i] = f(a[i], b[i]) over n elements, with the same dense fast path as map1.
template <typename T, typename F>
__device__ void map2(const T* a, const GsLayout& al, const T* b, const GsLayout& bl, T* y, u64 n, F f) {
    typedef Pack16<T> P;
    if (al.rank == 0 && bl.rank == 0 && gs_aligned16(a) && gs_aligned16(b) && gs_aligned16(y)) {
        const u64 nv = n / P::N;
        GS_GRID_LOOP(v, nv) {
            P pa = gs_load16(a + v * P::N), pb = gs_load16(b + v * P::N);
#pragma unroll
            for (int j = 0; j < P::N; ++j) gs_store(pa.v, j, f(gs_load(pa.v, j), gs_load(pb.v, j)));
            gs_store16(y + v * P::N, pa);
        }
        GS_GRID_LOOP(t, n - nv * P::N) {
            const u64 i = nv * P::N + t;
            gs_store(y, i, f(gs_load(a, i), gs_load(b, i)));
        }
        return;
    }
    GS_GRID_LOOP(i, n) {
        gs_store(y, i, f(gs_load(a, gs_offset(al, i)), gs_load(b, gs_offset(bl, i))));
    }
}

template <typename C> struct UnaryF {
    int op;
    __device__ C operator()(C x) const { return unary_fn(op, x); }
};
template <typename C> struct BinaryF {
    int op;
    __device__ C operator()(C a, C b) const { return binary_fn(op, a, b); }
};
template <typename C> struct AffineF {
    C mul, add;
    __device__ C operator()(C x) const { return x * mul + add; }
};
// dst + alpha * src, for add_ (dst is both an input and the output).
template <typename C> struct AxpyF {
    C alpha;
    __device__ C operator()(C d, C s) const { return d + alpha * s; }
};

template <typename T> __device__ void unary(const T* x, GsLayout xl, T* y, u64 n, int op) {
    map1(x, xl, y, n, UnaryF<typename Compute<T>::type>{op});
}
template <typename T>
__device__ void binary(const T* a, GsLayout al, const T* b, GsLayout bl, T* y, u64 n, int op) {
    map2(a, al, b, bl, y, n, BinaryF<typename Compute<T>::type>{op});
}
template <typename T>
__device__ void affine(const T* x, GsLayout xl, T* y, u64 n, double mul, double add) {
    typedef typename Compute<T>::type C;
    map1(x, xl, y, n, AffineF<C>{(C)mul, (C)add});
}
// `dl` describes dst, which must be dense (rank 0): it is read and written in place.
template <typename T>
__device__ void add_inplace(T* dst, GsLayout dl, const T* src, GsLayout sl, u64 n, double alpha) {
    typedef typename Compute<T>::type C;
    map2((const T*)dst, dl, src, sl, dst, n, AxpyF<C>{(C)alpha});
}

extern "C" __global__ void unary_f16(const __half* x, GsLayout xl, __half* y, u64 n, int op) { unary(x, xl, y, n, op); }
extern "C" __global__ void unary_bf16(const __nv_bfloat16* x, GsLayout xl, __nv_bfloat16* y, u64 n, int op) { unary(x, xl, y, n, op); }
extern "C" __global__ void unary_f32(const float* x, GsLayout xl, float* y, u64 n, int op) { unary(x, xl, y, n, op); }
extern "C" __global__ void unary_f64(const double* x, GsLayout xl, double* y, u64 n, int op) { unary(x, xl, y, n, op); }

extern "C" __global__ void binary_f16(const __half* a, GsLayout al, const __half* b, GsLayout bl, __half* y, u64 n, int op) { binary(a, al, b, bl, y, n, op); }
extern "C" __global__ void binary_bf16(const __nv_bfloat16* a, GsLayout al, const __nv_bfloat16* b, GsLayout bl, __nv_bfloat16* y, u64 n, int op) { binary(a, al, b, bl, y, n, op); }
extern "C" __global__ void binary_f32(const float* a, GsLayout al, const float* b, GsLayout bl, float* y, u64 n, int op) { binary(a, al, b, bl, y, n, op); }
extern "C" __global__ void binary_f64(const double* a, GsLayout al, const double* b, GsLayout bl, double* y, u64 n, int op) { binary(a, al, b, bl, y, n, op); }

extern "C" __global__ void affine_f16(const __half* x, GsLayout xl, __half* y, u64 n, double mul, double add) { affine(x, xl, y, n, mul, add); }
extern "C" __global__ void affine_bf16(const __nv_bfloat16* x, GsLayout xl, __nv_bfloat16* y, u64 n, double mul, double add) { affine(x, xl, y, n, mul, add); }
extern "C" __global__ void affine_f32(const float* x, GsLayout xl, float* y, u64 n, double mul, double add) { affine(x, xl, y, n, mul, add); }
extern "C" __global__ void affine_f64(const double* x, GsLayout xl, double* y, u64 n, double mul, double add) { affine(x, xl, y, n, mul, add); }

extern "C" __global__ void add_inplace_f16(__half* dst, GsLayout dl, const __half* src, GsLayout sl, u64 n, double alpha) { add_inplace(dst, dl, src, sl, n, alpha); }
extern "C" __global__ void add_inplace_bf16(__nv_bfloat16* dst, GsLayout dl, const __nv_bfloat16* src, GsLayout sl, u64 n, double alpha) { add_inplace(dst, dl, src, sl, n, alpha); }
extern "C" __global__ void add_inplace_f32(float* dst, GsLayout dl, const float* src, GsLayout sl, u64 n, double alpha) { add_inplace(dst, dl, src, sl, n, alpha); }
extern "C" __global__ void add_inplace_f64(double* dst, GsLayout dl, const double* src, GsLayout sl, u64 n, double alpha) { add_inplace(dst, dl, src, sl, n, alpha); }
