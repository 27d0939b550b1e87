// lppool2d.cu: power-average (L_p) pooling, forward and backward (a gather, no atomics).
//
// y = (sum over the window of x^p * KH*KW / count)^(1/p), PyTorch's LPPool2d (no padding; a
// ceil-mode partial window of `count` elements is scaled up to a full one). p = 2 is L2 pooling.
// Forward threads: one output each. Backward threads: one input each:
// dx = x^(p-1) * sum over windows of dy * scale * y^(1-p), windows with y == 0 passing nothing.
// Reference: NumpyBackend.lppool2d_forward / lppool2d_backward.
#include "common.cuh"

// x: (planes, H, W) -> y: (planes, OH, OW)
extern "C" __global__ void lppool2d_forward(const real* __restrict__ x, real* __restrict__ y, index_t planes,
                                            index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                            int kw, int sh, int sw, real norm_type) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const real* xp = x + plane * height * width;
        const index_t h0 = oh * sh, w0 = ow * sw;
        real total = 0;
        for (int a = 0; a < kh && h0 + a < height; ++a)
            for (int b = 0; b < kw && w0 + b < width; ++b) total += real_pow(xp[(h0 + a) * width + w0 + b], norm_type);
        const real scale = (real)(kh * kw) / pool_divisor(h0, w0, kh, kw, height, width, 0, 0, 1);
        y[i] = real_pow(total * scale, (real)1 / norm_type);
    }
}

// dy, y: (planes, OH, OW), x: (planes, H, W) -> dx: (planes, H, W)
extern "C" __global__ void lppool2d_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                             const real* __restrict__ y, real* __restrict__ dx, index_t planes,
                                             index_t height, index_t width, index_t out_h, index_t out_w, int kh,
                                             int kw, int sh, int sw, real norm_type) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const index_t offset = plane * out_h * out_w;
        real total = 0;
        for_each_window_containing(h, w, kh, kw, sh, sw, 0, 0, out_h, out_w, [&](index_t oh, index_t ow) {
            const real yv = y[offset + oh * out_w + ow];
            if (!(yv > (real)0)) return;
            const real scale = (real)(kh * kw) / pool_divisor(oh * sh, ow * sw, kh, kw, height, width, 0, 0, 1);
            total += dy[offset + oh * out_w + ow] * scale * real_pow(yv, (real)1 - norm_type);
        });
        dx[i] = total * real_pow(x[i], norm_type - (real)1);
    }
}
