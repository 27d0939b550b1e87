// linear.cu: the fully connected layer y = x @ W.T + b (optionally ReLU), its input gradient, and its
// weight and bias gradients, as tiled GEMMs: with these a training step runs only our kernels.
//
// Threads: a block of 256 computes a 64x64 tile of the output matrix; thread (ty, tx) of a 16x16
// grid accumulates 4x4 outputs, rows ty + 16*i and columns tx + 16*j, so neighbouring threads
// write neighbouring elements of a row-major output. 16-deep slices of both operands are staged in
// shared memory; each operand is loaded along whichever of its axes is contiguous in memory.
//
//   linear_forward:          y[m, n]  = sum_k x[m, k] * w[n, k]  (+ b[n], then max(., 0))
//   linear_backward_input:   dx[m, k] = sum_n dy[m, n] * w[n, k]
//   linear_backward_weight:  dw[n, k] = sum_m dy[m, n] * x[m, k], and db[n] = sum_m dy[m, n] as
//                            column K of the same product (x read with a column of ones appended)
//
// The backward kernels take the ReLU mask too (Linear -> ReLU): with relu_masked, dy is read as
// dy * (y > 0), y the forward's output, the product relu_backward makes, so the two ops are one.
// Every output is one thread's sum in ascending order of the reduced index: no atomics, no split
// reductions, identical results run to run. The weight gradient's reduction over rows (the batch)
// is not split: one block walks all M rows, fine for classifier heads (M = batch size).
// Reference: NumpyBackend.linear_forward / linear_backward (x @ w.T + b, dy @ w, dy.T @ x, dy.sum(0)).
#include "common.cuh"

#define LINEAR_TILE 64
#define LINEAR_DEPTH 16
#define LINEAR_THREADS 256

// One operand of a tiled product, element (line, d) where d runs along the reduced axis: `line`
// is the output row (for A) or column (for B). depth_fast says d is the contiguous axis in memory.
struct Operand {
    const real* data;
    index_t lines, depth;   // extent: lines x depth (elements outside read 0)
    index_t line_stride, depth_stride;
    int ones_line;          // 1: line == lines reads 1 (the bias column of the weight gradient)
    const real* mask;       // not null: each element is multiplied by (mask > 0), as relu_backward does

    __device__ real operator()(index_t line, index_t d) const {
        if (d >= depth) return 0;
        if (line >= lines) return (ones_line && line == lines) ? (real)1 : (real)0;
        const index_t at = line * line_stride + d * depth_stride;
        return mask ? data[at] * (real)(mask[at] > (real)0) : data[at];
    }
    __device__ bool depth_fast() const { return depth_stride == 1; }
};

// Stage the slice [line0, line0+64) x [d0, d0+16) of an operand into tile[d][line].
__device__ __forceinline__ void load_slice(const Operand& op, index_t line0, index_t d0,
                                           real tile[LINEAR_DEPTH][LINEAR_TILE]) {
    const int tid = threadIdx.x;
    for (int pass = 0; pass < LINEAR_TILE * LINEAR_DEPTH / LINEAR_THREADS; ++pass) {
        const int e = tid + LINEAR_THREADS * pass;
        // consecutive threads read consecutive addresses: along d when it is contiguous, else along lines
        const int line = op.depth_fast() ? e / LINEAR_DEPTH : e % LINEAR_TILE;
        const int d = op.depth_fast() ? e % LINEAR_DEPTH : e / LINEAR_TILE;
        tile[d][line] = op(line0 + line, d0 + d);
    }
}

// acc[i][j] = sum over d of A(row0 + ty + 16i, d) * B(col0 + tx + 16j, d), d ascending.
__device__ __forceinline__ void linear_tile(const Operand& a, const Operand& b, index_t row0, index_t col0,
                                            real acc[4][4]) {
    __shared__ real tile_a[LINEAR_DEPTH][LINEAR_TILE];
    __shared__ real tile_b[LINEAR_DEPTH][LINEAR_TILE];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (index_t d0 = 0; d0 < a.depth; d0 += LINEAR_DEPTH) {
        load_slice(a, row0, d0, tile_a);
        load_slice(b, col0, d0, tile_b);
        __syncthreads();
        for (int dd = 0; dd < LINEAR_DEPTH; ++dd) {
            real av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = tile_a[dd][ty + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = tile_b[dd][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
}

// x: (M, K), w: (N, K), b: (N,) -> y: (M, N); grid (N tiles, M tiles)
extern "C" __global__ void __launch_bounds__(LINEAR_THREADS, 2) linear_forward(
    const real* __restrict__ x, const real* __restrict__ w, const real* __restrict__ bias, real* __restrict__ y,
    index_t rows, index_t in_features, index_t out_features, int has_bias, int fuse_relu) {
    const index_t row0 = (index_t)blockIdx.y * LINEAR_TILE, col0 = (index_t)blockIdx.x * LINEAR_TILE;
    real acc[4][4];
    const Operand a{x, rows, in_features, in_features, 1, 0, nullptr};
    const Operand b{w, out_features, in_features, in_features, 1, 0, nullptr};
    linear_tile(a, b, row0, col0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int j = 0; j < 4; ++j) {
        const index_t n = col0 + tx + 16 * j;
        if (n >= out_features) continue;
        for (int i = 0; i < 4; ++i) {
            const index_t m = row0 + ty + 16 * i;
            if (m >= rows) continue;
            real v = acc[i][j];
            if (has_bias) v += bias[n];
            if (fuse_relu) v = v < (real)0 ? (real)0 : v;  // relu_forward's rule: NaN stays NaN
            y[m * out_features + n] = v;
        }
    }
}

// dy, y: (M, N), w: (N, K) -> dx: (M, K); grid (K tiles, M tiles)
extern "C" __global__ void __launch_bounds__(LINEAR_THREADS, 2) linear_backward_input(
    const real* __restrict__ dy, const real* __restrict__ y, const real* __restrict__ w, real* __restrict__ dx,
    index_t rows, index_t in_features, index_t out_features, int relu_masked) {
    const index_t row0 = (index_t)blockIdx.y * LINEAR_TILE, col0 = (index_t)blockIdx.x * LINEAR_TILE;
    real acc[4][4];
    const Operand a{dy, rows, out_features, out_features, 1, 0, relu_masked ? y : nullptr};
    const Operand b{w, in_features, out_features, 1, in_features, 0, nullptr};
    linear_tile(a, b, row0, col0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int i = 0; i < 4; ++i) {
        const index_t m = row0 + ty + 16 * i;
        if (m >= rows) continue;
        for (int j = 0; j < 4; ++j) {
            const index_t k = col0 + tx + 16 * j;
            if (k < in_features) dx[m * in_features + k] = acc[i][j];
        }
    }
}

// dy, y: (M, N), x: (M, K) -> dw: (N, K), db: (N,); grid (K+1 tiles, N tiles): column K is the bias
extern "C" __global__ void __launch_bounds__(LINEAR_THREADS, 2) linear_backward_weight(
    const real* __restrict__ dy, const real* __restrict__ y, const real* __restrict__ x, real* __restrict__ dw,
    real* __restrict__ db, index_t rows, index_t in_features, index_t out_features, int relu_masked) {
    const index_t row0 = (index_t)blockIdx.y * LINEAR_TILE, col0 = (index_t)blockIdx.x * LINEAR_TILE;
    real acc[4][4];
    const Operand a{dy, out_features, rows, 1, out_features, 0, relu_masked ? y : nullptr};
    const Operand b{x, in_features, rows, 1, in_features, 1, nullptr};
    linear_tile(a, b, row0, col0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int i = 0; i < 4; ++i) {
        const index_t n = row0 + ty + 16 * i;
        if (n >= out_features) continue;
        for (int j = 0; j < 4; ++j) {
            const index_t k = col0 + tx + 16 * j;
            if (k < in_features) dw[n * in_features + k] = acc[i][j];
            else if (k == in_features) db[n] = acc[i][j];
        }
    }
}
