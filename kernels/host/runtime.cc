// The fiber scheduler of the host emulator.
//
// `gs_emu_run_block` runs one thread block on the calling OS thread: each CUDA thread is a
// fiber with its own stack; a fiber runs until it reaches a barrier (`__syncthreads`, a
// warp shuffle or vote, `__syncwarp`) or returns, then the scheduler resumes the next
// ready fiber. Stacks are pooled per OS thread and taken only when a fiber first runs, so a
// kernel without barriers uses one stack and costs two context switches per thread.
//
// Schedules: round-robin (fibers start, and resume after every barrier, in arrival order)
// or seeded random (the next fiber is drawn at random from the ready ones), which exposes
// missing barriers and shared-memory reuse races.
#include "gs_emu.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

// GS_EMU_UCONTEXT forces the portable ucontext switch (for testing it on x86-64).
#if defined(__x86_64__) && !defined(GS_EMU_UCONTEXT)
#define GS_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

extern "C" {
__thread uint3 gs_emu_thread_idx;
__thread uint3 gs_emu_block_idx;
__thread uint3 gs_emu_block_dim;
__thread uint3 gs_emu_grid_dim;
__thread void* gs_emu_dyn_smem;

/// One launch, as the Rust side describes it (mirrored in src/backend/emu/ffi.rs).
struct gs_emu_launch {
    const gs_emu_kernel_desc* desc;
    void** params;
    unsigned grid[3];
    unsigned block[3];
    size_t shared_bytes;
    uint64_t seed;
    int random;
    int guard_shared;
};
}

namespace {

constexpr size_t kStackBytes = 64 * 1024;

size_t page_bytes() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

// ---------------------------------------------------------------------------------------
// Context switching: a few lines of assembly on x86-64 (no signal-mask system call),
// ucontext elsewhere.
#if defined(GS_EMU_ASM_SWITCH)
extern "C" void gs_emu_ctx_switch(void** save_sp, void* to_sp);
asm(R"(
    .text
    .p2align 4
    .type gs_emu_ctx_switch,@function
gs_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gs_emu_ctx_switch,.-gs_emu_ctx_switch
)");

struct Ctx {
    void* sp = nullptr;
};

void ctx_make(Ctx* c, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t* ret_slot = (uint64_t*)(top - 16);  // 16-aligned: entry sees rsp % 16 == 8
    ret_slot[1] = 0;                              // end of the frame chain
    ret_slot[0] = (uint64_t)entry;
    uint64_t* sp = ret_slot - 7;                  // rbp rbx r12 r13 r14 r15, then mxcsr/fpcw
    for (int i = 1; i < 7; i++) sp[i] = 0;
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    std::memcpy((char*)sp, &mxcsr, 4);
    std::memcpy((char*)sp + 4, &fpcw, 2);
    c->sp = sp;
}

inline void ctx_swap(Ctx* from, Ctx* to) { gs_emu_ctx_switch(&from->sp, to->sp); }
#else
struct Ctx {
    ucontext_t uc;
};

void ctx_make(Ctx* c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}

inline void ctx_swap(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
#endif

// ---------------------------------------------------------------------------------------
// Memory with a PROT_NONE page right after the last byte (guarded allocations).
struct Guarded {
    static size_t data_pages(size_t bytes) { return (bytes + page_bytes() - 1) / page_bytes(); }
    static void* alloc(size_t bytes) {
        size_t pages = data_pages(bytes);
        size_t total = (pages + 1) * page_bytes();
        void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return nullptr;
        char* guard = (char*)base + pages * page_bytes();
        if (mprotect(guard, page_bytes(), PROT_NONE) != 0) {
            munmap(base, total);
            return nullptr;
        }
        return guard - bytes;
    }
    static void free(void* p, size_t bytes) {
        size_t pages = data_pages(bytes);
        char* base = (char*)p + bytes - pages * page_bytes();
        munmap(base, (pages + 1) * page_bytes());
    }
};

enum FiberState : unsigned char { kNew, kReady, kWaiting, kDone };

struct Fiber {
    Ctx ctx;
    char* stack;
    uint3 tid;
    unsigned lin;
    FiberState state;
};

struct Warp {
    unsigned live;         // lanes that exist and have not returned
    unsigned arrived;      // lanes waiting at the current warp barrier
    unsigned mask;         // lanes the current barrier waits for
    unsigned gen;          // barrier generation (selects the slot buffer)
    unsigned wrote[2];     // lanes that wrote a slot in this generation's buffer
    uint64_t slots[2][32];
};

struct Worker {
    // Stack pool (each stack has a PROT_NONE page below it).
    std::vector<char*> free_stacks;
    std::vector<char*> all_stacks;
    // The block being run.
    const gs_emu_launch* launch = nullptr;
    std::vector<Fiber> fibers;
    std::vector<unsigned> ring;  // ready fibers, a ring of capacity = block size
    size_t head = 0, count = 0;
    Warp warps[32];
    unsigned live = 0;
    unsigned bar_arrived = 0;
    std::vector<unsigned> bar_waiters;
    unsigned bar_gen = 0;
    int bar_acc[2] = {0, 0};
    Fiber* cur = nullptr;
    Ctx sched;
    uint64_t rng = 0;
    // Dynamic shared memory.
    char* dyn = nullptr;
    size_t dyn_bytes = 0;
    bool dyn_guarded = false;

    ~Worker() {
        for (char* s : all_stacks) munmap(s - page_bytes(), kStackBytes + page_bytes());
        release_dyn();
    }

    void release_dyn() {
        if (!dyn) return;
        if (dyn_guarded) Guarded::free(dyn, dyn_bytes);
        else std::free(dyn);
        dyn = nullptr;
        dyn_bytes = 0;
    }

    bool ensure_dyn(size_t bytes, bool guarded) {
        if (bytes == 0) return true;
        if (guarded) {
            if (dyn && dyn_guarded && dyn_bytes == bytes) return true;
            release_dyn();
            dyn = (char*)Guarded::alloc(bytes);
        } else {
            if (dyn && !dyn_guarded && dyn_bytes >= bytes) return true;
            release_dyn();
            dyn = (char*)std::aligned_alloc(256, (bytes + 255) & ~(size_t)255);
        }
        dyn_bytes = bytes;
        dyn_guarded = guarded;
        return dyn != nullptr;
    }

    char* take_stack() {
        if (!free_stacks.empty()) {
            char* s = free_stacks.back();
            free_stacks.pop_back();
            return s;
        }
        size_t total = kStackBytes + page_bytes();
        void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return nullptr;
        mprotect(base, page_bytes(), PROT_NONE);
        char* s = (char*)base + page_bytes();
        all_stacks.push_back(s);
        return s;
    }

    uint64_t next_random() {  // splitmix64
        uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }

    void push_ready(unsigned f) {
        fibers[f].state = kReady;
        ring[(head + count) % ring.size()] = f;
        count++;
    }

    unsigned pop_ready() {
        if (launch->random && count > 1) {
            size_t pick = (head + next_random() % count) % ring.size();
            std::swap(ring[pick], ring[head]);
        }
        unsigned f = ring[head];
        head = (head + 1) % ring.size();
        count--;
        return f;
    }

    void release_block_barrier() {
        bar_arrived = 0;
        bar_gen++;
        bar_acc[bar_gen & 1] = 0;
        for (unsigned f : bar_waiters) push_ready(f);
        bar_waiters.clear();
    }

    static unsigned lanes_of(const Warp& w) { return (unsigned)__builtin_popcount(w.mask & w.live); }

    void release_warp_barrier(Warp& w) {
        unsigned base = (unsigned)(&w - warps) * 32;
        unsigned arrived = w.arrived;
        w.arrived = 0;
        w.gen++;
        w.wrote[w.gen & 1] = 0;
        for (unsigned lane = 0; lane < 32; lane++)
            if (arrived & (1u << lane)) push_ready(base + lane);
    }

    // The running fiber stops here until the scheduler resumes it.
    void suspend() {
        Fiber* f = cur;
        f->state = kWaiting;
        ctx_swap(&f->ctx, &sched);
    }

    void warp_arrive(unsigned mask) {
        Fiber* f = cur;
        Warp& w = warps[f->lin / 32];
        unsigned bit = 1u << (f->lin % 32);
        if (w.arrived == 0) w.mask = mask | bit;
        w.arrived |= bit;
        if ((unsigned)__builtin_popcount(w.arrived) >= lanes_of(w)) release_warp_barrier(w);
        suspend();
    }
};

thread_local Worker tl_worker;
__thread const gs_emu_launch* tl_launch = nullptr;

void fiber_entry() {
    Worker& w = tl_worker;
    w.launch->desc->tramp(w.launch->params);
    Fiber* f = w.cur;
    w.live--;
    Warp& wp = w.warps[f->lin / 32];
    wp.live &= ~(1u << (f->lin % 32));
    if (w.bar_arrived > 0 && w.bar_arrived >= w.live) w.release_block_barrier();
    if (wp.arrived != 0 && (unsigned)__builtin_popcount(wp.arrived) >= Worker::lanes_of(wp))
        w.release_warp_barrier(wp);
    f->state = kDone;
    ctx_swap(&f->ctx, &w.sched);
    std::abort();  // a finished fiber is never resumed
}

// ---------------------------------------------------------------------------------------
// Invalid accesses inside a kernel (guard pages, fiber stack overflow): name the kernel.
struct sigaction g_previous_segv;
struct sigaction g_previous_bus;

// Only async-signal-safe calls from here on: write(2), sigaction, abort and plain code.
void write_str(const char* s) { (void)!write(2, s, strlen(s)); }

// Appends the decimal digits of `v` to `out` (at least 21 bytes of room).
char* put_dec(char* out, unsigned long long v) {
    char tmp[21];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) *out++ = tmp[--n];
    return out;
}

// Appends `0x` and the hex digits of `v` to `out` (at least 19 bytes of room).
char* put_hex(char* out, unsigned long long v) {
    *out++ = '0';
    *out++ = 'x';
    int shift = 60;
    while (shift > 0 && ((v >> shift) & 0xf) == 0) shift -= 4;
    for (; shift >= 0; shift -= 4) *out++ = "0123456789abcdef"[(v >> shift) & 0xf];
    return out;
}

// Hands a fault that is not a kernel's to the handler installed before ours. Ours stays
// installed: a default disposition is taken for this one fault only (the access faults
// again on return and ends the process as it would have without the emulator).
void chain_fault(int sig, siginfo_t* info, void* ctx) {
    const struct sigaction& prev = sig == SIGSEGV ? g_previous_segv : g_previous_bus;
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, ctx);
        return;
    }
    if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
        prev.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
}

void on_fault(int sig, siginfo_t* info, void* ctx) {
    const gs_emu_launch* l = tl_launch;
    if (l == nullptr) {
        chain_fault(sig, info, ctx);
        return;
    }
    // "gradstep emu: invalid memory access at ADDR in kernel `NAME`, block (x, y, z),
    // thread (x, y, z)", built without the (unsafe here) stdio functions.
    char buf[512];
    char* p = buf;
    char* end = buf + sizeof buf - 80;  // room for the numbers after the name
    const char* head = "gradstep emu: invalid memory access at ";
    for (const char* c = head; *c; c++) *p++ = *c;
    p = put_hex(p, (unsigned long long)(uintptr_t)info->si_addr);
    for (const char* c = " in kernel `"; *c; c++) *p++ = *c;
    for (const char* c = l->desc->name; *c && p < end; c++) *p++ = *c;
    const unsigned v[6] = {gs_emu_block_idx.x,  gs_emu_block_idx.y,  gs_emu_block_idx.z,
                           gs_emu_thread_idx.x, gs_emu_thread_idx.y, gs_emu_thread_idx.z};
    const char* sep[6] = {"`, block (", ", ", ", ", "), thread (", ", ", ", "};
    for (int i = 0; i < 6; i++) {
        for (const char* c = sep[i]; *c; c++) *p++ = *c;
        p = put_dec(p, v[i]);
    }
    *p++ = ')';
    *p++ = '\n';
    *p = 0;
    write_str(buf);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGABRT, &dfl, nullptr);
    abort();
}

}  // namespace

extern "C" {

/// Runs block (bx, by, bz) of a launch on the calling thread. Returns 0, or 1 when every
/// remaining fiber waits at a barrier that can never complete, or 2 when memory for stacks
/// or dynamic shared memory could not be had.
int gs_emu_run_block(const gs_emu_launch* l, unsigned bx, unsigned by, unsigned bz) {
    Worker& w = tl_worker;
    unsigned n = l->block[0] * l->block[1] * l->block[2];
    if (!w.ensure_dyn(l->shared_bytes, l->guard_shared != 0)) return 2;
    gs_emu_dyn_smem = l->shared_bytes ? w.dyn : nullptr;
    gs_emu_block_idx = make_uint3(bx, by, bz);
    gs_emu_block_dim = make_uint3(l->block[0], l->block[1], l->block[2]);
    gs_emu_grid_dim = make_uint3(l->grid[0], l->grid[1], l->grid[2]);
    w.launch = l;
    w.fibers.resize(n);
    w.ring.resize(n);
    w.head = 0;
    w.count = 0;
    w.live = n;
    w.bar_arrived = 0;
    w.bar_waiters.clear();
    w.bar_gen = 0;
    w.bar_acc[0] = w.bar_acc[1] = 0;
    unsigned block_lin = bx + l->grid[0] * (by + l->grid[1] * bz);
    w.rng = l->seed ^ ((uint64_t)block_lin * 0xD1B54A32D192ED03ull);
    for (unsigned wi = 0; wi * 32 < n; wi++) {
        Warp& wp = w.warps[wi];
        unsigned lanes = n - wi * 32 < 32 ? n - wi * 32 : 32;
        wp.live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
        wp.arrived = 0;
        wp.mask = 0;
        wp.gen = 0;
        wp.wrote[0] = wp.wrote[1] = 0;
    }
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = w.fibers[i];
        f.stack = nullptr;
        f.lin = i;
        f.tid = make_uint3(i % l->block[0], (i / l->block[0]) % l->block[1],
                           i / (l->block[0] * l->block[1]));
        w.push_ready(i);
        f.state = kNew;
    }
    tl_launch = l;
    int rc = 0;
    while (w.count > 0) {
        unsigned idx = w.pop_ready();
        Fiber& f = w.fibers[idx];
        bool fresh = f.state == kNew;
        if (fresh) {
            f.stack = w.take_stack();
            if (!f.stack) {
                rc = 2;
                break;
            }
            ctx_make(&f.ctx, f.stack, kStackBytes, fiber_entry);
        }
        f.state = kReady;
        w.cur = &f;
        gs_emu_thread_idx = f.tid;
        ctx_swap(&w.sched, &f.ctx);
        if (f.state == kDone) {
            w.free_stacks.push_back(f.stack);
            f.stack = nullptr;
        }
    }
    if (rc == 0 && w.live > 0) rc = 1;
    // Fibers stuck at a barrier are abandoned: their stacks go back to the pool.
    for (unsigned i = 0; i < n; i++) {
        if (w.fibers[i].stack) {
            w.free_stacks.push_back(w.fibers[i].stack);
            w.fibers[i].stack = nullptr;
        }
    }
    w.cur = nullptr;
    w.launch = nullptr;
    tl_launch = nullptr;
    return rc;
}

void gs_emu_syncthreads(void) { (void)gs_emu_syncthreads_count(0); }

int gs_emu_syncthreads_count(int pred) {
    Worker& w = tl_worker;
    unsigned gen = w.bar_gen;
    w.bar_acc[gen & 1] += pred;
    w.bar_waiters.push_back(w.cur->lin);
    w.bar_arrived++;
    if (w.bar_arrived >= w.live) w.release_block_barrier();
    w.suspend();
    return w.bar_acc[gen & 1];
}

void gs_emu_syncwarp(unsigned mask) { tl_worker.warp_arrive(mask); }

uint64_t gs_emu_warp_exchange(unsigned mask, uint64_t value, int src_lane) {
    Worker& w = tl_worker;
    Warp& wp = w.warps[w.cur->lin / 32];
    unsigned buf = wp.gen & 1;
    wp.slots[buf][w.cur->lin % 32] = value;
    wp.wrote[buf] |= 1u << (w.cur->lin % 32);
    w.warp_arrive(mask);
    if (src_lane < 0 || src_lane >= 32 || !(wp.wrote[buf] & (1u << src_lane))) return value;
    return wp.slots[buf][src_lane];
}

unsigned gs_emu_warp_ballot(unsigned mask, int pred) {
    Worker& w = tl_worker;
    Warp& wp = w.warps[w.cur->lin / 32];
    unsigned buf = wp.gen & 1;
    wp.slots[buf][w.cur->lin % 32] = pred != 0;
    wp.wrote[buf] |= 1u << (w.cur->lin % 32);
    w.warp_arrive(mask);
    unsigned bits = 0;
    for (unsigned lane = 0; lane < 32; lane++)
        if ((mask & wp.wrote[buf] & (1u << lane)) && wp.slots[buf][lane]) bits |= 1u << lane;
    return bits;
}

unsigned gs_emu_lane(void) { return tl_worker.cur->lin % 32; }

unsigned gs_emu_active_mask(void) {
    Worker& w = tl_worker;
    return w.warps[w.cur->lin / 32].live;
}

/// Allocates `bytes` (> 0) so that the last byte is followed by a PROT_NONE page.
void* gs_emu_guarded_alloc(size_t bytes) { return Guarded::alloc(bytes); }

/// Frees a block from `gs_emu_guarded_alloc` (same size).
void gs_emu_guarded_free(void* p, size_t bytes) { Guarded::free(p, bytes); }

/// Installs the SIGSEGV/SIGBUS handler that names the kernel running on the faulting
/// thread (other faults go to the previous handler). Idempotent.
void gs_emu_install_fault_handler(void) {
    static bool installed = false;
    if (installed) return;
    installed = true;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
    sigaction(SIGBUS, &sa, &g_previous_bus);
}
}
