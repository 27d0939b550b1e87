// cuda_sim.h: run CUDA C kernels on the CPU (gpucnn's cuda-sim backend).
//
// The loader (loader.py) compiles each kernels/*.cu with the host C++ compiler, force-including
// this header, and adds one exported launcher per kernel. What it emulates:
//   - threadIdx / blockIdx / blockDim / gridDim, warpSize, the __global__ / __device__ /
//     __forceinline__ / __restrict__ / __launch_bounds__ / __align__ qualifiers;
//   - __shared__ (one copy per block) and extern __shared__ (the launch's dynamic size; the
//     loader rewrites the declaration into a call to dynamic_shared<T>());
//   - __syncthreads() as a real barrier: every thread of a block is a fiber with its own stack,
//     and a barrier switches to the next fiber until all live threads have arrived;
//   - warp shuffles (__shfl_sync, _up, _down, _xor), __syncwarp, which wait for every live
//     lane of the warp; atomics; the math intrinsics and vector types the kernels use.
// Blocks run in parallel on a pool of worker threads (GPUCNN_SIM_THREADS, default: all cores),
// each block wholly on one worker. A block whose threads wait at barriers that the others never
// reach is reported as a deadlock instead of hanging.
// Debugging: printf works inside kernels, gdb steps through them (build with
// GPUCNN_SIM_DEBUG=1 for -O0 -g), and GPUCNN_SIM_SANITIZE=1 adds AddressSanitizer and UBSan.
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#define GPUCNN_SIM_EXPORT extern "C" __attribute__((visibility("default")))

// ----------------------------------------------------------------------------- vector types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace gpucnn_sim {

struct Launch {  // laid out as loader.py's ctypes structure
    unsigned int grid[3];
    unsigned int block[3];
    unsigned long long shared_mem;
};

inline thread_local uint3 thread_idx, block_idx;
inline thread_local dim3 block_dim, grid_dim;

[[noreturn]] inline void fail(const char* what);

// ----------------------------------------------------------------------------- context switch
#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save and
// continues on the stack `load` (System V ABI: rbx, rbp, r12-r15 are callee-saved).
extern "C" void gpucnn_sim_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .hidden gpucnn_sim_switch
    .type gpucnn_sim_switch, @function
gpucnn_sim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gpucnn_sim_switch, .-gpucnn_sim_switch
)");
#endif

struct Fiber {
    char* stack = nullptr;  // lowest usable address (a guard page lies below it)
    size_t stack_size = 0;
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    uint3 tid{0, 0, 0};
    unsigned linear = 0;
    bool done = false;
    void* asan_fake_stack = nullptr;
};

struct BlockRunner;
inline thread_local BlockRunner* runner = nullptr;

struct BlockRunner {
    static constexpr size_t kStackSize = 256 * 1024;
    std::vector<Fiber> fibers;
    std::vector<char*> mappings;
    std::vector<unsigned char> dynamic_shared;
    const std::function<void()>* body = nullptr;
#if defined(__x86_64__)
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler_context;
#endif
    void* scheduler_fake_stack = nullptr;
    const void* scheduler_stack_bottom = nullptr;
    size_t scheduler_stack_size = 0;
    unsigned current = 0;
    unsigned live = 0;
    // block barrier
    unsigned block_arrived = 0;
    unsigned long long block_generation = 0;
    // warp barriers and shuffle slots
    std::vector<unsigned> warp_live, warp_arrived;
    std::vector<unsigned long long> warp_generation;
    std::vector<unsigned long long> shuffle_slots;
    unsigned long long events = 0;  // barrier arrivals and thread exits: progress, for deadlocks
    std::string error;

    ~BlockRunner() {
        for (char* m : mappings) munmap(m, kStackSize + page());
    }

    static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

    void ensure_fibers(unsigned count) {
        while (fibers.size() < count) {
            char* m = (char*)mmap(nullptr, kStackSize + page(), PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (m == MAP_FAILED) fail("cannot map a fiber stack");
            mprotect(m, page(), PROT_NONE);  // a stack overflow faults instead of corrupting memory
            mappings.push_back(m);
            Fiber f;
            f.stack = m + page();
            f.stack_size = kStackSize;
            fibers.push_back(f);
        }
    }

    static void entry();

    void start(Fiber& f) {
#if defined(__x86_64__)
        // a fresh stack that "returns" into entry() with the ABI's alignment: rsp % 16 == 8 on entry
        uintptr_t top = ((uintptr_t)(f.stack + f.stack_size)) & ~(uintptr_t)15;
        void** sp = (void**)top;
        *--sp = nullptr;             // entry()'s return address: it never returns
        *--sp = (void*)&entry;       // popped by `ret` in gpucnn_sim_switch
        for (int r = 0; r < 6; ++r) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
        f.sp = sp;
#else
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = f.stack_size;
        f.context.uc_link = nullptr;
        makecontext(&f.context, (void (*)())&entry, 0);
#endif
    }

    void switch_to_fiber(Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_start_switch_fiber(&scheduler_fake_stack, f.stack, f.stack_size);
#endif
#if defined(__x86_64__)
        gpucnn_sim_switch(&scheduler_sp, f.sp);
#else
        swapcontext(&scheduler_context, &f.context);
#endif
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#endif
    }

    void switch_to_scheduler(Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_start_switch_fiber(f.done ? nullptr : &f.asan_fake_stack, scheduler_stack_bottom,
                                       scheduler_stack_size);
#endif
#if defined(__x86_64__)
        gpucnn_sim_switch(&f.sp, scheduler_sp);
#else
        swapcontext(&f.context, &scheduler_context);
#endif
        after_switch_in(f);
    }

    void after_switch_in(Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_finish_switch_fiber(f.asan_fake_stack, &scheduler_stack_bottom, &scheduler_stack_size);
#else
        (void)f;
#endif
        thread_idx = f.tid;
    }

    // Run one block: every thread a fiber, round robin, until all have returned.
    bool run_block(const Launch& launch, uint3 block, const std::function<void()>& kernel_body) {
        const unsigned bx = launch.block[0], by = launch.block[1], bz = launch.block[2];
        const unsigned count = bx * by * bz;
        ensure_fibers(count);
        body = &kernel_body;
        block_idx = block;
        if (dynamic_shared.size() < launch.shared_mem) dynamic_shared.resize(launch.shared_mem);
        const unsigned warps = (count + 31) / 32;
        warp_live.assign(warps, 0);
        warp_arrived.assign(warps, 0);
        warp_generation.assign(warps, 0);
        shuffle_slots.assign((size_t)warps * 32, 0);
        for (unsigned i = 0; i < count; ++i) {
            Fiber& f = fibers[i];
            f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
            f.linear = i;
            f.done = false;
            f.asan_fake_stack = nullptr;
            warp_live[i / 32]++;
            start(f);
        }
        live = count;
        block_arrived = 0;
        block_generation = 0;
        while (live > 0) {
            const unsigned long long before = events;
            for (unsigned i = 0; i < count; ++i) {
                if (fibers[i].done) continue;
                current = i;
                thread_idx = fibers[i].tid;
                switch_to_fiber(fibers[i]);
            }
            if (live > 0 && events == before) {
                char message[256];
                std::snprintf(message, sizeof message,
                              "deadlock in block (%u, %u, %u): %u threads wait at a barrier (__syncthreads or a "
                              "warp shuffle) that the other threads of the block or warp never reach",
                              block.x, block.y, block.z, live);
                error = message;
                return false;
            }
        }
        return true;
    }

    Fiber& self() { return fibers[current]; }

    // Yield until `generation` moves on.
    void wait_for(const unsigned long long& generation, unsigned long long seen) {
        Fiber& f = self();
        while (generation == seen) switch_to_scheduler(f);
    }

    void syncthreads() {
        const unsigned long long seen = block_generation;
        ++events;
        if (++block_arrived == live) {
            block_arrived = 0;
            ++block_generation;
            return;
        }
        wait_for(block_generation, seen);
    }

    void syncwarp() {
        const unsigned warp = self().linear / 32;
        const unsigned long long seen = warp_generation[warp];
        ++events;
        if (++warp_arrived[warp] == warp_live[warp]) {
            warp_arrived[warp] = 0;
            ++warp_generation[warp];
            return;
        }
        wait_for(warp_generation[warp], seen);
    }

    void thread_exited() {
        Fiber& f = self();
        f.done = true;
        --live;
        ++events;
        const unsigned warp = f.linear / 32;
        --warp_live[warp];
        // threads that have left count as arrived, as on the GPU
        if (live > 0 && block_arrived == live) {
            block_arrived = 0;
            ++block_generation;
        }
        if (warp_live[warp] > 0 && warp_arrived[warp] == warp_live[warp]) {
            warp_arrived[warp] = 0;
            ++warp_generation[warp];
        }
    }

    template <class T>
    T shuffle(T value, unsigned source_lane, unsigned width) {
        static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
        const unsigned linear = self().linear, warp = linear / 32, lane = linear % 32;
        unsigned long long bits = 0;
        std::memcpy(&bits, &value, sizeof(T));
        shuffle_slots[(size_t)warp * 32 + lane] = bits;
        syncwarp();  // every lane has published its value
        const unsigned base = lane & ~(width - 1);
        const unsigned source = base + (source_lane & (width - 1));
        unsigned long long got = shuffle_slots[(size_t)warp * 32 + source];
        syncwarp();  // every lane has read before any lane publishes again
        T result;
        std::memcpy(&result, &got, sizeof(T));
        return result;
    }
};

inline void BlockRunner::entry() {
    BlockRunner* r = runner;
    Fiber& f = r->self();
    r->after_switch_in(f);
    (*r->body)();
    r->thread_exited();
    r->switch_to_scheduler(f);
    std::abort();  // a finished fiber is never resumed
}

// ----------------------------------------------------------------------------- the grid
inline std::string& last_error() {
    static std::string message;
    return message;
}

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cuda-sim: %s\n", what);
    std::abort();
}

// Runs blocks on a persistent pool of worker threads; the launching thread works too.
class Pool {
  public:
    static Pool& get() {
        static Pool pool;
        return pool;
    }

    int run(const Launch& launch, const std::function<void()>& body) {
        const unsigned long long blocks = (unsigned long long)launch.grid[0] * launch.grid[1] * launch.grid[2];
        const unsigned long long threads = (unsigned long long)launch.block[0] * launch.block[1] * launch.block[2];
        if (blocks == 0 || threads == 0 || threads > 1024) {
            last_error() = "invalid launch configuration: " + std::to_string(blocks) + " blocks of " +
                           std::to_string(threads) + " threads (a block holds 1 to 1024 threads)";
            return 1;
        }
        // CUDA's per-axis limits (compute capability 3.0 on): a GPU refuses a launch outside them
        if (launch.grid[0] > 2147483647u || launch.grid[1] > 65535u || launch.grid[2] > 65535u ||
            launch.block[0] > 1024u || launch.block[1] > 1024u || launch.block[2] > 64u) {
            last_error() = "invalid launch configuration: grid (" + std::to_string(launch.grid[0]) + ", " +
                           std::to_string(launch.grid[1]) + ", " + std::to_string(launch.grid[2]) + "), block (" +
                           std::to_string(launch.block[0]) + ", " + std::to_string(launch.block[1]) + ", " +
                           std::to_string(launch.block[2]) + ") (a grid's y and z are at most 65535, a block's z 64)";
            return 1;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        launch_ = &launch;
        body_ = &body;
        next_.store(0);
        total_ = blocks;
        failed_.store(false);
        error_.clear();
        busy_ = workers_.size();
        ++generation_;
        lock.unlock();
        wake_.notify_all();
        work();
        lock.lock();
        done_.wait(lock, [&] { return busy_ == 0; });
        if (failed_.load()) {
            last_error() = error_;
            return 1;
        }
        return 0;
    }

  private:
    Pool() {
        unsigned count = std::thread::hardware_concurrency();
        if (const char* env = std::getenv("GPUCNN_SIM_THREADS")) count = (unsigned)std::max(1, std::atoi(env));
        for (unsigned i = 1; i < std::max(1u, count); ++i) workers_.emplace_back([this] { loop(); });
    }

    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }

    void loop() {
        unsigned long long seen = 0;
        for (;;) {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            lock.unlock();
            work();
            lock.lock();
            if (--busy_ == 0) done_.notify_all();
        }
    }

    void work() {
        thread_local BlockRunner block_runner;
        runner = &block_runner;
        block_dim = dim3(launch_->block[0], launch_->block[1], launch_->block[2]);
        grid_dim = dim3(launch_->grid[0], launch_->grid[1], launch_->grid[2]);
        const unsigned gx = launch_->grid[0], gy = launch_->grid[1];
        for (;;) {
            const unsigned long long b = next_.fetch_add(1);
            if (b >= total_ || failed_.load()) return;
            const uint3 block{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((unsigned long long)gx * gy))};
            if (!block_runner.run_block(*launch_, block, *body_)) {
                std::lock_guard<std::mutex> lock(error_mutex_);
                if (!failed_.exchange(true)) error_ = block_runner.error;
                return;
            }
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mutex_, error_mutex_;
    std::condition_variable wake_, done_;
    const Launch* launch_ = nullptr;
    const std::function<void()>* body_ = nullptr;
    std::atomic<unsigned long long> next_{0};
    unsigned long long total_ = 0, generation_ = 0;
    size_t busy_ = 0;
    bool stop_ = false;
    std::atomic<bool> failed_{false};
    std::string error_;
};

// Call f with arguments unpacked from an array of pointers, one per parameter.
template <class... P, size_t... I>
void call_unpacked(void (*f)(P...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}

template <class... P>
int launch(void (*f)(P...), const Launch* launch, void** args) {
    const std::function<void()> body = [f, args] { call_unpacked(f, args, std::index_sequence_for<P...>{}); };
    return Pool::get().run(*launch, body);
}

// Each parameter as kind * 256 + size: kind 'p' pointer, 'f' floating, 'i' signed, 'u' unsigned.
template <class T>
constexpr int describe() {
    using U = std::remove_cv_t<T>;
    constexpr int kind = std::is_pointer_v<U> ? 'p' : std::is_floating_point_v<U> ? 'f' : std::is_signed_v<U> ? 'i' : 'u';
    return kind * 256 + (int)sizeof(U);
}

template <class... P>
int describe_params(void (*)(P...), int* out, int capacity) {
    const int codes[] = {0, describe<P>()...};
    const int count = (int)sizeof...(P);
    for (int i = 0; i < count && i < capacity; ++i) out[i] = codes[i + 1];
    return count;
}

template <class T>
T* dynamic_shared() {
    return reinterpret_cast<T*>(runner->dynamic_shared.data());
}

}  // namespace gpucnn_sim

GPUCNN_SIM_EXPORT const char* gpucnn_sim_last_error() { return gpucnn_sim::last_error().c_str(); }

// ----------------------------------------------------------------------------- CUDA's names
#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static thread_local
#define __constant__ static const

#define threadIdx (::gpucnn_sim::thread_idx)
#define blockIdx (::gpucnn_sim::block_idx)
#define blockDim (::gpucnn_sim::block_dim)
#define gridDim (::gpucnn_sim::grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { gpucnn_sim::runner->syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { gpucnn_sim::runner->syncwarp(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { gpucnn_sim::fail("__trap() called in a kernel"); }

inline unsigned __sim_lane() { return gpucnn_sim::runner->self().linear % 32; }

template <class T>
T __shfl_sync(unsigned, T value, int source, int width = 32) {
    return gpucnn_sim::runner->shuffle(value, (unsigned)source, (unsigned)width);
}
template <class T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int width = 32) {
    const unsigned lane = __sim_lane() % (unsigned)width;
    const unsigned target = lane ^ (unsigned)lane_mask;
    return gpucnn_sim::runner->shuffle(value, target < (unsigned)width ? target : lane, (unsigned)width);
}
template <class T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
    const unsigned lane = __sim_lane() % (unsigned)width;
    return gpucnn_sim::runner->shuffle(value, lane + delta < (unsigned)width ? lane + delta : lane, (unsigned)width);
}
template <class T>
T __shfl_up_sync(unsigned, T value, unsigned delta, int width = 32) {
    const unsigned lane = __sim_lane() % (unsigned)width;
    return gpucnn_sim::runner->shuffle(value, lane >= delta ? lane - delta : lane, (unsigned)width);
}

template <class T>
T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}
template <class T>
T atomicMax(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (old < value && !ref.compare_exchange_weak(old, value)) {
    }
    return old;
}
template <class T>
T atomicMin(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (old > value && !ref.compare_exchange_weak(old, value)) {
    }
    return old;
}
template <class T>
T atomicExch(T* address, T value) {
    return std::atomic_ref<T>(*address).exchange(value);
}
template <class T>
T atomicCAS(T* address, T expected, T desired) {
    std::atomic_ref<T>(*address).compare_exchange_strong(expected, desired);
    return expected;
}

template <class T>
T __ldg(const T* p) { return *p; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline float __expf(float v) { return expf(v); }
inline float __logf(float v) { return logf(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }
inline double rsqrt(double v) { return 1.0 / sqrt(v); }
inline float __saturatef(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }
using std::max;
using std::min;
