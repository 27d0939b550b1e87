// lppool2d.cu: power-average (L_p) pooling, forward and backward (a gather, no atomics).
//
// Op: y = (sum over the window of x^p * KH*KW / count)^(1/p), PyTorch's F.lp_pool2d (no padding; a
// ceil-mode partial window of `count` elements is scaled up to a full one). p = 2 is L2 pooling;
// p = +inf is the window's largest |x|, as PyTorch's max_pool2d(|x|).
// Threads: forward, one output each; backward, one input each, summing over the windows that hold
// it in for_each_window_containing's fixed order.
// Backward, finite p: dx = x^(p-1) * sum over windows of dy * scale * y^(1-p). Only a window whose
// norm is 0 passes nothing (its derivative is 0/0, which PyTorch sets to 0): with p = 1 a negative
// sum gives a negative y that passes its gradient, and a NaN y (a negative x^p or the root of a
// negative sum) passes NaN rather than hiding it; at p = 1, a plain sum, it passes dy * scale as
// y^0 = 1 (PyTorch gives 0 there, from sign(NaN) = 0 in its composition).
// Backward, p = inf: each window passes sign(x) * dy to the element its max came from, the first
// maximum on ties (as PyTorch) and the first NaN over everything (as maxpool2d.cu; PyTorch takes
// the last); sign(NaN) is NaN here where PyTorch's is 0, so a NaN window's gradient stays NaN.
// The element is found again by rescanning the window: y alone cannot tell tied elements apart.
// Reference: NumpyBackend.lppool2d_forward / lppool2d_backward; tests/test_lppool.py checks both
// against torch.nn.functional.lp_pool2d and an independent NumPy formula.
#include "common.cuh"

// Index in the H*W plane of the element with the largest |x| in the window at (h0, w0), clipped
// to the input: the first one on ties, the first NaN over everything.
__device__ __forceinline__ index_t window_abs_argmax(const real* xp, index_t h0, index_t w0, int kh, int kw,
                                                     index_t height, index_t width) {
    index_t best_index = h0 * width + w0;
    real best = real_abs(xp[best_index]);
    for (int a = 0; a < kh && h0 + a < height; ++a)
        for (int b = 0; b < kw && w0 + b < width; ++b) {
            const index_t j = (h0 + a) * width + w0 + b;
            const real v = real_abs(xp[j]);
            if (v > best || (is_nan(v) && !is_nan(best))) {
                best = v;
                best_index = j;
            }
        }
    return best_index;
}

// d|x|/dx, with NaN (not 0) for a NaN x so that its gradient stays NaN
__device__ __forceinline__ real abs_slope(real v) {
    return v > (real)0 ? (real)1 : v < (real)0 ? (real)-1 : is_nan(v) ? v : (real)0;
}

// x: (planes, H, W) -> y: (planes, OH, OW)
extern "C" __global__ void lppool2d_forward(const real* __restrict__ x, real* __restrict__ y, index_t planes,
                                            index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                            int kw, int sh, int sw, real norm_type) {
    const bool max_norm = norm_type == real_infinity();
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const real* xp = x + plane * height * width;
        const index_t h0 = oh * sh, w0 = ow * sw;
        if (max_norm) {
            y[i] = real_abs(xp[window_abs_argmax(xp, h0, w0, kh, kw, height, width)]);
            continue;
        }
        real total = 0;
        for (int a = 0; a < kh && h0 + a < height; ++a)
            for (int b = 0; b < kw && w0 + b < width; ++b) total += real_pow(xp[(h0 + a) * width + w0 + b], norm_type);
        const real scale = (real)(kh * kw) / pool_divisor(h0, w0, kh, kw, height, width, 0, 0, 1);
        y[i] = real_pow(total * scale, (real)1 / norm_type);
    }
}

// dy, y: (planes, OH, OW), x: (planes, H, W) -> dx: (planes, H, W); y is not read when p = inf
extern "C" __global__ void lppool2d_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                             const real* __restrict__ y, real* __restrict__ dx, index_t planes,
                                             index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                             int kw, int sh, int sw, real norm_type) {
    const bool max_norm = norm_type == real_infinity();
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const index_t offset = plane * out_h * out_w;
        const real* xp = x + plane * height * width;
        const real v = x[i];
        real total = 0;
        for_each_window_containing(h, w, kh, kw, sh, sw, 0, 0, out_h, out_w, [&](index_t oh, index_t ow) {
            const index_t o = offset + oh * out_w + ow;
            if (max_norm) {
                // the slope inside the sum: a NaN x that is not its window's maximum gets 0
                if (window_abs_argmax(xp, oh * sh, ow * sw, kh, kw, height, width) == h * width + w)
                    total += dy[o] * abs_slope(v);
                return;
            }
            const real yv = y[o];
            if (yv == (real)0) return;
            const real scale = (real)(kh * kw) / pool_divisor(oh * sh, ow * sw, kh, kw, height, width, 0, 0, 1);
            total += dy[o] * scale * real_pow(yv, (real)1 - norm_type);
        });
        dx[i] = max_norm ? total : total * real_pow(v, norm_type - (real)1);
    }
}
