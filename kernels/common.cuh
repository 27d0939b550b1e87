// common.cuh: what every gpucnn kernel shares.
//
// Each .cu is compiled once per (real type, index width): the launcher defines
// GPUCNN_REAL (float or double) and GPUCNN_INDEX64 (0 or 1; 1 when some tensor has
// 2^31 or more elements). The same text compiles with NVRTC for the GPU and with the host
// C++ compiler under gpucnn/backends/sim/cuda_sim.h for the cuda-sim backend.
#pragma once

#ifndef GPUCNN_REAL
#define GPUCNN_REAL float
#endif
#ifndef GPUCNN_INDEX64
#define GPUCNN_INDEX64 0
#endif

typedef GPUCNN_REAL real;
#if GPUCNN_INDEX64
typedef long long index_t;
#else
typedef int index_t;
#endif

// Visit [0, n) with every thread of the grid, whatever the grid size.
#define GRID_STRIDE_LOOP(i, n)                                                        \
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);         \
         i += (index_t)blockDim.x * gridDim.x)

// Overloads so one kernel text serves float and double without silent promotion.
__device__ __forceinline__ float real_exp(float v) { return expf(v); }
__device__ __forceinline__ double real_exp(double v) { return exp(v); }
__device__ __forceinline__ float real_log(float v) { return logf(v); }
__device__ __forceinline__ double real_log(double v) { return log(v); }
__device__ __forceinline__ float real_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double real_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float real_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double real_sqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float real_pow(float v, float p) { return powf(v, p); }
__device__ __forceinline__ double real_pow(double v, double p) { return pow(v, p); }
__device__ __forceinline__ float real_erf(float v) { return erff(v); }
__device__ __forceinline__ double real_erf(double v) { return erf(v); }
__device__ __forceinline__ float real_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double real_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float real_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double real_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float real_abs(float v) { return fabsf(v); }
__device__ __forceinline__ double real_abs(double v) { return fabs(v); }
__device__ __forceinline__ bool is_nan(real v) { return v != v; }

// +inf from its bit pattern: no overflow, no reliance on a math-constants header
__device__ __forceinline__ real real_infinity() { return (real)__int_as_float(0x7f800000); }

// Floor division for possibly negative numerators (C++ '/' truncates toward zero).
__device__ __forceinline__ index_t floor_div(index_t a, index_t b) {
    index_t q = a / b;
    return (q * b > a) ? q - 1 : q;
}

// ----------------------------------------------------------------------------- pooling
// The range [first, last] of output positions along one axis whose window
// [o*stride - pad, o*stride - pad + kernel) holds input position `pos`.
__device__ __forceinline__ void windows_containing(index_t pos, int kernel, int stride, int pad,
                                                   index_t out_size, index_t* first, index_t* last) {
    index_t lo = floor_div(pos + pad - kernel, stride) + 1;  // smallest o with o*s - p + k > pos
    index_t hi = floor_div(pos + pad, stride);               // largest o with o*s - p <= pos
    *first = lo < 0 ? 0 : lo;
    *last = hi > out_size - 1 ? out_size - 1 : hi;
}

// Calls visit(oh, ow) for every output window that holds input element (h, w), rows then columns:
// the fixed order that makes the pooling backward gathers reproducible.
template <class Visit>
__device__ __forceinline__ void for_each_window_containing(index_t h, index_t w, int kh, int kw, int sh, int sw,
                                                           int ph, int pw, index_t out_h, index_t out_w,
                                                           Visit visit) {
    index_t oh0, oh1, ow0, ow1;
    windows_containing(h, kh, sh, ph, out_h, &oh0, &oh1);
    windows_containing(w, kw, sw, pw, out_w, &ow0, &ow1);
    for (index_t oh = oh0; oh <= oh1; ++oh)
        for (index_t ow = ow0; ow <= ow1; ++ow) visit(oh, ow);
}

// PyTorch's average-pool divisor for the window starting at (h0, w0): the window clipped to
// input + padding, or (count_include_pad == 0) to the input alone.
__device__ __forceinline__ real pool_divisor(index_t h0, index_t w0, int kh, int kw, index_t height,
                                             index_t width, int ph, int pw, int count_include_pad) {
    index_t h1 = h0 + kh < height + ph ? h0 + kh : height + ph;
    index_t w1 = w0 + kw < width + pw ? w0 + kw : width + pw;
    if (count_include_pad) return (real)((h1 - h0) * (w1 - w0));
    index_t hs = h0 < 0 ? 0 : h0, ws = w0 < 0 ? 0 : w0;
    index_t he = h1 < height ? h1 : height, we = w1 < width ? w1 : width;
    return (real)((he - hs) * (we - ws));
}

// ----------------------------------------------------------------------------- reductions
// Sum over a warp in a fixed butterfly order: every lane gets the same, reproducible total.
__device__ __forceinline__ real warp_sum(real v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ real warp_max(real v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        real other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = (other > v || is_nan(other)) ? other : v;
    }
    return v;
}
