// conv2d.cu: 2-D convolution (cross-correlation) forward, input gradient, weight gradient with the
// bias gradient; with stride, zero padding, dilation and groups.
//
// The three products are implicit GEMMs over one shared tiled routine, gemm_tile<BM, BN>: a block
// of BM*BN/16 threads computes a BM x BN output tile, staging 16-deep slices of A and B in shared
// memory; thread (tx, ty) accumulates 4x4 outputs (rows tx + BM/4*i, columns ty + BN/4*j), so
// neighbouring threads write neighbouring pixels. im2col is never materialised: each thread loads
// the same tile column at every slice, so it works out that column's pixel (or filter tap) once,
// and walks the reduction axis with an Odometer: no division inside the loop.
//
//   forward:          y[n, k, oh, ow]   rows = output pixels, cols = output channels, sum over (c, i, j)
//   backward_input:   dx[n, c, h, w]    rows = input pixels,  cols = input channels,  sum over (k, i, j)
//   backward_weight:  dw[k, c, i, j]    rows = output channels, cols = (c, i, j) and one column of ones
//                     (its sums are the bias gradient db[k]),    sum over pixels
//
// Each product is one kernel with variants that the launcher picks by problem shape
// (cuda_backend.py, conv2d_variants) and tells the kernel through the block size: 256 threads,
// 64x64 tiles (CONV_WIDE) by default; 64 threads, 64x16 tiles (CONV_NARROW) when a group has at
// most 16 output (forward) or input (input gradient) channels, as in LeNet, and for weight
// gradients with at most 16 output channels per group one warp, 16x32 tiles. A group with one
// input channel (LeNet's first layer, depthwise layers) takes the direct forward (CONV_DIRECT, 128
// threads): one thread per output pixel, 8 output channels per pass in registers, the pass's
// filters in shared memory.
//
// No float atomics anywhere: the weight gradient is split over pixel ranges into partial sums
// that conv2d_reduce_weight_partials adds in split order; results are identical run to run.
// Reference: NumpyBackend.conv2d_forward / conv2d_backward (im2col + matmul: backends/numpy/conv.py).
#include "common.cuh"

#define TILE_K 16           // depth of the reduction slice staged in shared memory
#define DIRECT_CHANNELS 8   // output channels conv2d_forward_direct keeps in registers per pass
#define DIRECT_MAX_TAPS 64  // kh * kw up to 8x8 for conv2d_forward_direct (its filters in shared memory)

// The variants, and the block size that selects each. One kernel per product rather than one per
// variant, so that one launch of each product runs every kernel name on cuda-sim
// (tests/test_sim.py); the price is that a kernel has the register count of its largest variant.
#define CONV_WIDE 0    // 256 threads: 64x64 tiles
#define CONV_NARROW 1  // 64 threads: 64x16 tiles (forward, input gradient); 32 threads: 16x32 (weight gradient)
#define CONV_DIRECT 2  // 128 threads: conv2d_forward_direct (forward only)
#define DIRECT_THREADS 128

// The variant this launch runs, from its block size. benchmarks/conv_sass.py defines
// GPUCNN_CONV_VARIANT to compile one variant alone and count its instructions.
__device__ __forceinline__ int launched_variant(unsigned narrow_threads) {
#ifdef GPUCNN_CONV_VARIANT
    return GPUCNN_CONV_VARIANT;
#else
    return blockDim.x == narrow_threads ? CONV_NARROW : blockDim.x == DIRECT_THREADS ? CONV_DIRECT : CONV_WIDE;
#endif
}

struct ConvGeometry {
    index_t batch, channels, height, width, out_channels, out_h, out_w;
    int kh, kw, sh, sw, pad_top, pad_left, dh, dw, groups;

    __device__ index_t group_in() const { return channels / groups; }
    __device__ index_t group_out() const { return out_channels / groups; }
};

// Every kernel takes the geometry as these arguments, in this order.
#define CONV_GEOMETRY_PARAMS                                                                                \
    index_t batch, index_t channels, index_t height, index_t width, index_t out_channels, index_t out_h, \
        index_t out_w, int kh, int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups
#define CONV_GEOMETRY                                                                                   \
    ConvGeometry {                                                                                      \
        batch, channels, height, width, out_channels, out_h, out_w, kh, kw, sh, sw, pad_top, pad_left, dh, \
            dw, groups                                                                                  \
    }

// A position on a mixed-radix axis (hi, mid, lo), such as a filter tap (c, i, j) or a pixel
// (n, oh, ow), moved forward by a fixed step. Each digit is kept multiplied by its unit (i * dh,
// n * C*H*W, ...), so it is ready to use in an address, and a step costs adds and two compares
// for the carries: the divisions happen once, in the constructor.
struct Odometer {
    index_t hi, mid, lo;                 // the digits, each times its unit
    index_t step_hi, step_mid, step_lo;  // the step, in the same form
    index_t mid_unit, hi_unit;           // what a carry adds to mid, to hi
    index_t mid_wrap, lo_wrap;           // radix * unit: a digit that reaches it carries

    __device__ Odometer(index_t first, index_t step, index_t mid_radix, index_t lo_radix, index_t hi_unit_,
                        index_t mid_unit_, index_t lo_unit)
        : hi(first / (mid_radix * lo_radix) * hi_unit_),
          mid(first / lo_radix % mid_radix * mid_unit_),
          lo(first % lo_radix * lo_unit),
          step_hi(step / (mid_radix * lo_radix) * hi_unit_),
          step_mid(step / lo_radix % mid_radix * mid_unit_),
          step_lo(step % lo_radix * lo_unit),
          mid_unit(mid_unit_),
          hi_unit(hi_unit_),
          mid_wrap(mid_radix * mid_unit_),
          lo_wrap(lo_radix * lo_unit) {}

    __device__ __forceinline__ void advance() {
        lo += step_lo;
        const bool carry_lo = lo >= lo_wrap;
        if (carry_lo) lo -= lo_wrap;
        mid += step_mid + (carry_lo ? mid_unit : 0);
        const bool carry_mid = mid >= mid_wrap;
        if (carry_mid) mid -= mid_wrap;
        hi += step_hi + (carry_mid ? hi_unit : 0);
    }
};

// The shared memory of every kernel here: one slice of A and B for any tile shape (BM + BN <= 128),
// or conv2d_forward_direct's filters. One array, so a kernel that holds several variants (and the
// template instances within them) does not need the sum of their shared memory.
#define SCRATCH_ELEMENTS (TILE_K * 128)
__device__ __forceinline__ real* shared_scratch() {
    __shared__ real scratch[SCRATCH_ELEMENTS];
    return scratch;
}

// acc += A[m0 .. m0+BM, k_begin .. k_end) * B[k_begin .. k_end, n0 .. n0+BN). The operands hand
// out streams: a.stream(m, k, step, k_end) yields A(m, k), A(m, k + step), ... and 0 past k_end
// or outside the matrix; b.stream(n, k, step, k_end) yields B(k, n), B(k + step, n), ...
template <int BM, int BN, class OperandA, class OperandB>
__device__ __forceinline__ void gemm_tile(const OperandA& a, const OperandB& b, index_t m0, index_t n0,
                                          index_t k_begin, index_t k_end, real acc[4][4]) {
    constexpr int threads = BM * BN / 16;
    constexpr int a_rows = threads / BM, b_rows = threads / BN;  // slice rows one pass of the block loads
    static_assert(threads % BM == 0 && threads % BN == 0, "every thread keeps one column of each slice");
    static_assert(TILE_K * (BM + BN) <= SCRATCH_ELEMENTS, "the slice fits in shared_scratch");
    real(*tile_a)[BM] = reinterpret_cast<real(*)[BM]>(shared_scratch());  // [TILE_K][BM]
    real(*tile_b)[BN] = reinterpret_cast<real(*)[BN]>(shared_scratch() + TILE_K * BM);  // [TILE_K][BN]
    const int tid = threadIdx.x;
    const int tx = tid % (BM / 4), ty = tid / (BM / 4);
    const int a_col = tid % BM, a_row = tid / BM, b_col = tid % BN, b_row = tid / BN;
    auto next_a = a.stream(m0 + a_col, k_begin + a_row, a_rows, k_end);
    auto next_b = b.stream(n0 + b_col, k_begin + b_row, b_rows, k_end);
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (index_t k0 = k_begin; k0 < k_end; k0 += TILE_K) {
#pragma unroll
        for (int pass = 0; pass < TILE_K / a_rows; ++pass) tile_a[a_row + pass * a_rows][a_col] = next_a();
#pragma unroll
        for (int pass = 0; pass < TILE_K / b_rows; ++pass) tile_b[b_row + pass * b_rows][b_col] = next_b();
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            real av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = tile_a[kk][tx + BM / 4 * i];
            for (int j = 0; j < 4; ++j) bv[j] = tile_b[kk][ty + BN / 4 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
}

// ----------------------------------------------------------------------------- forward
// A(pixel, tap): the im2col matrix of one group, read in place. A stream walks one pixel's row:
// x[n, c, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw] for taps (c, i, j). Input rows are
// kept times the width (h * W), so neither the bounds check nor the address needs a multiply.
struct InputPatches {
    const real* x;
    ConvGeometry g;
    index_t group;

    struct Row {
        const real* x;  // x[n, group's first channel]
        index_t row0, w0, plane, width, tap, step, end;  // row0 = (oh*sh - pad_top) * W, plane = H * W
        Odometer at;                                     // (c * H*W, i * dh*W, j * dw)

        __device__ __forceinline__ real operator()() {
            real v = 0;
            if (tap < end) {
                const index_t row = row0 + at.mid, w = w0 + at.lo;
                if (row >= 0 && row < plane && w >= 0 && w < width) v = x[at.hi + row + w];
            }
            tap += step;
            at.advance();
            return v;
        }
    };

    __device__ Row stream(index_t pixel, index_t tap, index_t step, index_t end) const {
        const index_t plane = g.out_h * g.out_w, taps = g.group_in() * g.kh * g.kw;
        const bool inside = pixel < g.batch * plane;
        const index_t p = inside ? pixel : 0;
        const index_t n = p / plane, oh = p % plane / g.out_w, ow = p % g.out_w;
        return Row{x + (n * g.channels + group * g.group_in()) * g.height * g.width,
                   (oh * g.sh - g.pad_top) * g.width,
                   ow * g.sw - g.pad_left,
                   g.height * g.width,
                   g.width,
                   tap,
                   step,
                   inside ? (end < taps ? end : taps) : 0,
                   Odometer(tap, step, g.kh, g.kw, g.height * g.width, g.dh * g.width, g.dw)};
    }
};

// B(tap, k) = w[group*Kg + k, tap]: a stream walks one filter, contiguous in memory.
struct ForwardWeights {
    const real* w;
    ConvGeometry g;
    index_t group;

    struct Column {
        const real* w;
        index_t tap, step, end;

        __device__ __forceinline__ real operator()() {
            const real v = tap < end ? w[tap] : (real)0;
            tap += step;
            return v;
        }
    };

    __device__ Column stream(index_t k, index_t tap, index_t step, index_t end) const {
        const index_t taps = g.group_in() * g.kh * g.kw;
        const bool inside = k < g.group_out();
        return Column{w + (group * g.group_out() + (inside ? k : 0)) * taps, tap, step,
                      inside ? (end < taps ? end : taps) : 0};
    }
};

// y[n, k, pixel] for the acc of a tile (rows = pixels, columns = this group's output channels)
template <int BM, int BN>
__device__ __forceinline__ void store_forward(const real acc[4][4], const ConvGeometry& g, index_t group,
                                              index_t m0, index_t n0, const real* bias, real* y, int has_bias,
                                              int fuse_relu) {
    const index_t plane = g.out_h * g.out_w, pixels = g.batch * plane, k_count = g.group_out();
    const int tx = threadIdx.x % (BM / 4), ty = threadIdx.x / (BM / 4);
    for (int i = 0; i < 4; ++i) {
        const index_t pixel = m0 + tx + BM / 4 * i;
        if (pixel >= pixels) continue;
        const index_t n = pixel / plane, rest = pixel % plane;
        for (int j = 0; j < 4; ++j) {
            const index_t k = n0 + ty + BN / 4 * j;
            if (k >= k_count) continue;
            const index_t channel = group * k_count + k;
            real v = acc[i][j] + (has_bias ? bias[channel] : (real)0);
            if (fuse_relu && v < (real)0) v = 0;
            y[(n * g.out_channels + channel) * plane + rest] = v;
        }
    }
}

template <int BM, int BN>
__device__ __forceinline__ void conv2d_forward_tile(const real* x, const real* w, const real* bias, real* y,
                                                    const ConvGeometry& g, int has_bias, int fuse_relu) {
    const index_t group = blockIdx.z;
    const index_t m0 = (index_t)blockIdx.x * BM, n0 = (index_t)blockIdx.y * BN;
    real acc[4][4];
    gemm_tile<BM, BN>(InputPatches{x, g, group}, ForwardWeights{w, g, group}, m0, n0, 0,
                      g.group_in() * g.kh * g.kw, acc);
    store_forward<BM, BN>(acc, g, group, m0, n0, bias, y, has_bias, fuse_relu);
}

// One input channel per group (C/G == 1): thread per output pixel, no GEMM. Each pass stages
// DIRECT_CHANNELS filters in shared memory as [tap][k], reads each input tap once and adds it
// into DIRECT_CHANNELS accumulators. Grid (pixel blocks, 1, G); needs kh*kw <= DIRECT_MAX_TAPS.
__device__ __forceinline__ void conv2d_forward_direct(const real* x, const real* w, const real* bias, real* y,
                                                      const ConvGeometry& g, int has_bias, int fuse_relu) {
    static_assert(DIRECT_MAX_TAPS * DIRECT_CHANNELS <= SCRATCH_ELEMENTS, "the filters fit in shared_scratch");
    real(*filters)[DIRECT_CHANNELS] = reinterpret_cast<real(*)[DIRECT_CHANNELS]>(shared_scratch());  // [tap][k]
    const index_t group = blockIdx.z, k_count = g.group_out();
    const int kh = g.kh, kw = g.kw, dh = g.dh, dw = g.dw, taps = kh * kw;
    const index_t height = g.height, width = g.width, plane = g.out_h * g.out_w;
    const index_t pixel = (index_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool inside = pixel < g.batch * plane;
    const index_t p = inside ? pixel : 0;
    const index_t n = p / plane, rest = p % plane;
    const index_t h0 = rest / g.out_w * g.sh - g.pad_top, w0 = rest % g.out_w * g.sw - g.pad_left;
    const real* image = x + (n * g.channels + group) * height * width;  // the group's one input channel
    for (index_t k0 = 0; k0 < k_count; k0 += DIRECT_CHANNELS) {
        __syncthreads();  // the previous pass has finished reading `filters`
        for (int e = threadIdx.x; e < taps * DIRECT_CHANNELS; e += blockDim.x) {
            const int tap = e / DIRECT_CHANNELS, kk = e % DIRECT_CHANNELS;
            filters[tap][kk] = k0 + kk < k_count ? w[(group * k_count + k0 + kk) * taps + tap] : (real)0;
        }
        __syncthreads();
        real acc[DIRECT_CHANNELS];
        for (int kk = 0; kk < DIRECT_CHANNELS; ++kk) acc[kk] = 0;
        for (int i = 0; i < kh; ++i) {
            const index_t h = h0 + i * dh;
            if (!inside || h < 0 || h >= height) continue;
            for (int j = 0; j < kw; ++j) {
                const index_t wc = w0 + j * dw;
                if (wc < 0 || wc >= width) continue;
                const real v = image[h * width + wc];
                for (int kk = 0; kk < DIRECT_CHANNELS; ++kk) acc[kk] += v * filters[i * kw + j][kk];
            }
        }
        if (!inside) continue;
        for (int kk = 0; kk < DIRECT_CHANNELS && k0 + kk < k_count; ++kk) {
            const index_t channel = group * k_count + k0 + kk;
            real v = acc[kk] + (has_bias ? bias[channel] : (real)0);
            if (fuse_relu && v < (real)0) v = 0;
            y[(n * g.out_channels + channel) * plane + rest] = v;
        }
    }
}

// x: (N, C, H, W), w: (K, C/G, KH, KW), bias: (K,) -> y: (N, K, OH, OW). Grid: wide (pixel tiles of
// 64, K/G tiles of 64, G); narrow (pixel tiles of 64, K/G tiles of 16, G); direct (pixel blocks of
// 128, 1, G).
extern "C" __global__ void __launch_bounds__(256, 2) conv2d_forward(
    const real* __restrict__ x, const real* __restrict__ w, const real* __restrict__ bias, real* __restrict__ y,
    CONV_GEOMETRY_PARAMS, int has_bias, int fuse_relu) {
    const ConvGeometry g = CONV_GEOMETRY;
    switch (launched_variant(64)) {
        case CONV_DIRECT: conv2d_forward_direct(x, w, bias, y, g, has_bias, fuse_relu); break;
        case CONV_NARROW: conv2d_forward_tile<64, 16>(x, w, bias, y, g, has_bias, fuse_relu); break;
        default: conv2d_forward_tile<64, 64>(x, w, bias, y, g, has_bias, fuse_relu);
    }
}

// ----------------------------------------------------------------------------- input gradient
// q = a / s when s divides a exactly. With unit_stride (stride 1, the common case, a template
// argument so its loop has no division at all) that is q = a.
template <bool unit_stride>
__device__ __forceinline__ bool divide_exactly(index_t a, int s, index_t* q) {
    if (unit_stride) {
        *q = a;
        return true;
    }
    *q = a / s;
    return *q * s == a;
}

// A(input pixel, (k, i, j)) = dy at the output that tap (i, j) of filter k maps onto this pixel.
template <bool unit_stride>
struct OutputGradAtInput {
    const real* dy;
    ConvGeometry g;
    index_t group;

    struct Row {
        const real* dy;  // dy[n, group's first output channel]
        index_t hp, wp, out_h, out_w, r, step, end;  // hp = h + pad_top, wp = w + pad_left
        int sh, sw;
        Odometer at;  // (k * OH*OW, i * dh, j * dw)

        __device__ __forceinline__ real operator()() {
            real v = 0;
            index_t oh, ow;
            if (r < end && hp >= at.mid && wp >= at.lo && divide_exactly<unit_stride>(hp - at.mid, sh, &oh) &&
                divide_exactly<unit_stride>(wp - at.lo, sw, &ow) && oh < out_h && ow < out_w)
                v = dy[at.hi + oh * out_w + ow];
            r += step;
            at.advance();
            return v;
        }
    };

    __device__ Row stream(index_t pixel, index_t r, index_t step, index_t end) const {
        const index_t plane = g.height * g.width, reduce = g.group_out() * g.kh * g.kw;
        const bool inside = pixel < g.batch * plane;
        const index_t p = inside ? pixel : 0;
        const index_t n = p / plane, h = p % plane / g.width, w = p % g.width;
        return Row{dy + (n * g.out_channels + group * g.group_out()) * g.out_h * g.out_w,
                   h + g.pad_top,
                   w + g.pad_left,
                   g.out_h,
                   g.out_w,
                   r,
                   step,
                   inside ? (end < reduce ? end : reduce) : 0,
                   g.sh,
                   g.sw,
                   Odometer(r, step, g.kh, g.kw, g.out_h * g.out_w, g.dh, g.dw)};
    }
};

// B((k, i, j), c) = w[group*Kg + k, c, i, j]: a stream walks input channel c's taps of every filter.
struct WeightsByInputChannel {
    const real* w;
    ConvGeometry g;
    index_t group;

    struct Column {
        const real* w;  // w[group*Kg, c]
        index_t r, step, end;
        Odometer at;  // (k * Cg*KH*KW, 0, tap): filter k, tap (i, j) of channel c

        __device__ __forceinline__ real operator()() {
            const real v = r < end ? w[at.hi + at.lo] : (real)0;
            r += step;
            at.advance();
            return v;
        }
    };

    __device__ Column stream(index_t c, index_t r, index_t step, index_t end) const {
        const index_t taps = g.kh * g.kw, reduce = g.group_out() * taps;
        const bool inside = c < g.group_in();
        return Column{w + ((group * g.group_out()) * g.group_in() + (inside ? c : 0)) * taps, r, step,
                      inside ? (end < reduce ? end : reduce) : 0,
                      Odometer(r, step, 1, taps, g.group_in() * taps, 1, 1)};
    }
};

template <int BM, int BN>
__device__ __forceinline__ void conv2d_backward_input_tile(const real* dy, const real* w, real* dx,
                                                           const ConvGeometry& g) {
    const index_t group = blockIdx.z;
    const index_t m0 = (index_t)blockIdx.x * BM, n0 = (index_t)blockIdx.y * BN;
    const index_t reduce = g.group_out() * g.kh * g.kw;
    real acc[4][4];
    if (g.sh == 1 && g.sw == 1)  // the same for the whole launch: no divergence
        gemm_tile<BM, BN>(OutputGradAtInput<true>{dy, g, group}, WeightsByInputChannel{w, g, group}, m0, n0, 0,
                          reduce, acc);
    else
        gemm_tile<BM, BN>(OutputGradAtInput<false>{dy, g, group}, WeightsByInputChannel{w, g, group}, m0, n0, 0,
                          reduce, acc);

    const index_t plane = g.height * g.width, pixels = g.batch * plane, c_count = g.group_in();
    const int tx = threadIdx.x % (BM / 4), ty = threadIdx.x / (BM / 4);
    for (int i = 0; i < 4; ++i) {
        const index_t pixel = m0 + tx + BM / 4 * i;
        if (pixel >= pixels) continue;
        const index_t n = pixel / plane, rest = pixel % plane;
        for (int j = 0; j < 4; ++j) {
            const index_t c = n0 + ty + BN / 4 * j;
            if (c < c_count) dx[(n * g.channels + group * c_count + c) * plane + rest] = acc[i][j];
        }
    }
}

// dy: (N, K, OH, OW), w -> dx: (N, C, H, W); grid (input-pixel tiles of 64, C/G tiles of 64 or of
// 16 (narrow: 64 threads), G)
extern "C" __global__ void __launch_bounds__(256, 2) conv2d_backward_input(
    const real* __restrict__ dy, const real* __restrict__ w, real* __restrict__ dx, CONV_GEOMETRY_PARAMS) {
    if (launched_variant(64) == CONV_NARROW)
        conv2d_backward_input_tile<64, 16>(dy, w, dx, CONV_GEOMETRY);
    else
        conv2d_backward_input_tile<64, 64>(dy, w, dx, CONV_GEOMETRY);
}

// ----------------------------------------------------------------------------- weight gradient
// A(k, pixel) = dy[n, group*Kg + k, oh, ow]: a stream walks one output channel over the pixels.
struct OutputGradByChannel {
    const real* dy;
    ConvGeometry g;
    index_t group;

    struct Row {
        const real* dy;  // dy[0, group*Kg + k]
        index_t pixel, step, end;
        Odometer at;  // (n * K*OH*OW, 0, oh*OW + ow)

        __device__ __forceinline__ real operator()() {
            const real v = pixel < end ? dy[at.hi + at.lo] : (real)0;
            pixel += step;
            at.advance();
            return v;
        }
    };

    __device__ Row stream(index_t k, index_t pixel, index_t step, index_t end) const {
        const index_t plane = g.out_h * g.out_w;
        const bool inside = k < g.group_out();
        return Row{dy + (group * g.group_out() + (inside ? k : 0)) * plane, pixel, step, inside ? end : 0,
                   Odometer(pixel, step, 1, plane, g.out_channels * plane, 1, 1)};
    }
};

// B(pixel, tap): the im2col matrix with one more column of ones (tap == C/G*KH*KW), whose products
// with dy are the bias gradient. A stream walks one tap (c, i, j) over the pixels (n, oh, ow); rows
// are kept times the width, as in InputPatches.
struct PatchesByPixel {
    const real* x;
    ConvGeometry g;
    index_t group;

    struct Column {
        const real* x;                                     // x[0, group*Cg + c]
        index_t row_i, jw, plane, width, pixel, step, end;  // row_i = (i*dh - pad_top) * W, jw = j*dw - pad_left
        bool ones;
        Odometer at;  // (n * C*H*W, oh * sh*W, ow * sw)

        __device__ __forceinline__ real operator()() {
            real v = 0;
            if (pixel < end) {
                const index_t row = at.mid + row_i, w = at.lo + jw;
                if (ones)
                    v = 1;
                else if (row >= 0 && row < plane && w >= 0 && w < width)
                    v = x[at.hi + row + w];
            }
            pixel += step;
            at.advance();
            return v;
        }
    };

    __device__ Column stream(index_t tap, index_t pixel, index_t step, index_t end) const {
        const index_t taps = g.group_in() * g.kh * g.kw;
        const bool inside = tap < taps;
        const index_t t = inside ? tap : 0;
        const index_t c = t / (g.kh * g.kw), i = t / g.kw % g.kh, j = t % g.kw;
        return Column{x + (group * g.group_in() + c) * g.height * g.width,
                      (i * g.dh - g.pad_top) * g.width,
                      j * g.dw - g.pad_left,
                      g.height * g.width,
                      g.width,
                      pixel,
                      step,
                      tap <= taps ? end : 0,
                      tap == taps,
                      Odometer(pixel, step, g.out_h, g.out_w, g.channels * g.height * g.width, g.sh * g.width, g.sw)};
    }
};

// partial[split, k, tap] for tap in [0, taps]: sums over this split's pixel range of dy * x, and
// of dy (tap == taps); grid (tap tiles, K/G tiles, G * splits)
template <int BM, int BN>
__device__ __forceinline__ void conv2d_backward_weight_tile(const real* dy, const real* x, real* partial,
                                                            const ConvGeometry& g, index_t pixels_per_split) {
    const index_t group = blockIdx.z % g.groups, split = blockIdx.z / g.groups;
    const index_t pixels = g.batch * g.out_h * g.out_w;
    const index_t begin = split * pixels_per_split;
    const index_t end = begin + pixels_per_split < pixels ? begin + pixels_per_split : pixels;
    const index_t m0 = (index_t)blockIdx.y * BM, n0 = (index_t)blockIdx.x * BN;
    real acc[4][4];
    gemm_tile<BM, BN>(OutputGradByChannel{dy, g, group}, PatchesByPixel{x, g, group}, m0, n0, begin, end, acc);

    const index_t columns = g.group_in() * g.kh * g.kw + 1, k_count = g.group_out();
    const int tx = threadIdx.x % (BM / 4), ty = threadIdx.x / (BM / 4);
    for (int i = 0; i < 4; ++i) {
        const index_t k = m0 + tx + BM / 4 * i;
        if (k >= k_count) continue;
        for (int j = 0; j < 4; ++j) {
            const index_t tap = n0 + ty + BN / 4 * j;
            if (tap < columns) partial[(split * g.out_channels + group * k_count + k) * columns + tap] = acc[i][j];
        }
    }
}

// wide: 64x64 tiles (K/G x taps), 256 threads; narrow: 16x32 tiles of one warp, for groups of at
// most 16 output channels (more, smaller blocks: more splits fill the device)
extern "C" __global__ void __launch_bounds__(256, 2) conv2d_backward_weight(
    const real* __restrict__ dy, const real* __restrict__ x, real* __restrict__ partial, CONV_GEOMETRY_PARAMS,
    index_t pixels_per_split) {
    if (launched_variant(32) == CONV_NARROW)
        conv2d_backward_weight_tile<16, 32>(dy, x, partial, CONV_GEOMETRY, pixels_per_split);
    else
        conv2d_backward_weight_tile<64, 64>(dy, x, partial, CONV_GEOMETRY, pixels_per_split);
}

// dw[k, tap] and db[k] = sums over splits of partial[split, k, tap] (tap == taps: db). One warp per
// output, so that hundreds of splits are not added one after another by a single thread: lane l adds
// splits l, l + 32, ... in order, then warp_sum's fixed butterfly adds the 32 lanes. The order is
// fixed, so the result is the same run to run.
extern "C" __global__ void conv2d_reduce_weight_partials(const real* __restrict__ partial, real* __restrict__ dw,
                                                         real* __restrict__ db, index_t splits,
                                                         index_t out_channels, index_t taps) {
    const index_t count = out_channels * (taps + 1), warps = (index_t)gridDim.x * blockDim.x / 32;
    const int lane = threadIdx.x % 32;
    for (index_t e = ((index_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; e < count; e += warps) {
        real total = 0;
        for (index_t s = lane; s < splits; s += 32) total += partial[s * count + e];
        total = warp_sum(total);  // the loop bounds are the same for the whole warp: every lane is here
        const index_t k = e / (taps + 1), tap = e % (taps + 1);
        if (lane == 0 && tap < taps) dw[k * taps + tap] = total;
        if (lane == 0 && tap == taps) db[k] = total;
    }
}
