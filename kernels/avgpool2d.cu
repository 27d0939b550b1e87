// avgpool2d.cu: average pooling forward and backward (a gather, no atomics).
//
// Forward threads: one output element each; backward threads: one input element each,
// summing dy / divisor over the windows that contain it in a fixed order.
// The divisor follows PyTorch: count_include_pad counts zero padding (but not the ceil-mode
// overhang past it); otherwise only input elements count. See pool_divisor in common.cuh.
// Reference: NumpyBackend.avgpool2d_forward / avgpool2d_backward (backends/numpy/pooling.py).
#include "common.cuh"

// x: (planes, H, W) -> y: (planes, OH, OW)
extern "C" __global__ void avgpool2d_forward(const real* __restrict__ x, real* __restrict__ y, index_t planes,
                                             index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                             int kw, int sh, int sw, int ph, int pw, int count_include_pad) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const real* xp = x + plane * height * width;
        const index_t h0 = oh * sh - ph, w0 = ow * sw - pw;
        real total = 0;
        for (int a = 0; a < kh; ++a) {
            const index_t h = h0 + a;
            if (h < 0 || h >= height) continue;
            for (int b = 0; b < kw; ++b) {
                const index_t w = w0 + b;
                if (w >= 0 && w < width) total += xp[h * width + w];
            }
        }
        y[i] = total / pool_divisor(h0, w0, kh, kw, height, width, ph, pw, count_include_pad);
    }
}

// dy: (planes, OH, OW) -> dx: (planes, H, W)
extern "C" __global__ void avgpool2d_backward(const real* __restrict__ dy, real* __restrict__ dx, index_t planes,
                                              index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                              int kw, int sh, int sw, int ph, int pw, int count_include_pad) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const real* dyp = dy + plane * out_h * out_w;
        real total = 0;
        for_each_window_containing(h, w, kh, kw, sh, sw, ph, pw, out_h, out_w, [&](index_t oh, index_t ow) {
            total += dyp[oh * out_w + ow] /
                     pool_divisor(oh * sh - ph, ow * sw - pw, kh, kw, height, width, ph, pw, count_include_pad);
        });
        dx[i] = total;
    }
}
