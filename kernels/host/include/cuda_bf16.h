// Host stand-in for CUDA's <cuda_bf16.h>, used when kernels/*.cu are compiled for the
// host emulator. `__nv_bfloat16` is a bfloat16 (f32's sign and exponent, 7 stored
// significand bits) kept as its bits; arithmetic goes through float (exact for every
// bfloat16 value), conversions to bfloat16 round to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

#include "gs_emu_round.h"

namespace gs_emu {

// bfloat16 bits -> float (exact: the high half of the float).
inline float bf16_bits_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// float -> bfloat16 bits, round to nearest, ties to even; NaN stays a quiet NaN.
inline uint16_t float_to_bf16_bits_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    return (uint16_t)((x + 0x7fffu + lsb) >> 16);  // may carry into inf: correct
}

// double -> bfloat16 bits, rounded once.
inline uint16_t double_to_bf16_bits_rn(double d) { return double_to_bits_rn<8, 7>(d); }

}  // namespace gs_emu

struct __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(gs_emu::float_to_bf16_bits_rn(f)) {}
    __nv_bfloat16(double d) : __x(gs_emu::double_to_bf16_bits_rn(d)) {}
    __nv_bfloat16(int i) : __x(gs_emu::float_to_bf16_bits_rn((float)i)) {}
    operator float() const { return gs_emu::bf16_bits_to_float(__x); }
};

typedef __nv_bfloat16 nv_bfloat16;

inline __nv_bfloat16 gs_emu_bf16_from_bits(uint16_t b) {
    __nv_bfloat16 h;
    h.__x = b;
    return h;
}

inline float __bfloat162float(__nv_bfloat16 h) { return gs_emu::bf16_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return gs_emu_bf16_from_bits(gs_emu::float_to_bf16_bits_rn(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return gs_emu_bf16_from_bits(gs_emu::double_to_bf16_bits_rn(d)); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return gs_emu_bf16_from_bits(b); }
