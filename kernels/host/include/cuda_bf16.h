// Host stand-in for CUDA's <cuda_bf16.h>, used when kernels/*.cu are compiled for the
// host emulator. `__nv_bfloat16` is a bfloat16 (f32's sign and exponent, 7 stored
// significand bits) kept as its bits; arithmetic goes through float (exact for every
// bfloat16 value), conversions to bfloat16 round to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

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

// double -> bfloat16 bits, rounded once (not through float, whose own rounding could
// move a value onto a tie).
inline uint16_t double_to_bf16_bits_rn(double d) {
    uint64_t x;
    std::memcpy(&x, &d, 8);
    uint16_t sign = (uint16_t)((x >> 48) & 0x8000u);
    uint32_t exp = (uint32_t)((x >> 52) & 0x7ffu);
    uint64_t man = x & 0xfffffffffffffull;
    if (exp == 0x7ff) {  // inf or NaN (quiet NaN, keeping the top payload bits)
        return (uint16_t)(sign | 0x7f80u | (man ? (0x40u | (uint32_t)(man >> 45)) : 0u));
    }
    int e = (int)exp - 1023 + 127;
    if (e >= 0xff) return (uint16_t)(sign | 0x7f80u);  // overflow to inf
    uint64_t q, rem, halfway;
    if (e <= 0) {
        // Subnormal bfloat16 (or zero): shift the full significand right.
        if (e < -8) return sign;  // below half the smallest subnormal: rounds to zero
        uint64_t m = man | (1ull << 52);
        uint32_t shift = (uint32_t)(46 - e);
        q = m >> shift;
        rem = m & ((1ull << shift) - 1ull);
        halfway = 1ull << (shift - 1);
    } else {
        q = ((uint64_t)e << 7) | (man >> 45);
        rem = man & ((1ull << 45) - 1ull);
        halfway = 1ull << 44;
    }
    if (rem > halfway || (rem == halfway && (q & 1u))) q++;  // may carry into inf: correct
    return (uint16_t)(sign | q);
}

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
