// maxpool2d.cu: max pooling forward (value + argmax) and backward (a gather, no atomics), the
// adaptive max pooling pair, and max unpooling (the inverse of max pooling with return_indices).
//
// Forward threads: one output element (n, c, oh, ow) each. The argmax is an index into the
// input's H*W plane, as PyTorch's return_indices. The first maximum wins ties; the first NaN
// wins over everything (NaN propagates); padding is never a candidate.
// Backward threads: one input element each, summing dy over the windows that contain it and
// chose it, in a fixed order: bit-reproducible. With relu_masked, max pooling followed a ReLU and y
// is the pooled output: each window's dy is first multiplied by (y > 0), as relu_backward does, so
// ReLU -> MaxPool2d's backward is one launch.
// Adaptive max pooling: PyTorch's windows, rows [floor(i*H/OH), ceil((i+1)*H/OH)), with the same
// threads and rules; an input lies in up to ceil(H/OH)+1 windows per axis, summed in (oh, ow) order.
// Max unpooling forward: one thread per output ROW of a plane, which zeroes the row and then scans
// the plane's inputs in order, writing those whose index falls in the row: an ordered scatter, so a
// repeated index (overlapping pooling windows) deterministically keeps the last input in input order,
// for any indices (not only those of a matching max pool); indices outside the output are skipped.
// Its backward is a gather, dx[i] = dy[indices[i]] (PyTorch's: every repeat gets the gradient).
// Reference: NumpyBackend.maxpool2d_* / adaptive_maxpool2d_* / maxunpool2d_* (backends/numpy/pooling.py).
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

// PyTorch's adaptive window along one axis: output i covers [floor(i*size/out), ceil((i+1)*size/out))
__device__ __forceinline__ index_t adaptive_start(index_t i, index_t size, index_t out) { return (i * size) / out; }
__device__ __forceinline__ index_t adaptive_end(index_t i, index_t size, index_t out) {
    return ((i + 1) * size + out - 1) / out;
}

// x: (planes, H, W) -> y, argmax: (planes, OH, OW)
extern "C" __global__ void adaptive_maxpool2d_forward(const real* __restrict__ x, real* __restrict__ y,
                                                      int* __restrict__ argmax, index_t planes, index_t height,
                                                      index_t width, index_t out_h, index_t out_w) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const real* xp = x + plane * height * width;
        const index_t h0 = adaptive_start(oh, height, out_h), h1 = adaptive_end(oh, height, out_h);
        const index_t w0 = adaptive_start(ow, width, out_w), w1 = adaptive_end(ow, width, out_w);
        real best = -real_infinity();
        index_t best_index = -1;
        for (index_t h = h0; h < h1; ++h) {
            for (index_t w = w0; w < w1; ++w) {
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

// dy, argmax: (planes, OH, OW) -> dx: (planes, H, W)
extern "C" __global__ void adaptive_maxpool2d_backward(const real* __restrict__ dy, const int* __restrict__ argmax,
                                                       real* __restrict__ dx, index_t planes, index_t height,
                                                       index_t width, index_t out_h, index_t out_w) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const index_t offset = plane * out_h * out_w;
        const int target = (int)(h * width + w);
        // the windows containing h: floor(h*OH/H) <= oh <= ceil((h+1)*OH/H) - 1 (and < OH)
        const index_t oh0 = (h * out_h) / height, ow0 = (w * out_w) / width;
        index_t oh1 = ((h + 1) * out_h + height - 1) / height - 1, ow1 = ((w + 1) * out_w + width - 1) / width - 1;
        if (oh1 > out_h - 1) oh1 = out_h - 1;
        if (ow1 > out_w - 1) ow1 = out_w - 1;
        real total = 0;
        for (index_t oh = oh0; oh <= oh1; ++oh)
            for (index_t ow = ow0; ow <= ow1; ++ow) {
                const index_t o = offset + oh * out_w + ow;
                if (argmax[o] == target) total += dy[o];
            }
        dx[i] = total;
    }
}

// x, indices: (planes, IH*IW) -> y: (planes, OH, OW); indices index the output's OH*OW plane
extern "C" __global__ void maxunpool2d_forward(const real* __restrict__ x, const long long* __restrict__ indices,
                                               real* __restrict__ y, index_t planes, index_t in_size, index_t out_h,
                                               index_t out_w) {
    GRID_STRIDE_LOOP(r, planes * out_h) {
        const index_t plane = r / out_h, row = r % out_h;
        real* yrow = y + r * out_w;
        for (index_t j = 0; j < out_w; ++j) yrow[j] = (real)0;
        const long long first = (long long)row * (long long)out_w, last = first + (long long)out_w;
        const real* xp = x + plane * in_size;
        const long long* ip = indices + plane * in_size;
        for (index_t k = 0; k < in_size; ++k) {
            const long long t = ip[k];
            if (t >= first && t < last) yrow[t - first] = xp[k];
        }
    }
}

// dy: (planes, OH*OW), indices: (planes, IH*IW) -> dx: (planes, IH*IW)
extern "C" __global__ void maxunpool2d_backward(const real* __restrict__ dy, const long long* __restrict__ indices,
                                                real* __restrict__ dx, index_t planes, index_t in_size,
                                                index_t out_size) {
    GRID_STRIDE_LOOP(i, planes * in_size) {
        const long long t = indices[i];
        dx[i] = (t >= 0 && t < (long long)out_size) ? dy[(i / in_size) * out_size + (index_t)t] : (real)0;
    }
}
