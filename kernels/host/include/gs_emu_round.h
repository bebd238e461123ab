// Rounding of doubles to the emulator's 16-bit float types (<cuda_fp16.h> and
// <cuda_bf16.h> stand-ins), once and to nearest even: not through float, whose own
// rounding could move a value onto a tie. Mirrors `round_f64_to_bits` in
// src/base/dtype.rs.
#pragma once

#include <cstdint>
#include <cstring>

namespace gs_emu {

// The bits of `d` rounded to a binary float with E exponent and M significand bits:
// subnormals, overflow to infinity, NaN kept quiet with the top payload bits.
template <int E, int M>
inline uint16_t double_to_bits_rn(double d) {
    uint64_t x;
    std::memcpy(&x, &d, 8);
    const int max_exp = (1 << E) - 1;
    const uint16_t inf = (uint16_t)(max_exp << M);
    uint16_t sign = (uint16_t)((x >> 48) & 0x8000u);
    uint32_t exp = (uint32_t)((x >> 52) & 0x7ffu);
    uint64_t man = x & 0xfffffffffffffull;
    if (exp == 0x7ff) {
        return (uint16_t)(sign | inf | (man ? ((1u << (M - 1)) | (uint32_t)(man >> (52 - M))) : 0u));
    }
    int e = (int)exp - 1023 + (max_exp >> 1);
    if (e >= max_exp) return (uint16_t)(sign | inf);
    uint64_t q, rem, halfway;
    if (e <= 0) {
        if (e < -M) return sign;  // below half the smallest subnormal: rounds to zero
        uint64_t m = man | (1ull << 52);
        uint32_t shift = (uint32_t)(53 - M - e);
        q = m >> shift;
        rem = m & ((1ull << shift) - 1ull);
        halfway = 1ull << (shift - 1);
    } else {
        q = ((uint64_t)e << M) | (man >> (52 - M));
        rem = man & ((1ull << (52 - M)) - 1ull);
        halfway = 1ull << (51 - M);
    }
    if (rem > halfway || (rem == halfway && (q & 1u))) q++;  // may carry into inf: correct
    return (uint16_t)(sign | q);
}

}  // namespace gs_emu
