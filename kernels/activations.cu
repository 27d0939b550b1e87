// activations.cu: ReLU, LeakyReLU, sigmoid, tanh and SiLU, forward and backward.
//
// Threads: one element per thread per grid-stride step; any shape, flattened to n elements.
// Reference: gpucnn/backends/numpy/backend.py, NumpyBackend.relu_forward and relu_backward; the others'
// rows in gpucnn/backends/elementwise.py (leaky_relu_forward ... silu_backward), which launch them.
// NaN propagates forward (NaN < 0 is false, so ReLU keeps it), as np.maximum does.
#include "common.cuh"

extern "C" __global__ void relu_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v < (real)0 ? (real)0 : v;
    }
}

// From the saved output, so the forward may overwrite its input. A multiply by the 0/1 mask (as
// the NumPy reference does, for speed there), so a NaN gradient stays NaN even where y <= 0.
extern "C" __global__ void relu_backward(const real* __restrict__ dy, const real* __restrict__ y,
                                         real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * (real)(y[i] > (real)0); }
}

extern "C" __global__ void leaky_relu_forward(const real* __restrict__ x, real* __restrict__ y,
                                              real negative_slope, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v > (real)0 ? v : v * negative_slope;
    }
}

extern "C" __global__ void leaky_relu_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                               real* __restrict__ dx, real negative_slope, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = x[i] > (real)0 ? dy[i] : dy[i] * negative_slope; }
}

// The two-sided form: exp() only ever sees -|x|, so it never overflows.
extern "C" __global__ void sigmoid_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real e = real_exp(-real_abs(v));
        y[i] = v >= (real)0 ? (real)1 / ((real)1 + e) : e / ((real)1 + e);
    }
}

extern "C" __global__ void sigmoid_backward(const real* __restrict__ dy, const real* __restrict__ y,
                                            real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * y[i] * ((real)1 - y[i]); }
}

extern "C" __global__ void tanh_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = real_tanh(x[i]); }
}

extern "C" __global__ void tanh_backward(const real* __restrict__ dy, const real* __restrict__ y,
                                         real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * ((real)1 - y[i] * y[i]); }
}

// SiLU (swish): x * sigmoid(x), the sigmoid in the two-sided form as above.
__device__ __forceinline__ real two_sided_sigmoid(real v) {
    real e = real_exp(-real_abs(v));
    return v >= (real)0 ? (real)1 / ((real)1 + e) : e / ((real)1 + e);
}

extern "C" __global__ void silu_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = x[i] * two_sided_sigmoid(x[i]); }
}

// From the saved input: d(x s)/dx = s + x s (1 - s) = s (1 + x (1 - s)).
extern "C" __global__ void silu_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                         real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real s = two_sided_sigmoid(x[i]);
        dx[i] = dy[i] * (s * ((real)1 + x[i] * ((real)1 - s)));
    }
}
