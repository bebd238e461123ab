// Batched matrix product with shared-memory tiles, for devices without a vendor GEMM
// (the emulator). Operands are strided views, so transposed and broadcast (batch
// stride 0) operands need no copy. Accumulates in the compute type (f32 for f16).
#include "common.cuh"

// Edge of the square tiles; blockDim is (TILE, TILE).
#define TILE 16

// Sizes and element strides of C[b] = A[b] @ B[b], mirrored by `GemmParams` in Rust
// (src/backend/gpu/ops/matmul.rs). A[b, i, p] is at a[b * a_batch + i * a_row + p * a_col];
// B likewise; C is dense [batch, m, n].
struct GemmParams {
    u64 m, n, k, batch;
    u64 a_batch, a_row, a_col;
    u64 b_batch, b_row, b_col;
};

// Each block computes TILE x TILE outputs at a time, walking k in TILE-wide steps through
// shared memory; blocks stride over tiles and batches (grid-stride in x, y and z).
template <typename T>
__device__ void matmul_tiled(const T* a, const T* b, T* c, GemmParams g) {
    typedef typename Compute<T>::type C;
    __shared__ C as[TILE][TILE];
    __shared__ C bs[TILE][TILE + 1];
    const unsigned tx = threadIdx.x, ty = threadIdx.y;
    for (u64 z = blockIdx.z; z < g.batch; z += gridDim.z) {
        const T* ab = a + z * g.a_batch;
        const T* bb = b + z * g.b_batch;
        for (u64 i0 = (u64)blockIdx.y * TILE; i0 < g.m; i0 += (u64)gridDim.y * TILE) {
            for (u64 j0 = (u64)blockIdx.x * TILE; j0 < g.n; j0 += (u64)gridDim.x * TILE) {
                const u64 i = i0 + ty, j = j0 + tx;
                C acc = 0;
                for (u64 p0 = 0; p0 < g.k; p0 += TILE) {
                    const u64 pa = p0 + tx, pb = p0 + ty;
                    as[ty][tx] = (i < g.m && pa < g.k) ? gs_load(ab, i * g.a_row + pa * g.a_col) : (C)0;
                    bs[ty][tx] = (pb < g.k && j < g.n) ? gs_load(bb, pb * g.b_row + j * g.b_col) : (C)0;
                    __syncthreads();
#pragma unroll
                    for (int q = 0; q < TILE; ++q) acc += as[ty][q] * bs[q][tx];
                    __syncthreads();
                }
                if (i < g.m && j < g.n) gs_store(c, (z * g.m + i) * g.n + j, acc);
            }
        }
    }
}

extern "C" __global__ void matmul_f16(const __half* a, const __half* b, __half* c, GemmParams g) { matmul_tiled(a, b, c, g); }
extern "C" __global__ void matmul_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* c, GemmParams g) { matmul_tiled(a, b, c, g); }
extern "C" __global__ void matmul_f32(const float* a, const float* b, float* c, GemmParams g) { matmul_tiled(a, b, c, g); }
extern "C" __global__ void matmul_f64(const double* a, const double* b, double* c, GemmParams g) { matmul_tiled(a, b, c, g); }
