// maxpool2d.cu: max pooling forward (value + argmax) and backward (a gather, no atomics).
//
// Forward threads: one output element (n, c, oh, ow) each. The argmax is an index into the
// input's H*W plane, as PyTorch's return_indices. The first maximum wins ties; the first NaN
// wins over everything (NaN propagates); padding is never a candidate.
// Backward threads: one input element each, summing dy over the windows that contain it and
// chose it, in a fixed order: bit-reproducible. With relu_masked, max pooling followed a ReLU and y
// is the pooled output: each window's dy is first multiplied by (y > 0), as relu_backward does, so
// ReLU -> MaxPool2d's backward is one launch.
// Reference: NumpyBackend.maxpool2d_forward / maxpool2d_backward (backends/numpy/pooling.py).
#include "common.cuh"

// x: (planes, H, W) -> y, argmax: (planes, OH, OW); planes = N*C
extern "C" __global__ void maxpool2d_forward(const real* __restrict__ x, real* __restrict__ y,
                                             int* __restrict__ argmax, index_t planes, index_t height,
                                             index_t width, index_t out_h, index_t out_w, int kh, int kw, int sh,
                                             int sw, int ph, int pw) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const real* xp = x + plane * height * width;
        const index_t h0 = oh * sh - ph, w0 = ow * sw - pw;
        real best = -real_infinity();
        index_t best_index = -1;
        for (int a = 0; a < kh; ++a) {
            const index_t h = h0 + a;
            if (h < 0 || h >= height) continue;
            for (int b = 0; b < kw; ++b) {
                const index_t w = w0 + b;
                if (w < 0 || w >= width) continue;
                const real v = xp[h * width + w];
                if (best_index < 0 || v > best || (is_nan(v) && !is_nan(best))) {
                    best = v;
                    best_index = h * width + w;
                }
            }
        }
        y[i] = best;
        argmax[i] = (int)best_index;
    }
}

// dy, argmax, y: (planes, OH, OW) -> dx: (planes, H, W); y is read only when relu_masked
extern "C" __global__ void maxpool2d_backward(const real* __restrict__ dy, const int* __restrict__ argmax,
                                              const real* __restrict__ y, real* __restrict__ dx, index_t planes,
                                              index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                              int kw, int sh, int sw, int ph, int pw, int relu_masked) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const index_t offset = plane * out_h * out_w;
        const int target = (int)(h * width + w);
        real total = 0;
        for_each_window_containing(h, w, kh, kw, sh, sw, ph, pw, out_h, out_w, [&](index_t oh, index_t ow) {
            const index_t o = offset + oh * out_w + ow;
            if (argmax[o] == target) total += relu_masked ? dy[o] * (real)(y[o] > (real)0) : dy[o];
        });
        dx[i] = total;
    }
}
