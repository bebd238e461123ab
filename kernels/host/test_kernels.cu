// Host-only kernels that test the emulator itself (tests/emu_shim.rs, tests/emu_sanitize.rs).
// They are compiled into the emulator only (never to PTX), in their own kernel table.
#include <cuda_fp16.h>

typedef unsigned long long u64;

__device__ __forceinline__ unsigned linear_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

__device__ __forceinline__ unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }

__device__ __forceinline__ unsigned linear_bid() {
    return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
}

// Three barrier-separated phases over one static shared array: every thread reads its two
// neighbours' values of the current phase. out[block][thread] = sum over phases.
extern "C" __global__ void emu_test_barrier_phases(int* out) {
    __shared__ int s[1024];
    unsigned t = linear_tid(), n = block_threads(), b = linear_bid();
    int acc = 0;
    for (int phase = 0; phase < 3; phase++) {
        s[t] = (int)(t * 3 + 1) * (phase + 1) + (int)b;
        __syncthreads();
        acc += s[(t + 1) % n] + s[(t + n - 1) % n];
        __syncthreads();
    }
    out[b * n + t] = acc;
}

// Shuffles over full warps: out[4 i + k] = xor 5, down 3, index (7 lane mod 32), up 2 of
// in[i]; dsum[i] = the warp's sum of (double)in by an xor butterfly; ballot[i] = ballot of
// odd values; any_all[i] = any(in > 900) | 2 * all(in >= 0).
extern "C" __global__ void emu_test_shuffles(const int* in, int* out, double* dsum, unsigned* ballot,
                                             int* any_all) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned lane = threadIdx.x % 32;
    int v = in[i];
    out[4 * i + 0] = __shfl_xor_sync(0xffffffffu, v, 5);
    out[4 * i + 1] = __shfl_down_sync(0xffffffffu, v, 3);
    out[4 * i + 2] = __shfl_sync(0xffffffffu, v, (int)((lane * 7) % 32));
    out[4 * i + 3] = __shfl_up_sync(0xffffffffu, v, 2);
    double d = (double)v;
    for (int m = 16; m > 0; m >>= 1) d += __shfl_xor_sync(0xffffffffu, d, m);
    dsum[i] = d;
    ballot[i] = __ballot_sync(0xffffffffu, v & 1);
    any_all[i] = __any_sync(0xffffffffu, v > 900) | (2 * __all_sync(0xffffffffu, v >= 0));
}

// Every thread of every block adds to shared counters and raises a maximum.
extern "C" __global__ void emu_test_atomics(float* f, double* d, int* i, unsigned long long* u, int* mx) {
    unsigned g = linear_bid() * block_threads() + linear_tid();
    atomicAdd(f, 1.0f);
    atomicAdd(d, 0.5);
    atomicAdd(i, 2);
    atomicAdd(u, 3ull);
    atomicMax(mx, (int)g);
}

// Reverses each block's slice through static shared memory.
extern "C" __global__ void emu_test_reverse_static(const float* in, float* out) {
    __shared__ float buf[1024];
    unsigned t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
    buf[t] = in[base + t];
    __syncthreads();
    out[base + t] = buf[n - 1 - t];
}

// Reverses each block's slice through dynamic shared memory (blockDim.x floats), and
// checks that the dynamic area is 16-byte aligned.
extern "C" __global__ void emu_test_reverse_dynamic(const float* in, float* out, int* misaligned) {
    extern __shared__ float dyn[];
    unsigned t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
    if (((unsigned long long)dyn & 15) != 0) *misaligned = 1;
    dyn[t] = in[base + t];
    __syncthreads();
    out[base + t] = dyn[n - 1 - t];
}

// Block sum with an upward tree into the last element: each step reads a lower index.
// The result is written by the last thread. With `sync_after_store == 0` the barrier
// between the stores and the tree is missing: a round-robin schedule (threads in index
// order) still gives the right sum, a random schedule does not.
template <bool SyncAfterStore>
__device__ void block_sum_up(const float* in, float* out) {
    __shared__ float s[1024];
    unsigned t = threadIdx.x, n = blockDim.x;  // n: a power of two
    s[t] = in[blockIdx.x * n + t];
    if (SyncAfterStore) __syncthreads();
    for (unsigned stride = 1; stride < n; stride *= 2) {
        if ((t + 1) % (2 * stride) == 0) s[t] += s[t - stride];
        __syncthreads();
    }
    if (t == n - 1) out[blockIdx.x] = s[t];
}

extern "C" __global__ void emu_test_block_sum(const float* in, float* out) { block_sum_up<true>(in, out); }
extern "C" __global__ void emu_test_block_sum_nosync(const float* in, float* out) {
    block_sum_up<false>(in, out);
}

// Half conversions.
extern "C" __global__ void emu_test_half_to_float(const unsigned short* bits, float* out, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __half2float(__ushort_as_half(bits[i]));
}
extern "C" __global__ void emu_test_float_to_half(const float* in, unsigned short* out, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __half_as_ushort(__float2half_rn(in[i]));
}
// Pairs through __floats2half2_rn and back through __half22float2.
extern "C" __global__ void emu_test_half2_roundtrip(const float* in, __half2* packed, float* back, u64 pairs) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < pairs) {
        __half2 h = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
        packed[i] = h;
        float2 f = __half22float2(h);
        back[2 * i] = f.x;
        back[2 * i + 1] = f.y;
    }
}

// Half the first warp waits at __syncthreads while the other half waits in a shuffle:
// a deadlock the scheduler must report.
extern "C" __global__ void emu_test_deadlock(int* out) {
    int v = (int)threadIdx.x;
    if (threadIdx.x < 16) __syncthreads();
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

// Writes out[0..=n]: one element past the end.
extern "C" __global__ void emu_test_write_past_end(float* out, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;
}

// Writes one float past the end of the dynamic shared memory (blockDim.x floats).
extern "C" __global__ void emu_test_shared_past_end(float* out) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x + 1] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = dyn[threadIdx.x];
}

// Costs: a kernel without barriers, and one that crosses `rounds` barriers.
extern "C" __global__ void emu_test_empty() {}
extern "C" __global__ void emu_test_barriers(int rounds) {
    for (int r = 0; r < rounds; r++) __syncthreads();
}

// ---- fault handling outside kernels (tests/emu_sanitize.rs) ----------------------------
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t g_recovered = 0;

// A program's own SIGSEGV handler that repairs the access (as garbage collectors and
// other runtimes do): the faulting page is made readable and the access retried.
static void recovering_handler(int, siginfo_t* info, void*) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    mprotect((void*)((uintptr_t)info->si_addr & ~(page - 1)), page, PROT_READ | PROT_WRITE);
    g_recovered = g_recovered + 1;
}

// Installs `recovering_handler` for SIGSEGV (call before the emulator installs its own).
extern "C" void gs_emu_test_install_recovering_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = recovering_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
}

// Reads a PROT_NONE page outside any kernel; returns how many faults were repaired so far.
extern "C" int gs_emu_test_fault_outside_kernel(void) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void* p = mmap(nullptr, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    volatile int* q = (volatile int*)p;
    int v = *q;
    munmap(p, page);
    return (int)g_recovered + v;
}
