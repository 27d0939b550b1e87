// dropout.cu: the dropout mask and its forward/backward application.
//
// Threads: one element per thread per grid-stride step.
// Reference: gpucnn/backends/numpy/backend.py, dropout_mask and NumpyBackend.dropout_forward;
// NumpyBackend.dropout_forward_stepped for the variant whose key is read from device memory.
// The mask is a pure function of (key, flat index) through the lowbias32 integer hash, so every
// backend, and every launch configuration, drops the same elements for the same seed.
#include "common.cuh"

__device__ __forceinline__ unsigned int hash32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

// keep iff the top 24 bits of the hash are >= threshold = round(p * 2^24)
__device__ __forceinline__ void dropout_apply(const real* __restrict__ x, real* __restrict__ y,
                                              unsigned char* __restrict__ mask, unsigned int key,
                                              unsigned int threshold, real scale, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        unsigned long long index = (unsigned long long)i;
        unsigned int low = (unsigned int)(index & 0xffffffffull), high = (unsigned int)(index >> 32);
        unsigned int h = hash32(low ^ hash32(high ^ key));
        unsigned char keep = (h >> 8) >= threshold ? 1 : 0;
        mask[i] = keep;
        y[i] = x[i] * (real)keep * scale;
    }
}

extern "C" __global__ void dropout_forward(const real* __restrict__ x, real* __restrict__ y,
                                           unsigned char* __restrict__ mask, unsigned int key,
                                           unsigned int threshold, real scale, index_t n) {
    dropout_apply(x, y, mask, key, threshold, scale, n);
}

// The key of a CUDA-graph step: keys is the (steps, slots) table of the epoch, step[0] the step
// counter in device memory, so a replayed graph draws a new mask every step with no host work.
extern "C" __global__ void dropout_forward_stepped(const real* __restrict__ x, real* __restrict__ y,
                                                   unsigned char* __restrict__ mask,
                                                   const unsigned int* __restrict__ keys,
                                                   const long long* __restrict__ step, int slots, int slot,
                                                   unsigned int threshold, real scale, index_t n) {
    dropout_apply(x, y, mask, keys[step[0] * slots + slot], threshold, scale, n);
}

extern "C" __global__ void dropout_backward(const real* __restrict__ dy, const unsigned char* __restrict__ mask,
                                            real* __restrict__ dx, real scale, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * (real)mask[i] * scale; }
}
