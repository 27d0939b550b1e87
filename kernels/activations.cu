// activations.cu: ReLU, LeakyReLU, sigmoid, tanh, SiLU, ReLU6, hardsigmoid, hardswish, GELU (erf and
// tanh forms), ELU, Mish and softplus, forward and backward.
//
// Threads: one element per thread per grid-stride step; any shape, flattened to n elements.
// Reference: gpucnn/backends/numpy/backend.py, NumpyBackend.relu_forward and relu_backward; the others'
// rows in gpucnn/backends/elementwise.py (leaky_relu_forward ... softplus_backward), which launch them.
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

// ReLU6: min(max(x, 0), 6). Backward from the saved output: 0 < y < 6 exactly where 0 < x < 6.
extern "C" __global__ void relu6_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v < (real)0 ? (real)0 : (v > (real)6 ? (real)6 : v);
    }
}

extern "C" __global__ void relu6_backward(const real* __restrict__ dy, const real* __restrict__ y,
                                          real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = dy[i] * (real)(y[i] > (real)0 && y[i] < (real)6); }
}

// relu6(x + 3), the clamp of x + 3 to [0, 6] that hardsigmoid and hardswish share (NaN stays NaN).
__device__ __forceinline__ real relu6_of_x_plus_3(real v) {
    real t = v + (real)3;
    return t < (real)0 ? (real)0 : (t > (real)6 ? (real)6 : t);
}

// Hardsigmoid: relu6(x + 3) / 6. Backward from the saved input (the output's 0 and 1 are reached by
// rounding just inside -3 < x < 3, so it cannot tell where the slope is).
extern "C" __global__ void hardsigmoid_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = relu6_of_x_plus_3(x[i]) / (real)6; }
}

extern "C" __global__ void hardsigmoid_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                                real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        dx[i] = (v > (real)-3 && v < (real)3) ? dy[i] / (real)6 : (real)0;
    }
}

// Hardswish: x * hardsigmoid(x), x * (relu6(x + 3) / 6): the division first, so huge x never overflows
// (and x >= 3 gives x * 1 = x exactly). Backward from the saved input: 0 below -3, x / 3 + 1/2 up to 3,
// then 1 (PyTorch's branches).
extern "C" __global__ void hardswish_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v * (relu6_of_x_plus_3(v) / (real)6);
    }
}

extern "C" __global__ void hardswish_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                              real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        dx[i] = v < (real)-3 ? (real)0 : (v <= (real)3 ? dy[i] * (v / (real)3 + (real)0.5) : dy[i]);
    }
}

// GELU, exact: x * Phi(x) = x * 0.5 * (1 + erf(x / sqrt(2))). Backward from the saved input:
// Phi(x) + x * phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) (which underflows to 0, never overflows).
#define GPUCNN_SQRT1_2 0.70710678118654752440     // 1 / sqrt(2)
#define GPUCNN_INV_SQRT_2PI 0.39894228040143267794  // 1 / sqrt(2 pi)
#define GPUCNN_SQRT_2_PI 0.79788456080286535588   // sqrt(2 / pi)
#define GPUCNN_GELU_KAPPA 0.044715

extern "C" __global__ void gelu_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v * (real)0.5 * ((real)1 + real_erf(v * (real)GPUCNN_SQRT1_2));
    }
}

extern "C" __global__ void gelu_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                         real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real cdf = (real)0.5 * ((real)1 + real_erf(v * (real)GPUCNN_SQRT1_2));
        real pdf = real_exp((real)-0.5 * v * v) * (real)GPUCNN_INV_SQRT_2PI;
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

// GELU, tanh approximation: 0.5 * x * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 x^3), computed as
// x * sigmoid(2u) (the same function: 0.5 (1 + tanh(u)) = sigmoid(2u)), the sigmoid two-sided: no
// cancellation in 1 + tanh(u) on the left tail. Where x^3 overflows 2u is +-inf and the sigmoid 1 or 0, so
// the forward stays finite. Backward from the saved input: s + 2 x s (1 - s) u'(x); where the sigmoid has
// saturated (s (1 - s) == 0) the second term is 0, not 0 * inf.
extern "C" __global__ void gelu_tanh_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real u = (real)GPUCNN_SQRT_2_PI * (v + (real)GPUCNN_GELU_KAPPA * (v * v * v));
        y[i] = v * two_sided_sigmoid((real)2 * u);
    }
}

extern "C" __global__ void gelu_tanh_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                              real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real v2 = v * v;
        real s = two_sided_sigmoid((real)2 * ((real)GPUCNN_SQRT_2_PI * (v + (real)GPUCNN_GELU_KAPPA * (v2 * v))));
        real slope = s * ((real)1 - s);
        real du = (real)GPUCNN_SQRT_2_PI * ((real)1 + (real)3 * (real)GPUCNN_GELU_KAPPA * v2);
        real right = slope == (real)0 ? (real)0 : (real)2 * v * slope * du;
        dx[i] = dy[i] * (s + right);
    }
}

// ELU: x where x > 0, else alpha * expm1(x) (expm1: no cancellation near 0). Backward from the saved input,
// alpha * exp(x) on the negative side: exact, where the output's y + alpha cancels for very negative x.
extern "C" __global__ void elu_forward(const real* __restrict__ x, real* __restrict__ y, real alpha, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v > (real)0 ? v : alpha * real_expm1(v);
    }
}

extern "C" __global__ void elu_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                        real* __restrict__ dx, real alpha, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        dx[i] = v > (real)0 ? dy[i] : dy[i] * (alpha * real_exp(v));
    }
}

// tanh(softplus(x)) from e = exp(-|x|), without log or tanh and without overflow: with E = exp(x),
// tanh(log(1 + E)) = (E^2 + 2E) / (E^2 + 2E + 2); for x >= 0 divided through by E^2.
__device__ __forceinline__ real tanh_softplus(real v, real e) {
    if (v >= (real)0) {
        real p = (real)1 + (real)2 * e;
        return p / (p + (real)2 * e * e);
    }
    real q = e * (e + (real)2);
    return q / (q + (real)2);
}

// Mish: x * tanh(softplus(x)). Backward from the saved input: t + x * (1 - t^2) * sigmoid(x), t and the
// sigmoid from the same exp(-|x|).
extern "C" __global__ void mish_forward(const real* __restrict__ x, real* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        y[i] = v * tanh_softplus(v, real_exp(-real_abs(v)));
    }
}

extern "C" __global__ void mish_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                         real* __restrict__ dx, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real e = real_exp(-real_abs(v));
        real t = tanh_softplus(v, e);
        real s = v >= (real)0 ? (real)1 / ((real)1 + e) : e / ((real)1 + e);
        dx[i] = dy[i] * (t + v * (((real)1 - t * t) * s));
    }
}

// Softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule). The log in
// the two-sided form log1p(exp(-|b|)) + max(b, 0), b = beta x, which never overflows whatever the threshold.
// Backward from the saved input: sigmoid(beta x), two-sided, or 1 past the threshold.
extern "C" __global__ void softplus_forward(const real* __restrict__ x, real* __restrict__ y, real beta,
                                            real threshold, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real v = x[i];
        real b = v * beta;
        y[i] = b > threshold ? v : (real_log1p(real_exp(-real_abs(b))) + (b > (real)0 ? b : (real)0)) / beta;
    }
}

extern "C" __global__ void softplus_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                             real* __restrict__ dx, real beta, real threshold, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real b = x[i] * beta;
        dx[i] = b > threshold ? dy[i] : dy[i] * two_sided_sigmoid(b);
    }
}
