// conv2d.cu: 2-D convolution (cross-correlation) forward, input gradient, weight gradient, bias
// gradient; with stride, zero padding, dilation and groups.
//
// All three products are implicit GEMMs over one shared tiled routine, gemm_tile: a block of 256
// threads computes a 64x64 output tile, staging 16-deep slices of A and B in shared memory;
// thread (ty, tx) of a 16x16 grid accumulates 4x4 outputs (rows tx + 16*i, columns ty + 16*j),
// so neighbouring threads write neighbouring pixels. im2col is never materialised: the A and B
// loaders compute each element's address (or 0 for padding) from the convolution geometry.
//
//   forward:          y[n, k, oh, ow]   rows = output pixels, cols = output channels, sum over (c, i, j)
//   backward_input:   dx[n, c, h, w]    rows = input pixels,  cols = input channels,  sum over (k, i, j)
//   backward_weight:  dw[k, c, i, j]    rows = output channels, cols = (c, i, j),     sum over pixels
//
// No float atomics anywhere: the weight gradient is split over pixel ranges into partial sums
// that conv2d_reduce_partials adds in split order, and the bias gradient is a per-channel block
// reduction in a fixed tree; results are identical run to run.
// Reference: NumpyBackend.conv2d_forward / conv2d_backward (im2col + matmul).
#include "common.cuh"

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define GEMM_THREADS 256

struct ConvGeometry {
    index_t batch, channels, height, width, out_channels, out_h, out_w;
    int kh, kw, sh, sw, pad_top, pad_left, dh, dw, groups;

    __device__ index_t group_in() const { return channels / groups; }
    __device__ index_t group_out() const { return out_channels / groups; }
    __device__ index_t taps() const { return group_in() * kh * kw; }  // the reduction length (c, i, j)
};

// acc += A[m0 .. m0+64, k_begin .. k_end) * B[k_begin .. k_end, n0 .. n0+64); a(m, k) and b(k, n)
// return the element, or 0 outside the matrices.
template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_tile(const LoadA& a, const LoadB& b, index_t m0, index_t n0, index_t k_begin,
                                          index_t k_end, real acc[4][4]) {
    __shared__ real tile_a[TILE_K][TILE_M];
    __shared__ real tile_b[TILE_K][TILE_N];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int load_col = tid % 64, load_row = tid / 64;  // 4 slice rows per pass
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (index_t k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (int pass = 0; pass < TILE_K / 4; ++pass) {
            const int row = load_row + 4 * pass;
            const index_t k = k0 + row;
            const bool inside = k < k_end;
            tile_a[row][load_col] = inside ? a(m0 + load_col, k) : (real)0;
            tile_b[row][load_col] = inside ? b(k, n0 + load_col) : (real)0;
        }
        __syncthreads();
        for (int kk = 0; kk < TILE_K; ++kk) {
            real av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = tile_a[kk][tx + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = tile_b[kk][ty + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
}

// The im2col matrix of one group, read in place: element (pixel, tap) of x.
struct InputPatches {
    const real* x;
    ConvGeometry g;
    index_t group;

    __device__ real operator()(index_t pixel, index_t tap) const {
        const index_t pixels = g.batch * g.out_h * g.out_w;
        if (pixel >= pixels || tap >= g.taps()) return 0;
        const index_t ow = pixel % g.out_w, oh = (pixel / g.out_w) % g.out_h, n = pixel / (g.out_w * g.out_h);
        const int j = (int)(tap % g.kw), i = (int)((tap / g.kw) % g.kh);
        const index_t c = tap / (g.kw * g.kh);
        const index_t h = oh * g.sh - g.pad_top + i * g.dh, w = ow * g.sw - g.pad_left + j * g.dw;
        if (h < 0 || h >= g.height || w < 0 || w >= g.width) return 0;
        return x[((n * g.channels + group * g.group_in() + c) * g.height + h) * g.width + w];
    }
};

// ----------------------------------------------------------------------------- forward
struct ForwardWeights {  // B(tap, k) = w[group*Kg + k, tap]
    const real* w;
    ConvGeometry g;
    index_t group;

    __device__ real operator()(index_t tap, index_t k) const {
        if (tap >= g.taps() || k >= g.group_out()) return 0;
        return w[(group * g.group_out() + k) * g.taps() + tap];
    }
};

// x: (N, C, H, W), w: (K, C/G, KH, KW), bias: (K,) -> y: (N, K, OH, OW); grid (pixel tiles, K/G tiles, G)
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2) conv2d_forward(
    const real* __restrict__ x, const real* __restrict__ w, const real* __restrict__ bias, real* __restrict__ y,
    index_t batch, index_t channels, index_t height, index_t width, index_t out_channels, index_t out_h,
    index_t out_w, int kh, int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups,
    int has_bias, int fuse_relu) {
    const ConvGeometry g{batch, channels, height, width, out_channels, out_h, out_w,
                         kh, kw, sh, sw, pad_top, pad_left, dh, dw, groups};
    const index_t group = blockIdx.z;
    const index_t m0 = (index_t)blockIdx.x * TILE_M, n0 = (index_t)blockIdx.y * TILE_N;
    real acc[4][4];
    gemm_tile(InputPatches{x, g, group}, ForwardWeights{w, g, group}, m0, n0, 0, g.taps(), acc);

    const index_t pixels = batch * out_h * out_w, plane = out_h * out_w;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int j = 0; j < 4; ++j) {
        const index_t k = n0 + ty + 16 * j;
        if (k >= g.group_out()) continue;
        const index_t channel = group * g.group_out() + k;
        const real b = has_bias ? bias[channel] : (real)0;
        for (int i = 0; i < 4; ++i) {
            const index_t pixel = m0 + tx + 16 * i;
            if (pixel >= pixels) continue;
            real v = acc[i][j] + b;
            if (fuse_relu && v < (real)0) v = 0;
            const index_t n = pixel / plane, rest = pixel % plane;
            y[(n * out_channels + channel) * plane + rest] = v;
        }
    }
}

// ----------------------------------------------------------------------------- input gradient
// A(input pixel, (k, i, j)) = dy at the output that tap (i, j) of filter k maps onto this pixel.
struct OutputGradAtInput {
    const real* dy;
    ConvGeometry g;
    index_t group;

    __device__ real operator()(index_t pixel, index_t r) const {
        const index_t pixels = g.batch * g.height * g.width;
        const index_t reduce = g.group_out() * g.kh * g.kw;
        if (pixel >= pixels || r >= reduce) return 0;
        const index_t w = pixel % g.width, h = (pixel / g.width) % g.height, n = pixel / (g.width * g.height);
        const int j = (int)(r % g.kw), i = (int)((r / g.kw) % g.kh);
        const index_t k = r / (g.kw * g.kh);
        const index_t oh_scaled = h + g.pad_top - i * g.dh, ow_scaled = w + g.pad_left - j * g.dw;
        if (oh_scaled < 0 || ow_scaled < 0 || oh_scaled % g.sh || ow_scaled % g.sw) return 0;
        const index_t oh = oh_scaled / g.sh, ow = ow_scaled / g.sw;
        if (oh >= g.out_h || ow >= g.out_w) return 0;
        return dy[((n * g.out_channels + group * g.group_out() + k) * g.out_h + oh) * g.out_w + ow];
    }
};

struct WeightsByInputChannel {  // B((k, i, j), c) = w[group*Kg + k, c, i, j]
    const real* w;
    ConvGeometry g;
    index_t group;

    __device__ real operator()(index_t r, index_t c) const {
        const index_t reduce = g.group_out() * g.kh * g.kw;
        if (r >= reduce || c >= g.group_in()) return 0;
        const index_t tap = r % (g.kh * g.kw), k = r / (g.kh * g.kw);
        return w[((group * g.group_out() + k) * g.group_in() + c) * (g.kh * g.kw) + tap];
    }
};

// dy: (N, K, OH, OW), w -> dx: (N, C, H, W); grid (input-pixel tiles, C/G tiles, G)
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2) conv2d_backward_input(
    const real* __restrict__ dy, const real* __restrict__ w, real* __restrict__ dx, index_t batch,
    index_t channels, index_t height, index_t width, index_t out_channels, index_t out_h, index_t out_w, int kh,
    int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups) {
    const ConvGeometry g{batch, channels, height, width, out_channels, out_h, out_w,
                         kh, kw, sh, sw, pad_top, pad_left, dh, dw, groups};
    const index_t group = blockIdx.z;
    const index_t m0 = (index_t)blockIdx.x * TILE_M, n0 = (index_t)blockIdx.y * TILE_N;
    real acc[4][4];
    gemm_tile(OutputGradAtInput{dy, g, group}, WeightsByInputChannel{w, g, group}, m0, n0, 0,
              g.group_out() * kh * kw, acc);

    const index_t pixels = batch * height * width, plane = height * width;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int j = 0; j < 4; ++j) {
        const index_t c = n0 + ty + 16 * j;
        if (c >= g.group_in()) continue;
        for (int i = 0; i < 4; ++i) {
            const index_t pixel = m0 + tx + 16 * i;
            if (pixel >= pixels) continue;
            const index_t n = pixel / plane, rest = pixel % plane;
            dx[(n * channels + group * g.group_in() + c) * plane + rest] = acc[i][j];
        }
    }
}

// ----------------------------------------------------------------------------- weight gradient
struct OutputGradByChannel {  // A(k, pixel) = dy[n, group*Kg + k, oh, ow]
    const real* dy;
    ConvGeometry g;
    index_t group;

    __device__ real operator()(index_t k, index_t pixel) const {
        const index_t plane = g.out_h * g.out_w;
        if (k >= g.group_out() || pixel >= g.batch * plane) return 0;
        const index_t n = pixel / plane, rest = pixel % plane;
        return dy[(n * g.out_channels + group * g.group_out() + k) * plane + rest];
    }
};

struct PatchesByPixel {  // B(pixel, tap): the im2col matrix, transposed
    InputPatches patches;

    __device__ real operator()(index_t pixel, index_t tap) const { return patches(pixel, tap); }
};

// partial[split, k, tap] = sum over this split's pixel range of dy * x;
// grid (tap tiles, K/G tiles, G * splits)
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2) conv2d_backward_weight(
    const real* __restrict__ dy, const real* __restrict__ x, real* __restrict__ partial, index_t batch,
    index_t channels, index_t height, index_t width, index_t out_channels, index_t out_h, index_t out_w, int kh,
    int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups, index_t pixels_per_split) {
    const ConvGeometry g{batch, channels, height, width, out_channels, out_h, out_w,
                         kh, kw, sh, sw, pad_top, pad_left, dh, dw, groups};
    const index_t group = blockIdx.z % groups, split = blockIdx.z / groups;
    const index_t pixels = batch * out_h * out_w;
    const index_t begin = split * pixels_per_split;
    const index_t end = begin + pixels_per_split < pixels ? begin + pixels_per_split : pixels;
    const index_t m0 = (index_t)blockIdx.y * TILE_M, n0 = (index_t)blockIdx.x * TILE_N;
    real acc[4][4];
    gemm_tile(OutputGradByChannel{dy, g, group}, PatchesByPixel{InputPatches{x, g, group}}, m0, n0, begin, end, acc);

    const index_t taps = g.taps();
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int i = 0; i < 4; ++i) {
        const index_t k = m0 + tx + 16 * i;
        if (k >= g.group_out()) continue;
        for (int j = 0; j < 4; ++j) {
            const index_t tap = n0 + ty + 16 * j;
            if (tap < taps) partial[(split * out_channels + group * g.group_out() + k) * taps + tap] = acc[i][j];
        }
    }
}

// out[i] = sum over splits of partial[split, i], always in split order.
extern "C" __global__ void conv2d_reduce_partials(const real* __restrict__ partial, real* __restrict__ out,
                                                  index_t splits, index_t count) {
    GRID_STRIDE_LOOP(i, count) {
        real total = 0;
        for (index_t s = 0; s < splits; ++s) total += partial[s * count + i];
        out[i] = total;
    }
}

// ----------------------------------------------------------------------------- bias gradient
// db[k] = sum over n and the plane of dy[n, k]; one block per channel: each thread sums a fixed
// stride of elements, then a fixed shared-memory tree adds the 256 partial sums.
extern "C" __global__ void __launch_bounds__(256) conv2d_backward_bias(const real* __restrict__ dy,
                                                                       real* __restrict__ db, index_t batch,
                                                                       index_t out_channels, index_t plane) {
    __shared__ real partial[256];
    const index_t channel = blockIdx.x;
    real total = 0;
    for (index_t e = threadIdx.x; e < batch * plane; e += blockDim.x) {
        const index_t n = e / plane, rest = e % plane;
        total += dy[(n * out_channels + channel) * plane + rest];
    }
    partial[threadIdx.x] = total;
    __syncthreads();
    for (int width = 128; width > 0; width >>= 1) {
        if ((int)threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[channel] = partial[0];
}
