// pad.cu: padding of the last two axes (F.pad, the *Pad2d layers, Conv2d's padding_mode), forward and
// backward (a gather, no atomics).
//
// Modes (the launcher's int codes): 0 constant (`value` outside; negative pads crop), 1 reflect (mirror
// without repeating the edge, pad < size), 2 replicate (the edge repeated), 3 circular (wrap around,
// pad <= size).
// Forward threads: one output element each, reading its one source element (or writing `value`).
// Backward threads: one input element each, summing dy over the output positions that read it: per axis
// at most three runs of positions (the mirrored/wrapped one or the replicated band before the input, the
// position itself, the one or the band after), rows then columns in increasing order, so the sum is in a
// fixed order and reproducible.
// Reference: NumpyBackend.pad2d_forward / pad2d_backward (backends/numpy/pad.py).
#include "common.cuh"

#define PAD_CONSTANT 0
#define PAD_REFLECT 1
#define PAD_REPLICATE 2
#define PAD_CIRCULAR 3

// The input position output position `o` reads along one axis (`before` positions added in front), or -1
// where a constant pad writes `value` there.
__device__ __forceinline__ index_t pad_source(index_t o, index_t before, index_t size, int mode) {
    index_t i = o - before;
    if (i >= 0 && i < size) return i;
    if (mode == PAD_REFLECT) return i < 0 ? -i : 2 * (size - 1) - i;
    if (mode == PAD_REPLICATE) return i < 0 ? 0 : size - 1;
    if (mode == PAD_CIRCULAR) return i < 0 ? i + size : i - size;
    return -1;
}

// The output positions along one axis that read input position `i`, as up to three runs
// [first[k], last[k]] in increasing order; returns how many.
__device__ __forceinline__ int pad_readers(index_t i, index_t before, index_t size, index_t out, int mode,
                                           index_t* first, index_t* last) {
    int count = 0;
    const index_t after_start = before + size;  // first output position past the input's image
    if (mode == PAD_REFLECT && i >= 1 && i <= before) {
        first[count] = last[count] = before - i;
        ++count;
    } else if (mode == PAD_REPLICATE && i == 0 && before > 0) {
        first[count] = 0;
        last[count] = before - 1;
        ++count;
    } else if (mode == PAD_CIRCULAR && before + i - size >= 0) {
        first[count] = last[count] = before + i - size;
        ++count;
    }
    const index_t self = i + before;
    if (self >= 0 && self < out) {
        first[count] = last[count] = self;
        ++count;
    }
    index_t o = -1, o_last = -1;
    if (mode == PAD_REFLECT) {
        o = o_last = before + 2 * (size - 1) - i;
    } else if (mode == PAD_REPLICATE && i == size - 1) {
        o = after_start;
        o_last = out - 1;
    } else if (mode == PAD_CIRCULAR) {
        o = o_last = before + i + size;
    }
    if (o >= after_start && o < out && o <= o_last) {
        first[count] = o;
        last[count] = o_last;
        ++count;
    }
    return count;
}

// x: (planes, H, W) -> y: (planes, OH, OW), OH = H + top + bottom, OW = W + left + right
extern "C" __global__ void pad2d_forward(const real* __restrict__ x, real* __restrict__ y, index_t planes,
                                         index_t height, index_t width, index_t out_h, index_t out_w, int left,
                                         int top, int mode, real value) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        const index_t ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const index_t h = pad_source(oh, top, height, mode), w = pad_source(ow, left, width, mode);
        y[i] = (h < 0 || w < 0) ? value : x[(plane * height + h) * width + w];
    }
}

// dy: (planes, OH, OW) -> dx: (planes, H, W)
extern "C" __global__ void pad2d_backward(const real* __restrict__ dy, real* __restrict__ dx, index_t planes,
                                          index_t height, index_t width, index_t out_h, index_t out_w, int left,
                                          int top, int mode) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        const index_t w = i % width, h = (i / width) % height, plane = i / (width * height);
        const real* dyp = dy + plane * out_h * out_w;
        index_t row_first[3], row_last[3], col_first[3], col_last[3];
        const int rows = pad_readers(h, top, height, out_h, mode, row_first, row_last);
        const int cols = pad_readers(w, left, width, out_w, mode, col_first, col_last);
        real total = 0;
        for (int r = 0; r < rows; ++r)
            for (index_t oh = row_first[r]; oh <= row_last[r]; ++oh)
                for (int c = 0; c < cols; ++c)
                    for (index_t ow = col_first[c]; ow <= col_last[c]; ++ow) total += dyp[oh * out_w + ow];
        dx[i] = total;
    }
}
