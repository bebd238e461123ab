// Host stand-in for CUDA's <cuda_fp16.h>, used when kernels/*.cu are compiled for the
// host emulator. `__half` is an IEEE binary16 stored as its bits; arithmetic goes through
// float (exact for every binary16 value), conversions to half round to nearest even.
#pragma once

#include <cstdint>
#include <cstring>
#include <cmath>

#include "gs_emu_round.h"

namespace gs_emu {

// binary16 bits -> float (exact).
inline float half_bits_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);  // inf, NaN (payload kept)
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise.
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while ((man & 0x400u) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// float -> binary16 bits, round to nearest, ties to even.
inline uint16_t float_to_half_bits_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) {  // inf or NaN (quiet NaN, keeping the top payload bits)
        return (uint16_t)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0u));
    }
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);  // overflow to inf
    if (e <= 0) {
        // Subnormal half (or zero): shift the full significand right.
        if (e < -10) return sign;  // below half the smallest subnormal: rounds to zero
        uint32_t m = man | 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;  // may carry into inf: correct
    return (uint16_t)(sign | q);
}

// double -> binary16 bits, rounded once.
inline uint16_t double_to_half_bits_rn(double d) { return double_to_bits_rn<5, 10>(d); }

}  // namespace gs_emu

struct __half {
    uint16_t __x;
    __half() = default;
    __half(float f) : __x(gs_emu::float_to_half_bits_rn(f)) {}
    __half(double d) : __x(gs_emu::double_to_half_bits_rn(d)) {}
    __half(int i) : __x(gs_emu::float_to_half_bits_rn((float)i)) {}
    operator float() const { return gs_emu::half_bits_to_float(__x); }
    __half& operator+=(__half o) { return *this = __half((float)*this + (float)o); }
    __half& operator-=(__half o) { return *this = __half((float)*this - (float)o); }
    __half& operator*=(__half o) { return *this = __half((float)*this * (float)o); }
    __half& operator/=(__half o) { return *this = __half((float)*this / (float)o); }
};

struct alignas(4) __half2 {
    __half x, y;
    __half2() = default;
    __half2(__half a, __half b) : x(a), y(b) {}
};

typedef __half half;
typedef __half2 half2;

struct __half_raw { uint16_t x; };

inline __half gs_emu_half_from_bits(uint16_t b) { __half h; h.__x = b; return h; }

inline __half operator+(__half a, __half b) { return __half((float)a + (float)b); }
inline __half operator-(__half a, __half b) { return __half((float)a - (float)b); }
inline __half operator*(__half a, __half b) { return __half((float)a * (float)b); }
inline __half operator/(__half a, __half b) { return __half((float)a / (float)b); }
inline __half operator-(__half a) { return gs_emu_half_from_bits((uint16_t)(a.__x ^ 0x8000u)); }
inline bool operator==(__half a, __half b) { return (float)a == (float)b; }
inline bool operator!=(__half a, __half b) { return (float)a != (float)b; }
inline bool operator<(__half a, __half b) { return (float)a < (float)b; }
inline bool operator<=(__half a, __half b) { return (float)a <= (float)b; }
inline bool operator>(__half a, __half b) { return (float)a > (float)b; }
inline bool operator>=(__half a, __half b) { return (float)a >= (float)b; }

inline float __half2float(__half h) { return gs_emu::half_bits_to_float(h.__x); }
inline __half __float2half(float f) { return gs_emu_half_from_bits(gs_emu::float_to_half_bits_rn(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __double2half(double d) { return gs_emu_half_from_bits(gs_emu::double_to_half_bits_rn(d)); }
inline __half __int2half_rn(int i) { return __float2half((float)i); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half(a), __float2half(b)); }
inline __half2 __float2half2_rn(float a) { return __floats2half2_rn(a, a); }

struct float2;
inline float2 __half22float2(__half2 h);
inline __half2 __float22half2_rn(float2 f);

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __ushort_as_half(unsigned short b) { return gs_emu_half_from_bits(b); }
inline __half __short_as_half(short b) { return gs_emu_half_from_bits((uint16_t)b); }

inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hsub(__half a, __half b) { return a - b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __half __hdiv(__half a, __half b) { return a / b; }
inline __half __hneg(__half a) { return -a; }
inline __half __habs(__half a) { return gs_emu_half_from_bits((uint16_t)(a.__x & 0x7fffu)); }
// Fused multiply-add: the product of two halves is exact in double; the sum is rounded
// to double, then to half (may differ from a single rounding in rare ties).
inline __half __hfma(__half a, __half b, __half c) {
    return __float2half((float)((double)(float)a * (double)(float)b + (double)(float)c));
}
inline __half __hmax(__half a, __half b) { return (float)a < (float)b ? b : a; }
inline __half __hmin(__half a, __half b) { return (float)b < (float)a ? b : a; }
inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }
inline bool __heq(__half a, __half b) { return a == b; }
inline bool __hlt(__half a, __half b) { return a < b; }
inline bool __hgt(__half a, __half b) { return a > b; }

inline __half2 __hadd2(__half2 a, __half2 b) { return __half2(a.x + b.x, a.y + b.y); }
inline __half2 __hsub2(__half2 a, __half2 b) { return __half2(a.x - b.x, a.y - b.y); }
inline __half2 __hmul2(__half2 a, __half2 b) { return __half2(a.x * b.x, a.y * b.y); }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
    return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
inline __half2 operator+(__half2 a, __half2 b) { return __hadd2(a, b); }
inline __half2 operator-(__half2 a, __half2 b) { return __hsub2(a, b); }
inline __half2 operator*(__half2 a, __half2 b) { return __hmul2(a, b); }
