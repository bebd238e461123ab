// The host emulation shim: lets g++ compile the unchanged kernels/*.cu.
//
// Each CUDA thread of a block is a fiber; a block's fibers run on one OS thread (see
// kernels/host/runtime.cc), so `__shared__` variables are thread-local statics (one copy
// per block in flight) and `__syncthreads` / warp operations are barriers among fibers.
// Anything a kernel uses that this file lacks fails to compile on the host: extend it here.
#pragma once

#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>

#include "cuda_bf16.h"
#include "cuda_fp16.h"

// ---------------------------------------------------------------------------------------
// Qualifiers.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__ static
// Static shared memory: one copy per OS thread, i.e. per block in flight. `extern
// __shared__` declarations are rewritten by the build (build/emu.rs) into pointers to the
// launch's dynamic shared memory, `gs_emu_dyn_smem`.
#define __shared__ static thread_local

// ---------------------------------------------------------------------------------------
// Built-in vector types.
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
    dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

#define GS_EMU_VEC2(T, N, A)                                                              \
    struct alignas(A) N##2 { T x, y; };                                                   \
    inline N##2 make_##N##2(T x, T y) { N##2 v; v.x = x; v.y = y; return v; }
#define GS_EMU_VEC3(T, N)                                                                 \
    struct N##3 { T x, y, z; };                                                           \
    inline N##3 make_##N##3(T x, T y, T z) { N##3 v; v.x = x; v.y = y; v.z = z; return v; }
#define GS_EMU_VEC4(T, N, A)                                                              \
    struct alignas(A) N##4 { T x, y, z, w; };                                             \
    inline N##4 make_##N##4(T x, T y, T z, T w) {                                         \
        N##4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v;                             \
    }

GS_EMU_VEC2(float, float, 8)
GS_EMU_VEC3(float, float)
GS_EMU_VEC4(float, float, 16)
GS_EMU_VEC2(double, double, 16)
GS_EMU_VEC4(double, double, 16)
GS_EMU_VEC2(int, int, 8)
GS_EMU_VEC3(int, int)
GS_EMU_VEC4(int, int, 16)
GS_EMU_VEC2(unsigned int, uint, 8)
GS_EMU_VEC4(unsigned int, uint, 16)
GS_EMU_VEC2(short, short, 4)
GS_EMU_VEC2(unsigned short, ushort, 4)
GS_EMU_VEC4(unsigned short, ushort, 8)
GS_EMU_VEC4(signed char, char, 4)
GS_EMU_VEC4(unsigned char, uchar, 4)
GS_EMU_VEC2(long long, longlong, 16)
GS_EMU_VEC2(unsigned long long, ulonglong, 16)
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) {
    uint3 v; v.x = x; v.y = y; v.z = z; return v;
}

inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }

// ---------------------------------------------------------------------------------------
// Thread and block indices of the running fiber (set by the scheduler).
extern "C" {
extern __thread uint3 gs_emu_thread_idx;
extern __thread uint3 gs_emu_block_idx;
extern __thread uint3 gs_emu_block_dim;
extern __thread uint3 gs_emu_grid_dim;
extern __thread void* gs_emu_dyn_smem;
}
#define threadIdx gs_emu_thread_idx
#define blockIdx gs_emu_block_idx
#define blockDim gs_emu_block_dim
#define gridDim gs_emu_grid_dim
constexpr int warpSize = 32;

// Barriers and warp exchange (kernels/host/runtime.cc).
extern "C" {
void gs_emu_syncthreads(void);
int gs_emu_syncthreads_count(int pred);
void gs_emu_syncwarp(unsigned mask);
uint64_t gs_emu_warp_exchange(unsigned mask, uint64_t value, int src_lane);
unsigned gs_emu_warp_ballot(unsigned mask, int pred);
unsigned gs_emu_lane(void);
unsigned gs_emu_active_mask(void);
}

inline void __syncthreads() { gs_emu_syncthreads(); }
inline int __syncthreads_count(int p) { return gs_emu_syncthreads_count(p != 0); }
inline int __syncthreads_or(int p) { return gs_emu_syncthreads_count(p != 0) != 0; }
inline int __syncthreads_and(int p) {
    // Every live thread contributes; the block size is the live count only when none exited.
    return gs_emu_syncthreads_count(p == 0) == 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { gs_emu_syncwarp(mask); }
inline unsigned __activemask() { return gs_emu_active_mask(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------------------
// Warp shuffles and votes: every lane named by the mask must take part (as on the GPU).
namespace gs_emu {
template <class T>
inline T shfl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = gs_emu_warp_exchange(mask, bits, src);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
}  // namespace gs_emu

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
    int lane = (int)gs_emu_lane();
    return gs_emu::shfl(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    int lane = (int)gs_emu_lane();
    int in_seg = lane & (width - 1);
    return gs_emu::shfl(mask, v, in_seg >= (int)delta ? lane - (int)delta : lane);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    int lane = (int)gs_emu_lane();
    int in_seg = lane & (width - 1);
    return gs_emu::shfl(mask, v, in_seg + (int)delta < width ? lane + (int)delta : lane);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    int lane = (int)gs_emu_lane();
    int src = lane ^ lane_mask;
    int seg_end = (lane & ~(width - 1)) + width;
    return gs_emu::shfl(mask, v, src < seg_end ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return gs_emu_warp_ballot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return gs_emu_warp_ballot(mask, pred != 0) != 0; }
inline int __all_sync(unsigned mask, int pred) { return gs_emu_warp_ballot(mask, pred == 0) == 0; }

// ---------------------------------------------------------------------------------------
// Atomics (blocks run concurrently on several OS threads: these are real atomics).
namespace gs_emu {
template <class T, class B, class F>
inline T atomic_update(T* p, F f) {
    static_assert(sizeof(T) == sizeof(B), "bit type size");
    B* bp = reinterpret_cast<B*>(p);
    B old = __atomic_load_n(bp, __ATOMIC_RELAXED);
    for (;;) {
        T cur;
        std::memcpy(&cur, &old, sizeof(T));
        T next = f(cur);
        B nb;
        std::memcpy(&nb, &next, sizeof(T));
        if (__atomic_compare_exchange_n(bp, &old, nb, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return cur;
    }
}
}  // namespace gs_emu

#define GS_EMU_INT_ATOMICS(T)                                                              \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }       \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }   \
    inline T atomicCAS(T* p, T cmp, T v) {                                                 \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        return cmp;                                                                        \
    }                                                                                      \
    inline T atomicMax(T* p, T v) {                                                        \
        return gs_emu::atomic_update<T, T>(p, [v](T c) { return c < v ? v : c; });         \
    }                                                                                      \
    inline T atomicMin(T* p, T v) {                                                        \
        return gs_emu::atomic_update<T, T>(p, [v](T c) { return v < c ? v : c; });         \
    }
GS_EMU_INT_ATOMICS(int)
GS_EMU_INT_ATOMICS(unsigned int)
GS_EMU_INT_ATOMICS(unsigned long long)
GS_EMU_INT_ATOMICS(long long)

inline float atomicAdd(float* p, float v) {
    return gs_emu::atomic_update<float, uint32_t>(p, [v](float c) { return c + v; });
}
inline double atomicAdd(double* p, double v) {
    return gs_emu::atomic_update<double, uint64_t>(p, [v](double c) { return c + v; });
}
inline float atomicExch(float* p, float v) {
    return gs_emu::atomic_update<float, uint32_t>(p, [v](float) { return v; });
}
inline float atomicMax(float* p, float v) {  // not a CUDA built-in; convenient for tests
    return gs_emu::atomic_update<float, uint32_t>(p, [v](float c) { return c < v ? v : c; });
}

// ---------------------------------------------------------------------------------------
// Math and bit intrinsics (<math.h> supplies expf, logf, tanhf, erff, fmaf, ...).
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline int __float2int_rn(float f) { return (int)nearbyintf(f); }
inline int __float2int_rz(float f) { return (int)f; }
inline int __float2int_rd(float f) { return (int)floorf(f); }
inline int __float2int_ru(float f) { return (int)ceilf(f); }
inline unsigned __float2uint_rn(float f) { return (unsigned)nearbyintf(f); }
inline long long __float2ll_rn(float f) { return (long long)nearbyintf(f); }
inline long long __float2ll_rz(float f) { return (long long)f; }
inline float __int2float_rn(int i) { return (float)i; }
inline float __uint2float_rn(unsigned i) { return (float)i; }
inline float __ll2float_rn(long long i) { return (float)i; }
inline float __ull2float_rn(unsigned long long i) { return (float)i; }
inline float __double2float_rn(double d) { return (float)d; }
inline double __ll2double_rn(long long i) { return (double)i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// CUDA's overloaded min / max accept mixed argument types.
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)b : (C)a;
}

// Cache-hinted loads and stores are plain accesses on the host.
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---------------------------------------------------------------------------------------
// Kernel table entries generated by build/emu.rs: parameter unpacking by the function's
// own parameter types.
extern "C" {
/// One emulated kernel: its name, a trampoline that runs it as the current fiber, and the
/// size and pointer-ness of each parameter (for launch-time bounds checks).
struct gs_emu_kernel_desc {
    const char* name;
    void (*tramp)(void** params);
    unsigned nparams;
    const unsigned char* is_ptr;
    const unsigned short* sizes;
};
}

namespace gs_emu {
template <class... A>
struct Sig {
    static constexpr unsigned char is_ptr[sizeof...(A) + 1] = {
        (unsigned char)std::is_pointer<A>::value..., 0};
    static constexpr unsigned short sizes[sizeof...(A) + 1] = {(unsigned short)sizeof(A)..., 0};
};
template <class... A>
constexpr gs_emu_kernel_desc describe(const char* name, void (*)(A...), void (*t)(void**)) {
    return gs_emu_kernel_desc{name, t, (unsigned)sizeof...(A), Sig<A...>::is_ptr, Sig<A...>::sizes};
}
template <class... A, std::size_t... I>
inline void call_impl(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<A>::type*>(p[I])...);
}
template <class... A>
inline void call(void (*f)(A...), void** p) {
    call_impl(f, p, std::index_sequence_for<A...>{});
}
}  // namespace gs_emu
