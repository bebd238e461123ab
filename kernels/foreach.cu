// Multi-tensor zeroing (`_foreach_zero_`): one launch zeroes up to MT_ZERO_MAX tensors of
// any dtype (sizes in bytes), 16-byte stores where aligned.
#include "multi_tensor.cuh"

// Bytes per chunk of the zero kernel.
#define MT_ZERO_CHUNK (MT_CHUNK * 4ULL)

extern "C" __global__ void foreach_zero(MtZeroTable t) {
    u64 total = t.chunk_start[t.ntensors];
    for (u64 c = blockIdx.x; c < total; c += gridDim.x) {
        unsigned int lo = 0, hi = t.ntensors;
        while (hi - lo > 1) {
            unsigned int mid = (lo + hi) / 2;
            if (t.chunk_start[mid] <= c) lo = mid; else hi = mid;
        }
        u64 begin = (c - t.chunk_start[lo]) * MT_ZERO_CHUNK;
        u64 end = begin + MT_ZERO_CHUNK;
        if (end > t.bytes[lo]) end = t.bytes[lo];
        unsigned char* base = (unsigned char*)t.ptr[lo];
        // Bytes before the first 16-byte boundary, whole vectors, then the tail.
        u64 head = (16 - ((u64)(base + begin) & 15)) & 15;
        if (head > end - begin) head = end - begin;
        for (u64 i = begin + threadIdx.x; i < begin + head; i += blockDim.x) base[i] = 0;
        u64 vstart = begin + head;
        u64 nvec = (end - vstart) / 16;
        MtVec16 z;
        z.lo = 0;
        z.hi = 0;
        for (u64 v = threadIdx.x; v < nvec; v += blockDim.x)
            reinterpret_cast<MtVec16*>(base + vstart)[v] = z;
        for (u64 i = vstart + nvec * 16 + threadIdx.x; i < end; i += blockDim.x) base[i] = 0;
    }
}

// Non-finite check of the gradient scaler: sets *found_inf to 1 when any gradient
// element of the table is infinite or NaN (grads in b.g of each entry).
template <typename T>
__device__ void check_finite(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, float* found_inf) {
    for (u64 c = c0 + blockIdx.x; c < c1; c += gridDim.x) {
        unsigned int ti = mt_find(tab, count, c);
        const MtTensor& e = tab[ti];
        u64 begin, end;
        mt_chunk_range(e, c, begin, end);
        const T* g = (const T*)e.g;
        bool bad = false;
        for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
            float v = (float)gs_load(g, i);
            bad |= !(v - v == 0.0f);
        }
        if (bad) *found_inf = 1.0f;
    }
}

extern "C" __global__ void foreach_check_finite_f32(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, float* found_inf) { check_finite<float>(tab, count, c0, c1, found_inf); }
extern "C" __global__ void foreach_check_finite_f16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, float* found_inf) { check_finite<__half>(tab, count, c0, c1, found_inf); }
extern "C" __global__ void foreach_check_finite_bf16(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, float* found_inf) { check_finite<__nv_bfloat16>(tab, count, c0, c1, found_inf); }
extern "C" __global__ void foreach_check_finite_f64(const MtTensor* tab, unsigned int count, u64 c0, u64 c1, float* found_inf) { check_finite<double>(tab, count, c0, c1, found_inf); }
