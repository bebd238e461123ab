// Multi-tensor machinery of the optimizers, mirrored in Rust by src/optim/multi_tensor.rs.
//
// A launch walks a list of tensors cut into chunks of MT_CHUNK elements. Chunk c belongs
// to the tensor t with chunk_start[t] <= c < chunk_start[t+1] (binary search), so any
// number of blocks can cover any number of chunks with a grid-stride loop. Sizes and
// indices are 64-bit.
#pragma once

#include "common.cuh"

// Elements per chunk.
#define MT_CHUNK 65536ULL
// Threads per block of every multi-tensor kernel.
#define MT_THREADS 512

// ---- by-value table: zeroing ---------------------------------------------------------

// Tensors one zero launch holds: the table stays under the 4 KB argument limit.
#define MT_ZERO_MAX 200

// Passed by value. Sizes are in bytes; chunks are MT_CHUNK * 4 bytes.
struct MtZeroTable {
    u64 ptr[MT_ZERO_MAX];
    u64 bytes[MT_ZERO_MAX];
    unsigned int chunk_start[MT_ZERO_MAX + 1];
    unsigned int ntensors;
};

// ---- device-side table: optimizer steps ----------------------------------------------

// One tensor of an optimizer group (built on the host, uploaded once while the set of
// pointers is unchanged). Absent pointers are 0.
struct MtTensor {
    u64 p;           // parameter
    u64 g;           // gradient
    u64 b0;          // momentum_buffer or exp_avg
    u64 b1;          // exp_avg_sq
    u64 b2;          // max_exp_avg_sq
    u64 master;      // f32 master weights (f16 params) or 0
    u64 tmp;         // compute-type scratch of the foreach form, or 0
    u64 step;        // float* step count (Adam), or 0
    u64 numel;       // elements
    u64 chunk_start; // first chunk of this tensor in the table's numbering
    unsigned int nchunks;  // chunks of this tensor (at least 1, so empty tensors count steps)
    unsigned int flags;    // MT_FIRST: SGD's momentum buffer takes the gradient as is
};

#define MT_FIRST 1u

// The table entry owning chunk c among tab[0..count).
__device__ __forceinline__ unsigned int mt_find(const MtTensor* tab, unsigned int count, u64 c) {
    unsigned int lo = 0, hi = count;
    while (hi - lo > 1) {
        unsigned int mid = (lo + hi) / 2;
        if (tab[mid].chunk_start <= c) lo = mid; else hi = mid;
    }
    return lo;
}

// The elements [begin, end) of table chunk c, which belongs to entry e.
__device__ __forceinline__ void mt_chunk_range(const MtTensor& e, u64 c, u64& begin, u64& end) {
    begin = (c - e.chunk_start) * MT_CHUNK;
    end = begin + MT_CHUNK < e.numel ? begin + MT_CHUNK : e.numel;
}

// ---- 16-byte vector access -----------------------------------------------------------

// 16 bytes, for vector loads and stores of any element type.
struct alignas(16) MtVec16 { u64 lo, hi; };

// Elements of T per 16-byte vector.
template <typename T> struct MtVec { static const int N = 16 / sizeof(T); };

// Loads `n` elements of p[i..] into `out` (compute type), vectorised when `vec`.
template <typename T, typename C, int N>
__device__ __forceinline__ void mt_load(const T* p, u64 i, int n, bool vec, C* out) {
    if (vec) {
        MtVec16 raw = *reinterpret_cast<const MtVec16*>(p + i);
        T tmp[N];
        memcpy(tmp, &raw, 16);
        for (int k = 0; k < N; ++k) out[k] = (C)gs_load(tmp, k);
    } else {
        for (int k = 0; k < n; ++k) out[k] = (C)gs_load(p, i + k);
    }
}

// Stores `n` compute values into p[i..], vectorised when `vec`.
template <typename T, typename C, int N>
__device__ __forceinline__ void mt_store(T* p, u64 i, int n, bool vec, const C* in) {
    if (vec) {
        T tmp[N];
        for (int k = 0; k < N; ++k) gs_store(tmp, k, in[k]);
        MtVec16 raw;
        memcpy(&raw, tmp, 16);
        *reinterpret_cast<MtVec16*>(p + i) = raw;
    } else {
        for (int k = 0; k < n; ++k) gs_store(p, i + k, in[k]);
    }
}

__device__ __forceinline__ bool mt_al(u64 p) { return (p & 15) == 0; }
