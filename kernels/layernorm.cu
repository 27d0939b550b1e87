// layernorm.cu: per-row normalisation, the core of LayerNorm, GroupNorm and InstanceNorm2d.
//
// x is viewed as (rows, cols); each row is normalised by its own mean and biased variance,
// y = (x - mean) * rstd with rstd = 1 / sqrt(var + eps) (eps inside the root, as PyTorch).
// The variance is two-pass (the mean of the centred squares): E[x^2] - E[x]^2 cancels in float32.
// Backward, with xhat = (x - mean) * rstd:
//   dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
// Threads: one block per row (blockDim.x a multiple of 32, at most 1024); the threads stride over
// the row's columns, and each sum is a fixed-order reduction: a warp butterfly, then the warps'
// partials added in warp order by every thread. No atomics, so the results are reproducible.
// Reference: NumpyBackend.row_norm_forward / row_norm_backward (backends/numpy/backend.py).
#include "common.cuh"

// The sum of v over the block, the same total in every thread. `partial` holds one value per warp;
// the barrier in front lets a block call this again with the same array.
__device__ __forceinline__ real block_sum(real v, real* partial) {
    v = warp_sum(v);
    const int warps = blockDim.x / 32;
    __syncthreads();
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    real total = 0;
    for (int w = 0; w < warps; ++w) total += partial[w];
    return total;
}

// x, y: (rows, cols); mean, rstd: (rows,)
extern "C" __global__ void row_norm_forward(const real* __restrict__ x, real* __restrict__ y, real* __restrict__ mean,
                                            real* __restrict__ rstd, index_t cols, real eps) {
    __shared__ real partial[32];
    const index_t row = blockIdx.x;
    const real* xr = x + row * cols;
    real* yr = y + row * cols;
    real total = 0;
    for (index_t k = threadIdx.x; k < cols; k += blockDim.x) total += xr[k];
    const real m = block_sum(total, partial) / (real)cols;
    real squares = 0;
    for (index_t k = threadIdx.x; k < cols; k += blockDim.x) {
        const real d = xr[k] - m;
        squares += d * d;
    }
    const real r = (real)1 / real_sqrt(block_sum(squares, partial) / (real)cols + eps);
    for (index_t k = threadIdx.x; k < cols; k += blockDim.x) yr[k] = (xr[k] - m) * r;
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// dy, x, dx: (rows, cols); mean, rstd: (rows,) from the forward
extern "C" __global__ void row_norm_backward(const real* __restrict__ dy, const real* __restrict__ x,
                                             const real* __restrict__ mean, const real* __restrict__ rstd,
                                             real* __restrict__ dx, index_t cols) {
    __shared__ real partial[32];
    const index_t row = blockIdx.x;
    const real* dyr = dy + row * cols;
    const real* xr = x + row * cols;
    real* dxr = dx + row * cols;
    const real m = mean[row], r = rstd[row];
    real sum_dy = 0, sum_dy_xhat = 0;
    for (index_t k = threadIdx.x; k < cols; k += blockDim.x) {
        sum_dy += dyr[k];
        sum_dy_xhat += dyr[k] * ((xr[k] - m) * r);
    }
    const real mean_dy = block_sum(sum_dy, partial) / (real)cols;
    const real mean_dy_xhat = block_sum(sum_dy_xhat, partial) / (real)cols;
    for (index_t k = threadIdx.x; k < cols; k += blockDim.x) {
        const real xhat = (xr[k] - m) * r;
        dxr[k] = r * (dyr[k] - mean_dy - xhat * mean_dy_xhat);
    }
}
